"""Sizes the code compares (``assert embed_dim == self.embed_dim``, FSMT, Longformer, CPM-Ant) stay equal:
an attribute a plan may set follows the width it is compared with; any other pins it."""
import torch
from torch import nn

import secateurs as sc


class Checked(nn.Module):
    """A residual block whose forward asserts its input width equals an attribute."""

    def __init__(self, attr: str, d: int = 16):
        super().__init__()
        self.attr = attr
        setattr(self, attr, d)
        self.inp = nn.Linear(4, d)
        self.mid = nn.Linear(d, d)
        self.out = nn.Linear(d, 3)

    def forward(self, x):
        h = self.inp(x)
        if h.size(-1) != getattr(self, self.attr):
            raise AssertionError(f"width != self.{self.attr}")
        return self.out(h + torch.relu(self.mid(h)))


def _residual(g):
    return next(grp for grp in g.groups if any(t == "inp.weight" and d == 0 for t, d, _ in grp.tensors))


def test_an_attribute_compared_with_a_width_follows_it():
    torch.manual_seed(0)
    model, x = Checked("embed_dim").eval(), torch.randn(2, 5, 4)
    p = sc.plan(model, x, 0.5)
    g = sc.trace(model, x)
    res = _residual(g)
    assert next(gr for gr in p.groups if gr["id"] == res.id)["remove"]
    assert any(s["attr"] == "embed_dim" for s in p.syncs)
    small = sc.apply(model, p)
    with torch.no_grad():
        torch.testing.assert_close(small(x), sc.apply(model, p, mode="mask")(x), atol=1e-5, rtol=1e-4)
    assert small.embed_dim == small.inp.out_features < 16 and model.embed_dim == 16


def test_a_width_compared_with_an_attribute_no_plan_sets_is_pinned():
    model, x = Checked("checked_width").eval(), torch.randn(2, 5, 4)
    g = sc.trace(model, x)
    assert not any(t == "inp.weight" and d == 0 for grp in g.groups for t, d, _ in grp.tensors)
    assert any("compared with another" in u.reason for u in g.unsupported), str(g)
    p = sc.plan(model, x, 0.5, graph=g)
    with torch.no_grad():
        assert sc.apply(model, p)(x).shape == model(x).shape
