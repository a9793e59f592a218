"""Front.pick: interleaved re-measurement of the finalists, the overlap rule, unmet constraints, loading, HTML."""
from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.measure import Latency
from secateurs.search import Candidate
from secateurs.search import front as front_module


class Sleeper(nn.Module):
    """A fake model whose forward takes ``seconds``: its true latency, whatever the sweep recorded."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.linear = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.linear(x)


def _cand(name: str, quality: float, macs: int, median_ms: float) -> Candidate:
    lat = {"median_ms": median_ms, "p10_ms": median_ms * 0.9, "p90_ms": median_ms * 1.1, "runs": 5,
           "batch_size": 1, "threads": 1}
    return Candidate(name, {"granularity": "channel"}, quality, {"params": macs, "macs": macs, "size_bytes": macs,
                                                                   "latency": lat})


def _front(cands: list[Candidate], seconds: dict[str, float]) -> sc.Front:
    models = {name: Sleeper(s) for name, s in seconds.items()}
    return sc.Front(nn.Linear(2, 2), torch.zeros(1, 2), cands, models=models)


def test_pick_re_times_the_finalists_and_trusts_the_new_numbers() -> None:
    # the sweep saw "lucky" as fastest (a quiet moment); timed side by side it is the slowest
    cands = [_cand("dense", 0.9, 100, 30.0), _cand("lucky", 0.9, 50, 1.0), _cand("steady", 0.9, 60, 5.0),
             _cand("bad", 0.5, 10, 0.5)]
    front = _front(cands, {"dense": 0.02, "lucky": 0.03, "steady": 0.002, "bad": 0.0})
    best = front.pick(max_drop=0.01, rounds=5)
    assert best.candidate.name == "steady" and best.met
    assert set(best.remeasured) == {"dense", "lucky", "steady"}  # "bad" fails the constraint: not a finalist
    assert best.remeasured["lucky"]["median_ms"] > best.remeasured["steady"]["p90_ms"]
    assert all(r["runs"] == 5 and r["threads"] == 1 for r in best.remeasured.values())
    assert "picked steady" in best.summary() and "within 0.01 of dense quality, lowest latency" in best.summary()
    assert front.pick(max_drop=0.01, rounds=5) is best  # cached: no second timing
    assert front.pick(max_drop=0.01, rounds=0).candidate.name == "lucky"  # rounds=0 trusts the sweep


def test_overlapping_spreads_prefer_fewer_macs_and_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    cands = [_cand("dense", 0.9, 100, 30.0), _cand("fast", 0.9, 60, 4.0), _cand("lean", 0.9, 40, 4.2)]
    timed = {"dense": Latency(30, 28, 33, 5, 1, 1), "fast": Latency(4.0, 3.0, 5.0, 5, 1, 1),
             "lean": Latency(4.2, 3.5, 5.5, 5, 1, 1)}
    monkeypatch.setattr(front_module, "compare_latency", lambda models, *a, **k: {n: timed[n] for n in models})
    best = _front(cands, {n: 0.0 for n in timed}).pick()
    assert best.candidate.name == "lean"
    assert "lean" in best.note and "fast" in best.note and "overlap" in best.note and "fewer MACs" in best.note
    assert best.note in best.summary()
    timed["lean"] = Latency(6.0, 5.5, 6.5, 5, 1, 1)  # apart: the lower median wins, no note
    best = _front(cands, {n: 0.0 for n in timed}).pick()
    assert best.candidate.name == "fast" and best.note == ""


def test_when_nothing_meets_the_constraint_the_pick_says_so_and_names_the_closest() -> None:
    cands = [_cand("dense", 0.9, 100, 3.0), _cand("a", 0.7, 50, 2.0), _cand("b", 0.85, 60, 2.5)]
    best = _front(cands, {"dense": 0.0, "a": 0.0, "b": 0.0}).pick(max_drop=0.01, rounds=0)
    assert best.candidate.name == "dense" and not best.met and best.closest.name == "b"
    assert best.summary().startswith("no pruned candidate met the rule (within 0.01 of dense quality, lowest "
                                     "latency): kept dense (quality 0.9000); closest: b (quality 0.8500)")


def test_front_renders_an_escaped_html_table_with_its_legend() -> None:
    cands = [_cand("dense", 0.9, 100, 3.0), _cand("<b>x</b>", 0.8, 50, 2.0)]
    out = _front(cands, {})._repr_html_()
    assert out.startswith("<table") and "&lt;b&gt;x&lt;/b&gt;" in out and "<b>x</b>" not in out
    assert "Pareto front" in out and out.count("<tr>") == 3
    png = base64.b64decode(out.split('<img src="data:image/png;base64,')[1].split('"')[0])
    assert png.startswith(b"\x89PNG")  # the front's plot, inline
    assert "* on the Pareto front" in _front(cands, {}).table()


def test_every_candidate_folder_loads_and_the_pick_says_how(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.randn(4, 8)
    front = sc.explore(model, x, "fidelity", methods=["channel/l2/local", "unstructured/l1/global"],
                       ratios=[0.5], workdir=tmp_path, runs=3, quiet=True)
    for cand in front.candidates:
        loaded = sc.load(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)), front.directory_of(cand))
        rebuilt, _ = front.rebuild(cand)
        torch.testing.assert_close(loaded(x), rebuilt(x))
    best = front.pick(max_drop=1.0, minimize="macs")
    code = best.load_code("make()")
    assert code.splitlines() == ["import secateurs as sc", f"model = sc.load(make(), {best.directory!r})"]
    paths = front.report(tmp_path / "report.html", max_drop=1.0, minimize="macs", factory="make()")
    html, md = Path(paths["html"]).read_text(), Path(paths["md"]).read_text()
    assert "sc.load(make()," in html and "    model = sc.load(make()," in md and best.summary()[:30] in md
