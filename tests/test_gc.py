"""Tracing and surgery run with the cyclic garbage collector paused, and leave it as they found it."""
import copy
import gc

import pytest
import torch
from torch import nn

import secateurs as sc


class Spy(nn.Module):
    """Records whether the collector was enabled when it ran forward and when it was copied."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)
        self.seen: list[tuple[str, bool]] = []
        self.fail = False

    def forward(self, x):
        self.seen.append(("forward", gc.isenabled()))
        if self.fail:
            raise RuntimeError("broken on purpose")
        return self.head(torch.relu(self.conv(x)))

    def __deepcopy__(self, memo):
        self.seen.append(("copy", gc.isenabled()))
        new = Spy.__new__(Spy)
        memo[id(self)] = new
        new.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()})
        return new


@pytest.fixture
def gc_on():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_trace_pauses_and_restores_the_collector(gc_on):
    m, x = Spy(), torch.randn(1, 3, 8, 8)
    sc.trace(m, x)
    assert m.seen == [("forward", False)]
    assert gc.isenabled()


def test_apply_copies_with_the_collector_paused(gc_on):
    m, x = Spy(), torch.randn(1, 3, 8, 8)
    p = sc.plan(m, x, ratio=0.5, verify=False)
    m.seen.clear()
    small = sc.apply(m, p)
    assert ("copy", False) in m.seen and all(not on for _, on in m.seen)
    assert small.conv.out_channels == 4
    assert gc.isenabled()


def test_collector_restored_after_a_failing_trace(gc_on):
    m, x = Spy(), torch.randn(1, 3, 8, 8)
    m.fail = True
    with pytest.raises(ValueError, match="broken on purpose"):
        sc.trace(m, x)
    assert gc.isenabled()


def test_a_collector_the_user_disabled_stays_disabled(gc_on):
    gc.disable()
    sc.prune(Spy(), torch.randn(1, 3, 8, 8), ratio=0.5)
    assert not gc.isenabled()


def test_plan_scores_paused_and_verifies_with_the_collector_as_the_user_left_it(gc_on, monkeypatch):
    from secateurs.criteria.magnitude import L2

    scored = []
    real = L2.groups
    monkeypatch.setattr(L2, "groups", lambda self, *a: scored.append(gc.isenabled()) or real(self, *a))
    small = sc.prune(Spy(), torch.randn(1, 3, 8, 8), ratio=0.5)
    assert scored == [False]
    assert small.seen[-1] == ("forward", True)  # verification's forward, on the pruned copy it returns
    assert gc.isenabled()
