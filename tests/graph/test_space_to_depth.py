"""pixel_shuffle / pixel_unshuffle and fold / unfold move positions into channels and back: pruning
either maps each kept channel to its r x r (or kernel) block, or keeps the dims and says why."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import secateurs as sc


def _rows(small: torch.Tensor, dense: torch.Tensor) -> list[int]:
    """Which rows of ``dense`` the pruned ``small`` kept (rows, or biases, are distinct random values)."""
    return [next(i for i in range(len(dense)) if torch.equal(dense[i], r)) for r in small]


def _pruned(model: nn.Module, x: torch.Tensor, verify: bool):
    """Plan at 0.3, apply; the pruned model runs, keeps the output shape and equals the masked one."""
    p = sc.plan(model, x, 0.3, verify=verify)
    small, masked = sc.apply(model, p), sc.apply(model, p, mode="mask")
    with torch.no_grad():
        y = small(x)
        assert y.shape == model(x).shape
        torch.testing.assert_close(y, masked(x), atol=1e-5, rtol=1e-4)
    return p, small


class Unshuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(32, 16, 1), nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.b(F.pixel_unshuffle(self.a(x), 2)).mean((2, 3)))


class Shuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.up, self.b = nn.Conv2d(3, 32, 3, padding=1), nn.PixelShuffle(2), nn.Conv2d(8, 16, 3)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.b(self.up(self.a(x))).mean((2, 3)))


@pytest.mark.parametrize("verify", [True, False])
def test_each_channel_before_pixel_unshuffle_owns_its_r_by_r_channels_after(verify):
    m = Unshuffle().eval()
    _, small = _pruned(m, torch.randn(1, 3, 8, 8), verify)
    kept = _rows(small.a.weight, m.a.weight)
    assert len(kept) < 8
    cols = [4 * c + k for c in kept for k in range(4)]
    assert torch.equal(small.b.weight, m.b.weight[_rows(small.b.bias, m.b.bias)][:, cols])


@pytest.mark.parametrize("verify", [True, False])
def test_pixel_shuffle_removes_whole_r_by_r_blocks_of_its_input_channels(verify):
    m = Shuffle().eval()
    _, small = _pruned(m, torch.randn(1, 3, 8, 8), verify)
    dense_b = m.b.weight[_rows(small.b.bias, m.b.bias)]
    kept = _rows(small.b.weight.transpose(0, 1), dense_b.transpose(0, 1))
    assert len(kept) < 8
    assert _rows(small.a.weight, m.a.weight) == [4 * c + k for c in kept for k in range(4)]


class LinearRows(nn.Module):
    """The rearranged spatial dims are a Linear's features: their positions are channels too."""

    def __init__(self, op: str):
        super().__init__()
        self.op = op
        self.a = nn.Linear(8, 8)
        self.b = nn.Conv2d(12 if op == "unshuffle" else 3, 6, 1)
        self.head = nn.Linear(6 * (16 if op == "unshuffle" else 256), 5)

    def forward(self, x):
        h = self.a(x)
        h = F.pixel_unshuffle(h, 2) if self.op == "unshuffle" else F.pixel_shuffle(h, 2)
        return self.head(self.b(h).flatten(1))


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("op", ["unshuffle", "shuffle"])
def test_positions_rearranged_by_pixel_shuffles_shrink_in_whole_r_blocks(op, verify):
    m = LinearRows(op).eval()
    x = torch.randn(1, 3 if op == "unshuffle" else 12, 8, 8)
    _, small = _pruned(m, x, verify)
    if op == "unshuffle":  # column w*2 + i becomes column w at channel factor i: pairs go together
        kept = _rows(small.a.weight, m.a.weight)
        assert len(kept) < 8 and all(kept[i] // 2 == kept[i + 1] // 2 for i in range(0, len(kept), 2))
    else:  # column w becomes columns w*2 and w*2 + 1: any column may go
        assert small.a.out_features < 8


class Windows(nn.Module):
    """im2col over a Linear's features (x of (B, C, H, W)), or col2im of a Linear's window positions."""

    def __init__(self, op: str):
        super().__init__()
        self.op = op
        if op == "unfold":
            self.a, self.unfold, self.b = nn.Linear(8, 8), nn.Unfold(2, stride=2), nn.Linear(12, 10)
            self.head = nn.Linear(10 * 16, 5)
        else:
            self.a, self.fold, self.b = nn.Linear(4, 16), nn.Fold((8, 8), 2, stride=2), nn.Conv2d(2, 6, 1)
            self.head = nn.Linear(6 * 64, 5)

    def forward(self, x):
        if self.op == "unfold":
            return self.head(self.b(self.unfold(self.a(x)).transpose(1, 2)).flatten(1))
        return self.head(self.b(self.fold(self.a(x))).flatten(1))


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("op", ["unfold", "fold"])
def test_positions_that_fold_or_unfold_windows_over_are_kept_and_reported(op, verify):
    m = Windows(op).eval()
    x = torch.randn(1, 3, 8, 8) if op == "unfold" else torch.randn(1, 8, 4)
    p, small = _pruned(m, x, verify)
    assert small.a.out_features == m.a.out_features
    assert any("a.weight" in s.get("tensors", []) and op in s["reason"] for s in p.skipped)
    assert small.b.weight.shape[0] < m.b.weight.shape[0]  # channels after the windows still shrink


class RoundTrip(nn.Module):
    """conv -> unfold (C x k channels) -> Linear -> fold -> conv."""

    def __init__(self):
        super().__init__()
        self.a, self.mix, self.b = nn.Conv2d(3, 8, 1), nn.Linear(32, 32), nn.Conv2d(8, 6, 1)
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        h = F.unfold(self.a(x), 2, stride=2).transpose(1, 2)
        h = F.fold(self.mix(h).transpose(1, 2), (8, 8), 2, stride=2)
        return self.head(self.b(h).mean((2, 3)))


@pytest.mark.parametrize("verify", [True, False])
def test_unfold_then_fold_prune_channels_in_whole_kernel_blocks(verify):
    m = RoundTrip().eval()
    _, small = _pruned(m, torch.randn(1, 3, 8, 8), verify)
    kept = _rows(small.a.weight, m.a.weight)
    assert len(kept) < 8
    assert small.mix.in_features == 4 * len(kept)
