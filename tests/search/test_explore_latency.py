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
