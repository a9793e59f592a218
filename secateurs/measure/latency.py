"""Wall-clock latency of a model's forward pass: warm-up, repeated timed runs, median and spread."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import chain

import torch
from torch import nn

from secateurs._inputs import (
    ExampleInputs,
    batch_size_of,
    check_inputs,
    check_int,
    check_module,
    iter_tensors,
    run_forward,
)
from secateurs.measure._common import eval_mode

# The thread count every latency figure uses unless told otherwise (measure, explore, the CLI): one
# thread is what a busy or shared machine can give steadily, and it keeps numbers comparable.
DEFAULT_THREADS = 1
# ``p90 / p10`` above this means the timings are unsteady (the machine is busy): ``measure`` warns.
SPREAD_WARNING = 2.0


@dataclass(frozen=True)
class Latency:
    """Forward latency in milliseconds over ``runs`` timed runs, at ``batch_size`` with ``threads`` CPU threads."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    batch_size: int | None
    threads: int

    @property
    def spread(self) -> float:
        """``p90 / p10``: 1.0 for perfectly steady timings; large on a busy machine."""
        return self.p90_ms / self.p10_ms if self.p10_ms > 0 else float("inf")

    def overlaps(self, other: Latency) -> bool:
        """Whether the two p10-p90 ranges overlap (the medians' order is then not to be trusted)."""
        return self.p10_ms <= other.p90_ms and other.p10_ms <= self.p90_ms


def measure_latency(
    model: nn.Module,
    example_inputs: ExampleInputs,
    *,
    warmup: int = 5,
    runs: int = 20,
    threads: int | None = DEFAULT_THREADS,
) -> Latency:
    """Time eval-mode forwards under ``torch.inference_mode`` after ``warmup`` untimed ones.

    ``threads`` pins ``torch.set_num_threads`` for the measurement only (None: leave it as it is); the
    model's train/eval mode is restored.
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
    return _summary(times_ms, batch_size_of(example_inputs), used_threads)


def compare_latency(
    models: Mapping[str, nn.Module],
    example_inputs: ExampleInputs,
    *,
    rounds: int = 15,
    warmup: int = 3,
    threads: int | None = DEFAULT_THREADS,
) -> dict[str, Latency]:
    """Time several models interleaved (A, B, C, then C, B, A, ...) and return each one's ``Latency``.

    Timing models one after the other lets a burst of load on the machine land on one of them only;
    interleaving spreads it over all, so their medians can be compared. Each round times one forward of
    every model, in an order reversed every other round so no model always runs right after another.
    All run with the same ``threads`` and inputs, in eval mode under ``torch.inference_mode``.
    """
    times, used_threads = _interleaved(models, example_inputs, rounds, warmup, threads)
    batch = batch_size_of(example_inputs)
    return {name: _summary(t, batch, used_threads) for name, t in times.items()}


@dataclass(frozen=True)
class LatencyRatio:
    """A model's forward time over a reference model's, one ratio per round of back-to-back timings."""

    median: float
    p10: float
    p90: float
    rounds: int


def latency_ratio(
    model: nn.Module,
    reference: nn.Module,
    example_inputs: ExampleInputs,
    *,
    rounds: int = 15,
    warmup: int = 3,
    threads: int | None = DEFAULT_THREADS,
) -> LatencyRatio:
    """``model``'s latency as a fraction of ``reference``'s: the median over rounds of the two times of a round.

    Both run back to back in every round (interleaved as in ``compare_latency``), so load that lasts
    longer than a round scales both times of that round alike and cancels in their ratio: on a shared
    machine the median of these ratios is several times steadier than the ratio of the two medians.
    """
    times, _ = _interleaved({"model": model, "reference": reference}, example_inputs, rounds, warmup, threads,
                            label=str)
    ratios = sorted(a / b if b > 0 else float("inf") for a, b in zip(times["model"], times["reference"]))
    return LatencyRatio(_percentile(ratios, 0.5), _percentile(ratios, 0.1), _percentile(ratios, 0.9), len(ratios))


def _interleaved(models: Mapping[str, nn.Module], example_inputs: ExampleInputs, rounds: int, warmup: int,
                 threads: int | None, label: Callable[[str], str] = lambda name: f"models[{name!r}]",
                 ) -> tuple[dict[str, list[float]], int]:
    """Each model's forward times in milliseconds, one per round (see ``compare_latency``), and the threads used;
    errors name a model by ``label(name)``, the argument the caller's user passed it as."""
    if not isinstance(models, Mapping) or not models:
        raise ValueError(f"models must be a non-empty mapping of names to nn.Module, got {models!r}")
    for name, model in models.items():
        check_module(model, label(name))
    check_inputs(example_inputs)
    check_int(rounds, "rounds", 1)
    check_latency_args(warmup, 1, threads)
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    sync = _synchronizer(models[names[0]], example_inputs)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        used_threads = torch.get_num_threads()
        with contextlib.ExitStack() as stack, torch.inference_mode():
            for model in models.values():
                stack.enter_context(eval_mode(model))
            for _ in range(warmup):
                for name in names:
                    run_forward(models[name], example_inputs, label(name))
            sync()
            for i in range(rounds):
                for name in (names if i % 2 == 0 else names[::-1]):
                    start = time.perf_counter()
                    run_forward(models[name], example_inputs, label(name))
                    sync()
                    times[name].append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(previous_threads)
    return times, used_threads


def _summary(times_ms: list[float], batch_size: int | None, threads: int) -> Latency:
    ordered = sorted(times_ms)
    return Latency(
        median_ms=_percentile(ordered, 0.5),
        p10_ms=_percentile(ordered, 0.1),
        p90_ms=_percentile(ordered, 0.9),
        runs=len(ordered),
        batch_size=batch_size,
        threads=threads,
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
