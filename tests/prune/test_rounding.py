"""rounding=: how ratio x size becomes a count; small head groups that floor to zero are named in a warning."""
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
from secateurs.prune.planner import ROUNDINGS, RoundingWarning, removed_count
from tests.prune.nets import SelfAttention


class TwoStages(nn.Module):
    """A 2-head block then an 8-head block (Swin's first and third stages, in miniature)."""

    def __init__(self):
        super().__init__()
        self.a = SelfAttention(16, heads=2)
        self.up = nn.Linear(16, 32)
        self.b = SelfAttention(32, heads=8)

    def forward(self, x):
        return self.b(self.up(self.a(x)))


X = torch.randn(1, 5, 16)


def _removed(p):
    return {g["size"]: len(g["remove"]) for g in p.groups if g["kind"] == "head"}


def test_small_head_group_floors_to_zero_with_a_warning_naming_it():
    with pytest.warns(RoundingWarning, match=r"1 head group.*group \d+ \(a\.qkv\): 2 heads, 0\.5 asked, 2 kept"
                                             r".*rounding='up'.*scope='global'"):
        p = sc.plan(TwoStages().eval(), X, 0.25, granularity="head")
    assert _removed(p) == {2: 0, 8: 2}


def test_rounding_up_removes_at_least_one_head_and_stays_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RoundingWarning)
        p = sc.plan(TwoStages().eval(), X, 0.25, granularity="head", rounding="up")
    assert _removed(p) == {2: 1, 8: 2} and p.settings["rounding"] == "up"
    small = sc.apply(TwoStages().eval(), p)
    assert small.a.heads == 1 and small.b.heads == 6
    with torch.no_grad():
        assert small(X).shape == (1, 5, 32)


def test_nearest_and_global_budget():
    p = sc.plan(TwoStages().eval(), X, 0.3, granularity="head", rounding="nearest")  # 0.6 -> 1, 2.4 -> 2
    assert _removed(p) == {2: 1, 8: 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RoundingWarning)  # one budget over all heads: nothing floors per group
        p = sc.plan(TwoStages().eval(), X, 0.25, granularity="head", scope="global")
    assert sum(_removed(p).values()) == 2  # 25% of 10 heads, rounded down


def test_group_ratios_and_channel_groups_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RoundingWarning)
        sc.plan(TwoStages().eval(), X, 0.25)  # channels: the warning is about heads
        g = sc.trace(TwoStages().eval(), X)
        two = next(gr.id for gr in g.groups if gr.kind == "head" and gr.size == 2)
        sc.plan(TwoStages().eval(), X, 0.0, granularity="head", group_ratios={two: 0.25}, graph=g)


def test_bad_rounding():
    with pytest.raises(ValueError, match=r"rounding must be one of \['down', 'nearest', 'up'\], got 'ceil'"):
        sc.plan(TwoStages(), X, 0.3, granularity="head", rounding="ceil")


@given(st.floats(0, 0.99), st.integers(1, 300))
def test_counts_are_ordered_and_within_one_of_the_exact_share(ratio, size):
    down, near, up = (removed_count(ratio, size, r) for r in ROUNDINGS)
    exact = ratio * size
    assert 0 <= down <= near <= up <= size and up - down <= 1
    assert exact - 1 < down <= exact + 1e-6 and exact - 1e-6 <= up < exact + 1
