"""Sweeps over mixture-of-experts models: whole experts as an explore method."""
import secateurs as sc
from tests.moe_models import mixtral, tokens


def test_explore_prunes_whole_experts(one_thread):
    model, x = mixtral(), tokens()
    front = sc.explore(model, x, "fidelity", methods=["expert/l2/local"], ratios=[0.5], latency=False, quiet=True)
    rows = {c.name: c for c in front.candidates}
    dense, experts = rows["dense"], rows["expert/l2/local@0.5"]
    # two of four experts gone in both layers: their 3 * 64 * 96 weights and router rows, each
    assert dense.measurement["params"] - experts.measurement["params"] == 2 * 2 * (3 * 64 * 96 + 64)
    assert 0.9 < experts.quality <= 1.0
