"""explore with round_to="auto": every channel candidate snaps its widths, and its plan says so."""
import torch

import secateurs as sc
from secateurs.examples import models


class _Steps16:
    """A fake latency table: time is a staircase of 16 channels per side (deterministic)."""

    key = "fake-16"

    def measure_all(self, specs, desc=""):
        return [-(-s.out_ch // 16) + -(-s.in_ch // 16) for s in specs]


def test_explore_snaps_candidates(tmp_path):
    model = models.mnist1d_cnn(channels=28, seed=0).eval()
    x = torch.randn(4, 1, 40)
    front = sc.explore(model, x, "fidelity", methods=["channel/l2/local"], ratios=[0.5], latency=False, quiet=True,
                       workdir=tmp_path, plan_kwargs={"round_to": "auto", "latency_table": _Steps16()})
    cand = next(c for c in front.candidates if c.name == "channel/l2/local@0.5")
    widths = cand.extra["widths"]
    assert widths and all(w in (16, 28) for name, w in widths.items() if name.startswith("conv"))
    assert 16 in widths.values()  # asked 14 of 28: 14 and 16 cost the same, 16 is kept


def test_a_sweep_holds_a_method_and_its_latency_aware_twins(tmp_path):
    model = models.mnist1d_cnn(channels=28, seed=0).eval()
    x = torch.randn(4, 1, 40)
    methods = ["channel/l2/local", "channel/l2/local+auto", "channel/l2/local+round8"]
    kw = dict(methods=methods, ratios=[0.5], latency=False, quiet=True, workdir=tmp_path,
              plan_kwargs={"latency_table": _Steps16()})
    front = sc.explore(model, x, "fidelity", **kw)
    by = {c.name: c for c in front.candidates}
    assert set(by) == {"dense", "channel/l2/local@0.5", "channel/l2/local+auto@0.5", "channel/l2/local+round8@0.5"}
    convs = {name: {w for k, w in c.extra["widths"].items() if k.startswith("conv")} for name, c in by.items()}
    assert convs["channel/l2/local@0.5"] == {14}  # importance alone: half of 28
    assert convs["channel/l2/local+auto@0.5"] == {16}  # 14 and 16 cost the same on the staircase: 16 kept
    assert convs["channel/l2/local+round8@0.5"] == {16}
    assert by["channel/l2/local+auto@0.5"].method["round_to"] == "auto"
    snaps = by["channel/l2/local+auto@0.5"].extra["latency_snaps"]
    assert snaps["table"] == "fake-16" and len(snaps["groups"]) == 5
    assert all(g["asked"] == 14 and g["kept"] == 16 and set(g["curve"]) >= {"14", "16"}
               for g in snaps["groups"].values())
    assert not any("latency_snaps" in c.extra for n, c in by.items() if "+auto" not in n)
    plain = sc.Plan.from_json((tmp_path / by["channel/l2/local@0.5"].plan_path).read_text())
    assert plain.settings["round_to"] == 1  # the twin's round_to did not leak into the plain method
    again = sc.explore(model, x, "fidelity", **kw)  # resumes: the snaps were written with the results
    assert {c.name: c.extra.get("latency_snaps") for c in again.candidates} == \
        {c.name: c.extra.get("latency_snaps") for c in front.candidates}
    data = again.report_data(again.pick(max_drop=1.0, minimize="macs", rounds=0))
    assert data["staircase_of"] == "channel/l2/local+auto@0.5" and len(data["staircase"]) == 5


def test_auto_twin_times_with_the_sweeps_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path / "cache"))
    model = models.mnist1d_cnn(channels=20, seed=0).eval()
    x = torch.randn(4, 1, 40)
    front = sc.explore(model, x, "fidelity", methods=["channel/l2/local+auto"], ratios=[0.6], latency=False,
                       quiet=True, threads=1)
    cand = next(c for c in front.candidates if c.name == "channel/l2/local+auto@0.6")
    snaps = cand.extra["latency_snaps"]
    assert "-t1-b4-" in snaps["table"]  # this machine's table at the sweep's thread count and batch size
    for g in snaps["groups"].values():  # asked 8 of 20: kept the asked width or a fast one near it
        assert g["asked"] == 8 and 7 <= g["kept"] <= 10 and all(float(t) > 0 for t in g["curve"].values())
    assert list((tmp_path / "cache" / "latency").glob("*.json"))
