"""round_to="auto": kept widths snap to the fast points of a latency table, recorded in the plan."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
from secateurs.prune.snap import MARGIN, choose


class StairTable:
    """A fake table: a layer's time is a staircase of steps of 16 channels on each side (deterministic)."""

    key = "fake-stairs"

    def __init__(self, fast_at_or_below: int | None = None):
        self.fast = fast_at_or_below
        self.asked: list = []

    def step(self, w: int) -> float:
        if self.fast is not None:
            return 1.0 if w <= self.fast else 2.0
        return math.ceil(w / 16) * 16 / 100

    def measure_all(self, specs, desc=""):
        self.asked += specs
        return [self.step(s.out_ch) + self.step(s.in_ch) for s in specs]


def _net(width: int = 60) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                         nn.Linear(8, 4)).eval()


X = torch.randn(2, 3, 8, 8)


def test_choose_picks_fastest_at_or_above_and_keeps_capacity_on_ties():
    assert choose({30: 0.32, 32: 0.32, 40: 0.48}, 30) == 32
    assert choose({30: 0.40, 32: 0.30, 40: 0.30}, 30) == 32  # 40 is past 30 * 1.25
    assert choose({30: 0.30, 32: 0.40}, 30) == 30


def test_choose_goes_below_only_down_a_step_of_the_staircase():
    assert choose({24: 0.2, 30: 0.4, 32: 0.4}, 30, below=0.25) == 24
    assert choose({24: 0.32, 30: 0.4}, 30, below=0.25) == 30  # 20% faster for 20% fewer channels: a slope
    assert choose({24: 0.4 * 0.8 * (1 - MARGIN / 2), 30: 0.4}, 30, below=0.25) == 30  # within noise of the slope
    assert choose({16: 0.1, 24: 0.2, 30: 0.4}, 30, below=0.5) == 24  # the largest step down
    assert choose({24: 0.1, 30: 0.4}, 30, below=0.1) == 30  # 24 is further below than allowed


def test_choose_needs_the_asked_width():
    with pytest.raises(ValueError, match="asked width 30"):
        choose({32: 1.0}, 30)


def test_fake_staircase_snaps_up_to_a_step_and_model_runs():
    model = _net(60)
    table = StairTable()
    p = sc.plan(model, X, 0.5, round_to="auto", latency_table=table)
    g = next(g for g in p.groups if g["size"] == 60)
    assert g["size"] - len(g["remove"]) == 32  # asked 30; 30 and 32 cost the same, 32 keeps more
    rec = p.settings["latency"]["groups"][str(g["id"])]
    assert rec == {"asked": 30, "kept": 32, "ms_asked": rec["ms_asked"], "ms_kept": rec["ms_asked"], "gain_ms": 0.0,
                   "layer": "0", "curve": rec["curve"]}
    assert {"30", "32"} <= set(rec["curve"]) and rec["curve"]["30"] == rec["ms_asked"]  # the staircase, for the report
    assert p.settings["round_to"] == "auto" and p.settings["latency"]["table"] == "fake-stairs"
    timed = {(s.kind, s.in_ch, s.out_ch) for s in table.asked}
    assert ("Conv2d", 3, 32) in timed and ("Conv2d", 32, 8) in timed  # both layers the group sets
    pruned = sc.apply(model, p)
    assert pruned[0].out_channels == 32 and pruned(X).shape == (2, 4)
    assert model[0].out_channels == 60  # the user's model is untouched
    assert sc.plan(model, X, 0.5, round_to="auto", latency_table=StairTable()).to_json() == p.to_json()


def test_fake_table_faster_below_snaps_down_and_records_gain():
    model = _net(66)  # asks 33 kept; 32 is within 12.5% below and twice as fast
    table = StairTable(fast_at_or_below=32)
    p = sc.plan(model, X, 0.5, round_to="auto", latency_table=table)
    g = next(g for g in p.groups if g["size"] == 66)
    assert g["size"] - len(g["remove"]) == 32
    # the group's cost: conv 0's output, conv 3's input, and the BatchNorm (its "in" and "out" both move)
    assert ("BatchNorm2d", 32, 32) in {(s.kind, s.in_ch, s.out_ch) for s in table.asked}
    rec = p.settings["latency"]["groups"][str(g["id"])]
    assert (rec["asked"], rec["kept"]) == (33, 32) and rec["gain_ms"] == pytest.approx(4.0)
    assert p.settings["latency"]["gain_ms"] == pytest.approx(4.0)
    assert sc.apply(model, p)(X).shape == (2, 4)
    shown = str(p)
    assert f"group {g['id']} (channel): 66 -> 32 (asked 33, snapped: +4.000 ms)" in shown
    assert "ms_asked" not in shown  # the per-group records are not dumped with the settings


def test_removed_channels_are_the_lowest_scored():
    model = _net(60)
    auto = sc.plan(model, X, 0.5, round_to="auto", latency_table=StairTable())
    fixed = sc.plan(model, X, 28 / 60, round_to=1)  # keeps 32 as well
    gid = next(g["id"] for g in auto.groups if g["size"] == 60)
    assert auto.removals()[gid] == fixed.removals()[gid]


def test_real_table_plan_roundtrips_validates_and_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path))
    model = _net(60)
    p = sc.plan(model, X, 0.5, round_to="auto")
    recs = p.settings["latency"]["groups"]
    assert recs and all(r["ms_kept"] <= r["ms_asked"] * (1 + MARGIN) + 1e-9 for r in recs.values())
    assert all(r["kept"] == r["asked"] or r["kept"] % 8 == 0 or r["kept"] == 60 for r in recs.values())
    again = sc.Plan.from_json(p.to_json())
    again.validate(model)
    assert sc.apply(model, again)(X).shape == (2, 4)
    assert list((tmp_path / "latency").glob("*.json"))  # the table was cached


def test_global_scope_snaps_too():
    p = sc.plan(_net(60), X, 0.5, scope="global", round_to="auto", latency_table=StairTable())
    for gid, r in p.settings["latency"]["groups"].items():
        g = next(g for g in p.groups if str(g["id"]) == gid)
        assert g["size"] - len(g["remove"]) == r["kept"]


def test_bad_round_to_and_table_arguments():
    model = _net()
    with pytest.raises(ValueError, match="positive integer or 'auto'"):
        sc.plan(model, X, 0.5, round_to="fast")
    with pytest.raises(ValueError, match="granularity 'unstructured'"):
        sc.plan(model, X, 0.5, granularity="unstructured", round_to="auto")
    with pytest.raises(ValueError, match="latency_table is used by round_to='auto'"):
        sc.plan(model, X, 0.5, latency_table=StairTable())
    for bad in (3, "cpu", {"Conv2d": 1.0}):
        with pytest.raises(TypeError, match=f"latency_table must be a LatencyTable .* got {type(bad).__name__}"):
            sc.plan(model, X, 0.5, round_to="auto", latency_table=bad)


@given(st.integers(8, 512), st.lists(st.floats(0.01, 10.0), min_size=40, max_size=40))
def test_choose_stays_in_the_window_and_never_picks_slower_above(asked, times):
    widths = sorted({asked} | {w for w in range(8, 700, 8) if asked * 0.75 <= w <= asked * 1.25})
    curve = {w: times[i % len(times)] for i, w in enumerate(widths)}
    kept = choose(curve, asked)
    assert kept in curve and asked * (1 - 0.125) <= kept <= asked * 1.25
    fastest_up = min(t for w, t in curve.items() if asked <= w <= asked * 1.25)
    if kept >= asked:
        assert curve[kept] <= fastest_up * (1 + MARGIN)
    else:
        assert curve[kept] < fastest_up * (1 + MARGIN) * kept / asked
