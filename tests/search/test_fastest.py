"""latency_sensitivity + allocate: a MACs budget spent where the latency table says milliseconds are."""
import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.measure import count_macs
from secateurs.measure.staircase import PARAMETER_FREE_KINDS, LatencyTable, layer_specs
from secateurs.search import allocate, latency_sensitivity


class FakeTable(LatencyTable):
    """Deterministic 'measurements': a conv costs its MACs, a BatchNorm or depthwise conv 50x more per element,
    an activation 1x per element."""

    def __init__(self, batch_size: int = 1):
        super().__init__(batch_size, persist=False, progress=False)

    def _measure(self, specs):
        out = []
        for s in specs:
            pixels = s.input_shape[0] * (s.input_shape[2] * s.input_shape[3] if s.kind != "Linear" else 1)
            if s.kind == "Linear":
                out.append(1e-6 * s.in_ch * s.out_ch * pixels)
            elif s.kind in PARAMETER_FREE_KINDS:
                out.append(1e-6 * s.out_ch * pixels)
            elif s.per_channel:
                out.append(50e-6 * s.out_ch * pixels)
            else:
                out.append(1e-6 * s.in_ch * s.out_ch * pixels * s.kernel[0] * s.kernel[1] / s.groups)
        return out


def _net() -> nn.Module:
    """Two groups of 16: ``a`` sets a 1x1 conv, a BatchNorm and a depthwise conv (memory-bound); ``b`` sets
    only dense 3x3 convs, with more MACs per channel."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),  # b: 0
                         nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16), nn.ReLU(),  # a: 2, 3
                         nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(),  # a: 5
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),  # b: 7
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, 4)).eval()


X = torch.randn(1, 3, 8, 8)


def test_predict_sums_the_timed_layers_batchnorm_included():
    table = FakeTable()
    model = _net()
    expected = sum(table._measure(list(layer_specs(model, X).values())))
    assert table.predict(model, X) == pytest.approx(expected)
    assert table.measured == 8  # four convs, the BatchNorm, the Linear, the pool, four ReLUs of one shape (once)
    small = sc.apply(model, sc.plan(model, X, 0.5))
    assert table.predict(small, X) < expected


def test_allocation_at_a_macs_budget_prunes_the_memory_bound_group_first():
    model = _net()
    graph = sc.trace(model, X)
    bn_group = next(g.id for g in graph.groups if any(n.startswith("3.") for n, _, _ in g.tensors))
    sens = latency_sensitivity(model, X, FakeTable(), ratios=(0.5, 0.9), quiet=True)
    assert sens.baseline < 0  # minus milliseconds: higher is faster
    ratios = allocate(model, X, sens, {"macs": 0.8}, graph=graph)
    assert ratios[bn_group] > 0 and ratios[bn_group] == max(ratios.values())
    other = [r for g, r in ratios.items() if g != bn_group]
    assert all(r < ratios[bn_group] for r in other)
    pruned = sc.apply(model, sc.plan(model, X, 0.0, group_ratios=ratios, graph=graph))
    assert count_macs(pruned, X).total <= 0.8 * count_macs(model, X).total


def test_table_of_another_batch_times_at_its_own_batch():
    table = FakeTable(batch_size=8)
    assert table.predict(_net(), X) == pytest.approx(8 * FakeTable().predict(_net(), X))


def test_bad_table():
    with pytest.raises(TypeError, match="latency_sensitivity: table must be a LatencyTable"):
        latency_sensitivity(_net(), X, table={"ms": 1.0})
