"""Wall-clock latency of a model's forward pass: warm-up, repeated timed runs, median and spread."""
from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import chain
from typing import Callable

import torch
from torch import nn

from secateurs._inputs import ExampleInputs, batch_size_of, check_inputs, check_module, iter_tensors, run_forward
from secateurs.measure._common import check_int, eval_mode


@dataclass(frozen=True)
class Latency:
    """Forward latency in milliseconds over ``runs`` timed runs, at ``batch_size`` with ``threads`` CPU threads."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    batch_size: int | None
    threads: int


def measure_latency(
    model: nn.Module,
    example_inputs: ExampleInputs,
    *,
    warmup: int = 5,
    runs: int = 20,
    threads: int | None = None,
) -> Latency:
    """Time eval-mode forwards under ``torch.inference_mode`` after ``warmup`` untimed ones.

    ``threads`` pins ``torch.set_num_threads`` for the measurement only; the model's train/eval mode is restored.
    """
    check_module(model)
    check_inputs(example_inputs)
    check_latency_args(warmup, runs, threads)
    sync = _synchronizer(model, example_inputs)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        used_threads = torch.get_num_threads()
        times_ms = []
        with eval_mode(model), torch.inference_mode():
            for _ in range(warmup):
                run_forward(model, example_inputs)
            sync()
            for _ in range(runs):
                start = time.perf_counter()
                run_forward(model, example_inputs)
                sync()
                times_ms.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(previous_threads)
    times_ms.sort()
    return Latency(
        median_ms=_percentile(times_ms, 0.5),
        p10_ms=_percentile(times_ms, 0.1),
        p90_ms=_percentile(times_ms, 0.9),
        runs=runs,
        batch_size=batch_size_of(example_inputs),
        threads=used_threads,
    )


def check_latency_args(warmup: int, runs: int, threads: int | None) -> None:
    """Raise a ValueError naming ``warmup``, ``runs`` or ``threads`` when one is out of range."""
    check_int(warmup, "warmup", 0)
    check_int(runs, "runs", 1)
    if threads is not None:
        check_int(threads, "threads", 1)


def _synchronizer(model: nn.Module, example_inputs: ExampleInputs) -> Callable[[], None]:
    tensors = chain(iter_tensors(example_inputs), model.parameters(), model.buffers())
    if any(t.is_cuda for t in tensors):
        return torch.cuda.synchronize
    return lambda: None


def _percentile(ordered: list[float], q: float) -> float:
    # linear interpolation between closest ranks (numpy's default)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
