"""explore / Front: real measurements, resumable workdirs, Pareto invariants and picks."""
import json
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
from secateurs.search import Candidate, pareto


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5)).eval()


X = torch.randn(2, 3, 16, 16)
KW = dict(methods=["channel/l2/local"], ratios=[0.25, 0.5], runs=3, quiet=True)


def test_explore_measures_every_candidate_and_picks_under_constraint(tmp_path):
    calls = []

    def finetune(model, steps):
        calls.append(steps)
        return model

    front = sc.explore(small_cnn(), X, "fidelity", finetune=finetune, budget=7, workdir=tmp_path, **KW)
    names = [c.name for c in front.candidates]
    assert names == ["dense", "channel/l2/local@0.25", "channel/l2/local@0.5"]
    assert calls == [7, 7]
    for c in front.candidates:
        assert c.measurement["latency"]["runs"] == 3 and c.measurement["latency"]["threads"] == 1
    macs = [c.measurement["macs"] for c in front.candidates]
    assert macs[0] > macs[1] > macs[2]
    assert front.baseline.quality == pytest.approx(1.0)
    best = front.pick(max_drop=1.0, minimize="macs")
    assert best.candidate.name == "channel/l2/local@0.5" and best.plan is not None
    assert best.model(X).shape == (2, 5)
    assert front.pick(max_drop=0.0, minimize="macs").candidate.name == "dense"
    assert "channel/l2/local@0.5" in front.table()


def test_workdir_resumes_and_survives_a_corrupt_line(tmp_path):
    sc.explore(small_cnn(), X, "fidelity", workdir=tmp_path, **dict(KW, ratios=[0.25]))
    results = tmp_path / "results.jsonl"
    assert len(results.read_text().splitlines()) == 2
    with open(results, "a") as f:
        f.write('{"name": "channel/l2/local@0.5", "quality": 0.9, "meas')  # a run killed mid-write
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        front = sc.explore(small_cnn(), X, "fidelity", workdir=tmp_path, **KW)
    assert any("corrupt or truncated" in str(w.message) for w in caught)
    lines = [json.loads(line) for line in results.read_text().splitlines()[:2]]
    assert [r["name"] for r in lines] == ["dense", "channel/l2/local@0.25"]  # untouched, not redone
    assert [c.name for c in front.candidates] == ["dense", "channel/l2/local@0.25", "channel/l2/local@0.5"]


def test_rebuilt_from_disk_equals_in_memory(tmp_path):
    on_disk = sc.explore(small_cnn(), X, "fidelity", workdir=tmp_path, **KW)
    in_memory = sc.explore(small_cnn(), X, "fidelity", **KW)
    a, _ = on_disk.rebuild(on_disk.candidates[2])
    b, _ = in_memory.rebuild(in_memory.candidates[2])
    torch.testing.assert_close(a(X), b(X))


def test_bad_arguments():
    with pytest.raises(ValueError, match="evaluate must be a callable"):
        sc.explore(small_cnn(), X, "accuracy")
    with pytest.raises(ValueError, match="methods entries must be"):
        sc.explore(small_cnn(), X, "fidelity", methods=["l2"])
    with pytest.raises(ValueError, match=r"ratios\[\d\] must be a number in \(0, 1\)"):
        sc.explore(small_cnn(), X, "fidelity", ratios=[1.2])
    with pytest.raises(ValueError, match="budget must be"):
        sc.explore(small_cnn(), X, "fidelity", budget=-1)
    front = sc.explore(small_cnn(), X, "fidelity", **dict(KW, ratios=[0.25]))
    with pytest.raises(ValueError, match="minimize must be one of"):
        front.pick(minimize="joules")


def _cand(name, q, macs):
    return Candidate(name, {}, q, {"params": macs, "macs": macs, "size_bytes": macs, "latency": None})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.integers(1, 100)), min_size=1, max_size=15))
def test_pareto_front_is_exactly_the_non_dominated_set(points):
    cands = [_cand(str(i), q, c) for i, (q, c) in enumerate(points)]
    front = {c.name for c in pareto(cands, "macs")}

    def dominated(a):
        return any((b.quality >= a.quality and b.cost("macs") <= a.cost("macs"))
                   and (b.quality > a.quality or b.cost("macs") < a.cost("macs")) for b in cands)

    for c in cands:
        if c.name in front:
            assert not dominated(c)
    # every dominated or duplicate point is off the front, and each non-dominated value pair is on it
    assert {(c.quality, c.cost("macs")) for c in cands if not dominated(c)} == \
           {(c.quality, c.cost("macs")) for c in cands if c.name in front}
