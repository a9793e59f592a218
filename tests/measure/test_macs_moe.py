"""MACs of mixture-of-experts layers: the same count whichever way transformers runs the experts."""
import secateurs as sc
from secateurs.measure.macs import count_macs
from tests.moe_models import mixtral, tokens


def test_grouped_mm_experts_count_like_batched_and_eager(one_thread):
    x = tokens()
    counts = {}
    for impl in ("grouped_mm", "batched_mm", "eager"):
        model = mixtral()
        model.set_experts_implementation(impl)
        counts[impl] = count_macs(model, x)
    tokens_times_k, hidden, inner = 9 * 2, 64, 96
    experts = 2 * tokens_times_k * (hidden * 2 * inner + inner * hidden)  # two layers, top-2 of 4 experts
    assert counts["grouped_mm"].by_kind["matmul"] == counts["batched_mm"].by_kind["matmul"] == experts
    assert counts["grouped_mm"].total == counts["batched_mm"].total == counts["eager"].total


def test_pruned_experts_count_fewer_macs(one_thread):
    model, x = mixtral(), tokens()
    small = sc.prune(model, x, 0.5, granularity="expert")  # top-2 of 2 experts: each token still runs 2
    slim = sc.prune(model, x, 0.3)
    assert count_macs(small, x).by_kind["matmul"] == count_macs(model, x).by_kind["matmul"]
    assert count_macs(slim, x).by_kind["matmul"] == 2 * 18 * (48 * 2 * 72 + 72 * 48)
