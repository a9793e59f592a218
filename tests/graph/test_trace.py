import torch
from torch import nn
from torchvision.models import resnet18

import secateurs as sc
from tests.prune.nets import SelfAttention as Heads


def test_resnet18_groups_couple_residual_stream():
    g = sc.trace(resnet18(), torch.randn(1, 3, 64, 64))
    stream = [grp for grp in g.groups if any(t == "conv1.weight" for t, _, _ in grp.tensors)]
    assert len(stream) == 1
    names = {t for t, _, _ in stream[0].tensors}
    # stem conv, its BN, both residual blocks of layer1 and the consumers in layer2 move together
    assert {"conv1.weight", "bn1.weight", "layer1.0.conv2.weight", "layer1.1.conv2.weight",
            "layer2.0.conv1.weight", "layer2.0.downsample.0.weight"} <= names
    assert "fc.weight" not in {t for grp in g.groups for t, d, _ in grp.tensors if d == 0}
    assert len(g.groups) == 12 and "12 prunable groups" in str(g)


def test_trace_leaves_model_untouched():
    m = resnet18().train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    sc.trace(m, torch.randn(2, 3, 32, 32))
    assert m.training
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_attention_heads_are_found_through_reshapes():
    g = sc.trace(Heads(), torch.randn(2, 5, 32))
    heads = [grp for grp in g.groups if grp.kind == "head"]
    assert len(heads) == 1 and heads[0].size == 4
    assert {t for t, _, _ in heads[0].tensors} >= {"qkv.weight", "proj.weight"}


class Opaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3)
        self.b = nn.Conv2d(8, 8, 1)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.a(x)
        x = torch.fft.fft(x).real  # no channel rule: reported and left alone
        return self.c(self.b(x))


def test_unsupported_op_is_reported_and_left_unpruned():
    g = sc.trace(Opaque(), torch.randn(1, 3, 8, 8))
    assert any("fft" in u.reason for u in g.unsupported)
    assert "Left unpruned" in str(g)
    prunable = {t for grp in g.groups for t, _, _ in grp.tensors}
    assert "a.weight" not in prunable and "b.weight" in prunable


def test_grouped_conv_groups_follow():
    m = nn.Sequential(nn.Conv2d(4, 16, 1), nn.Conv2d(16, 16, 3, groups=4, padding=1), nn.Conv2d(16, 8, 1))
    x = torch.randn(1, 4, 6, 6)
    p = sc.plan(m, x, ratio=0.5)
    small = sc.apply(m, p)
    assert small(x).shape == (1, 8, 6, 6)
    assert small[1].out_channels < 16 and small[1].in_channels % small[1].groups == 0


def test_size_that_surgery_recomputes_does_not_pin_its_channels():
    from transformers.pytorch_utils import Conv1D  # GPT-2's layer: its forward reshapes with self.nf

    m = nn.Sequential(Conv1D(24, 8), nn.ReLU(), Conv1D(4, 24))
    g = sc.trace(m, torch.randn(2, 3, 8))
    assert [grp.size for grp in g.groups] == [24] and not g.syncs
    small = sc.prune(m, torch.randn(2, 3, 8), ratio=0.5)
    assert small[0].nf == 12 and small(torch.randn(2, 3, 8)).shape == (2, 3, 4)


class _StateWrites(nn.Module):
    """Writes the last position into one slot of a state per call (``state[:, :, slot] = h[:, -1]``, RWKV)."""

    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        state = h.new_zeros(h.shape[0], h.shape[2], 2)
        state[:, :, 0] = h[:, -1]
        state[:, :, 1] = h[:, 0]
        return self.down(h + state[:, :, 0][:, None] * state[:, :, 1][:, None])


def test_assignment_through_an_int_index_ties_the_dims_it_keeps():
    model, x = _StateWrites().eval(), torch.randn(1, 5, 8)
    g = sc.trace(model, x)
    assert [(grp.size, sorted(grp.tensors)) for grp in g.groups] == [
        (16, [("down.weight", 1, "in"), ("up.bias", 0, "out"), ("up.weight", 0, "out")])]
    plan = sc.plan(model, x, ratio=0.5)
    with torch.no_grad():
        torch.testing.assert_close(sc.apply(model, plan)(x), sc.apply(model, plan, mode="mask")(x))
