"""measure() and Measurement: the parts agree with the single measurements; the table reads well."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from secateurs.measure import (
    Latency,
    Measurement,
    count_macs,
    count_params,
    effective_parameters,
    measure,
    size_bytes,
)
from secateurs.measure.sparsity import weight_bytes


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 5)
    )


def test_measure_agrees_with_the_single_measurements() -> None:
    model, x = _net(), torch.randn(2, 3, 4, 4)
    result = measure(model, x, latency=False)
    macs = count_macs(model, x)
    weights = weight_bytes(effective_parameters(model).items())
    assert result == Measurement(
        params=count_params(model),
        macs=macs.total,
        macs_by_kind=macs.by_kind,
        size_bytes=size_bytes(model),
        latency=None,
        nonzero_params=weights.nonzero,
        dense_bytes=weights.dense_bytes,
        compressed_bytes=weights.compressed_bytes,
    )


def test_measure_with_latency() -> None:
    result = measure(_net(), torch.randn(2, 3, 4, 4), warmup=0, runs=3, threads=1)
    assert result.latency is not None
    assert (result.latency.runs, result.latency.batch_size, result.latency.threads) == (3, 2, 1)


def test_to_dict_is_json_serialisable() -> None:
    result = measure(_net(), torch.randn(1, 3, 4, 4), warmup=0, runs=2)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["params"] == result.params and data["macs_by_kind"] == result.macs_by_kind
    assert data["latency"]["runs"] == 2
    assert measure(_net(), torch.randn(1, 3, 4, 4), latency=False).to_dict()["latency"] is None


def test_str_uses_human_units_and_aligns_columns() -> None:
    result = Measurement(
        params=11_689_512,
        macs=1_822_000_000,
        macs_by_kind={"conv": 1_813_561_344, "linear": 512_000, "matmul": 0, "attention": 0, "norm": 7_926_656},
        size_bytes=46_827_520,
        latency=Latency(median_ms=12.34, p10_ms=11.91, p90_ms=13.04, runs=20, batch_size=1, threads=1),
    )
    lines = str(result).splitlines()
    assert lines == [
        "params    11.69M",
        "MACs      1.82 GMACs",
        "  conv    1.81 GMACs",
        "  linear  512.00 KMACs",
        "  norm    7.93 MMACs",
        "size      46.8 MB",
        "latency   median 12.3 ms (p10 11.9, p90 13.0), batch 1, 1 thread",
    ]


def test_str_small_numbers_and_plural_threads() -> None:
    result = Measurement(
        params=842, macs=900, macs_by_kind={"linear": 900}, size_bytes=512,
        latency=Latency(median_ms=0.25, p10_ms=0.2, p90_ms=0.3, runs=5, batch_size=None, threads=4),
    )
    assert str(result).splitlines() == [
        "params    842",
        "MACs      900 MACs",
        "  linear  900 MACs",
        "size      512 B",
        "latency   median 0.250 ms (p10 0.200, p90 0.300), batch ?, 4 threads",
    ]


def test_model_is_left_unchanged() -> None:
    model = _net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure(model, torch.randn(2, 3, 4, 4), warmup=1, runs=2)
    assert all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_failing_forward_shows_the_original_error() -> None:
    model = _net().train()
    with pytest.raises(ValueError, match=r"forward of model failed on example_inputs: RuntimeError: .*channels"):
        measure(model, torch.randn(1, 5, 4, 4))
    assert model.training


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"runs": 0}, "runs must be an integer >= 1"),
        ({"warmup": -2}, "warmup must be an integer >= 0"),
        ({"threads": 0}, "threads must be an integer >= 1"),
        ({"latency": "yes"}, "latency must be True or False"),
    ],
)
def test_rejects_bad_arguments_before_running(kwargs: dict, message: str) -> None:
    calls = []
    model = nn.Identity()
    model.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=message):
        measure(model, torch.zeros(1), **kwargs)
    assert calls == []


def test_rejects_bad_types() -> None:
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        measure("resnet18", torch.zeros(1))
    with pytest.raises(TypeError, match="example_inputs must be"):
        measure(nn.Identity(), None)
