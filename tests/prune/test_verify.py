"""Verification: a plan is applied to a copy and run; groups whose removal breaks the forward are left out.

``prune`` returns the very model verification ran the whole plan on (no second surgery) unless the
verification forwards changed a tensor of it; either way the result is what ``apply`` makes.
"""
import torch
from torch import nn

import secateurs as sc
from secateurs.prune.planner import carried_plan
from tests.helpers import outputs

X = torch.randn(1, 3, 12, 12)


class Picky(nn.Module):
    """Five convs in a row; the third's width is checked in code the tracer cannot see (a Python
    comparison), so pruning it breaks the forward and only verification can tell."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 8, 3, padding=1)]
                                   + [nn.Conv2d(8, 8, 3, padding=1) for _ in range(4)])
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        for i, conv in enumerate(self.convs):
            x = torch.relu(conv(x))
            if i == 2 and x.shape[1] != 8:
                raise RuntimeError(f"convs.2 must give 8 channels, got {x.shape[1]}")
        return self.head(x.mean((2, 3)))


class Counting(nn.Module):
    """Counts its forwards in a buffer: a forward changes its state."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3))
        self.head = nn.Linear(8, 4)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        self.calls.add_(1)
        return self.head(self.body(x).mean((2, 3)))


def _group_of(graph, tensor):
    return next(g.id for g in graph.groups if (tensor, 0, "out") in g.tensors)


def test_verification_finds_exactly_the_group_that_breaks_the_forward():
    torch.manual_seed(0)
    model = Picky().eval()
    graph = sc.trace(model, X)
    broken = _group_of(graph, "convs.2.weight")
    p = sc.plan(model, X, ratio=0.5, graph=graph)
    skipped = [s for s in p.skipped if "id" in s]
    assert [s["id"] for s in skipped] == [broken]
    assert skipped[0]["reason"].startswith("forward fails once removed: RuntimeError: convs.2 must give 8 channels")
    kept = {g["id"]: g["size"] - len(g["remove"]) for g in p.groups}
    assert kept[broken] == 8 and sum(k == 4 for k in kept.values()) == 4  # the other four convs lose half
    small = sc.prune(model, X, ratio=0.5)
    assert small.convs[2].out_channels == 8 and small.convs[1].out_channels == 4
    assert outputs(small, X)[0].shape == (1, 4)


def test_unverified_plan_keeps_the_broken_group():
    model = Picky().eval()
    p = sc.plan(model, X, ratio=0.5, verify=False)
    assert not [s for s in p.skipped if "id" in s]
    try:
        outputs(sc.apply(model, p), X)
    except RuntimeError as exc:
        assert "convs.2 must give 8 channels" in str(exc)
    else:
        raise AssertionError("the unverified plan should break the forward")


def test_prune_returns_what_apply_makes_with_the_model_modes_and_input_untouched():
    torch.manual_seed(0)
    model = Picky().train()
    model.convs[0].eval()  # mixed modes come back as they were
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = sc.prune(model, X, ratio=0.5)
    p = carried_plan(small)
    again = sc.apply(model, p)
    assert [m.training for m in small.modules()] == [m.training for m in model.modules()]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert small.state_dict().keys() == again.state_dict().keys()
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in small.state_dict().items())
    small.eval(), again.eval()
    assert torch.equal(outputs(small, X)[0], outputs(again, X)[0])


def test_a_forward_that_changes_state_does_not_leak_into_the_result():
    model = Counting().eval()
    small = sc.prune(model, X, ratio=0.5)
    assert small.body[0].out_channels == 4
    assert int(small.calls) == int(model.calls)  # verification's forwards ran on a copy of their own


def test_prune_runs_the_surgery_once_when_verification_passes(monkeypatch):
    from secateurs.prune import planner

    calls = []
    for name in ("apply", "apply_derived"):  # verification's surgery, then prune's own if it needs one
        real = getattr(planner, name)
        monkeypatch.setattr(planner, name, lambda *a, real=real, **k: calls.append(1) or real(*a, **k))
    small = sc.prune(Counting().eval(), X, ratio=0.5)  # state changed by the forward: applied again
    assert len(calls) == 2 and small.body[0].out_channels == 4
    calls.clear()
    small = sc.prune(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)), X, ratio=0.5)
    assert len(calls) == 1 and small[0].out_channels == 4
