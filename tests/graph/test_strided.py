"""as_strided windows over rows (Longformer's sliding chunks) pass the channels through when every
stride is a step read from the input itself; anything else pins, with the reason."""
import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.graph.sizes import Size, Stride
from secateurs.graph.space import Space


class Windows(nn.Module):
    """Overlapping windows of 2w rows, w apart, over a projection: ``stride(1) // 2`` of a (chunks, 2w) view."""

    def __init__(self, d: int = 12, w: int = 2, strides: str = "read", transposed: bool = False):
        super().__init__()
        self.w, self.strides, self.transposed = w, strides, transposed
        self.inp = nn.Linear(4, d)
        self.out = nn.Linear(d, 3)

    def forward(self, x):  # (B, N, 4), N a multiple of 2w
        h = self.inp(x)
        if self.transposed:  # (N, B, d) -> (B, N, d) as a view: rows are not contiguous
            h = h.transpose(0, 1)
        b, n, c = h.shape
        if self.transposed:
            h = h.unflatten(1, (n // (2 * self.w), 2 * self.w))
        else:
            h = h.view(b, n // (2 * self.w), 2 * self.w, c)
        size = list(h.size())
        size[1] = size[1] * 2 - 1
        if self.strides == "read":
            stride = list(h.stride())
            stride[1] = stride[1] // 2
        elif self.strides == "half_rows":  # windows half a row apart: channels mix with the next row's
            stride = list(h.stride())
            stride[1] = stride[2] // 2
        else:  # written in code: right for this width only
            stride = [n * c, self.w * c, c, 1]
        chunks = h.as_strided(size=size, stride=stride)
        return self.out(torch.relu(chunks)).mean((1, 2))


def _check(model, x):
    """Plan channels at 0.5; surgery equals masks and keeps the shape. Returns (graph, plan)."""
    g = sc.trace(model, x)
    p = sc.plan(model, x, 0.5, graph=g)
    small, masked = sc.apply(model, p), sc.apply(model, p, mode="mask")
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), atol=1e-5, rtol=1e-4)
    return g, p


def _inp_pruned(g, p) -> bool:
    ids = {grp.id for grp in g.groups if any(t == "inp.weight" and d == 0 for t, d, _ in grp.tensors)}
    return any(gr["id"] in ids and gr["remove"] for gr in p.groups)


@pytest.mark.parametrize("transposed", [False, True])
def test_windows_with_strides_read_from_the_input_prune_the_width(transposed):
    torch.manual_seed(0)
    model = Windows(transposed=transposed).eval()
    x = torch.randn(1, 8, 4) if not transposed else torch.randn(8, 1, 4)
    g, p = _check(model, x)
    assert not any("as_strided" in u.reason and "positions" not in u.reason for u in g.unsupported), str(g)
    assert _inp_pruned(g, p)


@pytest.mark.parametrize("strides, why", [("code", "is not a step along its input's dims"),
                                          ("half_rows", "is not a step along its input's dims")])
def test_windows_with_strides_fixed_in_code_pin_the_width(strides, why):
    torch.manual_seed(0)
    model = Windows(strides=strides).eval()
    x = torch.randn(1, 8, 4)
    g, p = _check(model, x)
    assert any(why in u.reason for u in g.unsupported), str(g)
    assert not _inp_pruned(g, p)


def test_stride_arithmetic_keeps_only_steps_that_scale_with_the_tensor():
    t = torch.zeros(2, 6, 5)
    s = t.stride(1)  # outside a trace: a plain int
    assert type(s) is int
    st = Stride(30, t, 0)
    assert isinstance(st // 3, Stride) and (st // 3).den == 3 and isinstance(2 * st, Stride)
    assert type(st // 7) is int  # not exact
    fixed, synced = Size(3, attr=("m", "window")), Size(3, attr=("m", "num_heads"))
    assert isinstance(fixed * st, Stride) and type(synced * st) is int  # a plan may change num_heads
    space = Space(4)
    assert (st * Size(4, space)).spaces == (space,)
