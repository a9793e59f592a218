"""measure_latency: structure and invariants only (never wall-clock thresholds)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.measure import DEFAULT_THREADS, Latency, measure_latency


class _Recorder(nn.Module):
    """Counts forwards and records the train flag, inference mode and thread count each one saw."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.seen: list[tuple[bool, bool, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.training, torch.is_inference_mode_enabled(), torch.get_num_threads()))
        return self.linear(x)


def test_structure_and_order() -> None:
    latency = measure_latency(nn.Linear(4, 2), torch.randn(3, 4), warmup=1, runs=7)
    assert isinstance(latency, Latency)
    assert latency.runs == 7 and latency.batch_size == 3
    assert 0 < latency.p10_ms <= latency.median_ms <= latency.p90_ms
    assert latency.threads == DEFAULT_THREADS


def test_calls_forward_warmup_plus_runs_times_in_eval_and_inference_mode() -> None:
    model = _Recorder().train()
    measure_latency(model, torch.randn(2, 4), warmup=2, runs=3)
    assert len(model.seen) == 5
    assert all(not training and inference for training, inference, _ in model.seen)
    assert model.training and model.linear.training


def test_threads_pinned_during_run_and_restored() -> None:
    before = torch.get_num_threads()
    model = _Recorder()
    latency = measure_latency(model, torch.randn(1, 4), warmup=0, runs=2, threads=1)
    assert latency.threads == 1
    assert {threads for _, _, threads in model.seen} == {1}
    assert torch.get_num_threads() == before


def test_threads_restored_when_forward_fails() -> None:
    before = torch.get_num_threads()
    with pytest.raises(ValueError, match="forward of model failed.*shapes cannot be multiplied"):
        measure_latency(nn.Linear(4, 2), torch.randn(1, 5), threads=1)
    assert torch.get_num_threads() == before


def test_single_run_has_equal_percentiles() -> None:
    latency = measure_latency(nn.Identity(), torch.zeros(1), warmup=0, runs=1)
    assert latency.p10_ms == latency.median_ms == latency.p90_ms


def test_batch_size_unknown_without_tensor_inputs() -> None:
    class Constant(nn.Module):
        def forward(self) -> torch.Tensor:
            return torch.zeros(1)

    assert measure_latency(Constant(), {}, warmup=0, runs=1).batch_size is None


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"runs": 0}, "runs"),
        ({"runs": 2.0}, "runs"),
        ({"runs": True}, "runs"),
        ({"warmup": -1}, "warmup"),
        ({"threads": 0}, "threads"),
    ],
)
def test_rejects_bad_counts(kwargs: dict, name: str) -> None:
    model = _Recorder()
    with pytest.raises(ValueError, match=rf"^{name} must be an integer >= \d, got "):
        measure_latency(model, torch.randn(1, 4), **kwargs)
    assert model.seen == []
