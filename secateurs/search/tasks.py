"""The sweep's unit of work, a pure function any executor can run: one candidate, pruned, tuned, scored, measured.

``run_candidate(ctx, name, method)`` depends only on its arguments (the dense model, inputs, metric,
fine-tuning function, budget and seed in ``ctx``; the method) and seeds torch itself, so it gives the
same plan, weights and quality in this process or in a Ray worker. It writes nothing: it returns a
``CandidateResult`` that the driver records. ``remeasure_latency`` times finished candidates on the
driver, interleaved, after a concurrent sweep whose in-task timings would have been distorted.
"""
from __future__ import annotations

import copy
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .._inputs import ExampleInputs, batch_size_of, run_forward
from ..measure import measure
from ..measure._common import eval_mode
from ..measure.latency import _percentile
from ..prune import Plan, apply, plan

LATENCY_NOTE = ("latency re-measured after the sweep on the driver, one process, {threads} thread(s): the {n} "
                "candidates interleaved over {runs} rounds (a concurrent sweep's in-task timings are distorted)")


@dataclass
class SweepContext:
    """Everything a candidate job needs besides its method; shipped to each worker once."""

    base: nn.Module
    example_inputs: ExampleInputs
    evaluate: Callable[[nn.Module], float]
    finetune: Callable[..., nn.Module] | None
    budget: int
    seed: int
    threads: int | None
    latency: bool
    runs: int
    plan_kwargs: dict[str, Any] = field(default_factory=dict)
    sensitivity: Any = None  # a Sensitivity, for allocated candidates
    keep_models: bool = True  # return every pruned model; False: only tuned ones (the rest rebuild from their plans)


@dataclass
class CandidateResult:
    """What one candidate job produced; ``model`` is None unless the driver needs it (see ``SweepContext``).

    Pickled (sent from a worker), the model travels as its ``state_dict``: modules carrying mask
    parametrizations cannot be pickled, and the driver rebuilds the same structure from the plan.
    """

    name: str
    method: dict[str, Any]
    quality: float
    measurement: dict[str, Any]
    widths: dict[str, int]
    plan: Plan | None
    seconds: float
    model: nn.Module | None = None
    state: dict[str, torch.Tensor] | None = None

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        if d["model"] is not None:
            d["state"], d["model"] = d["model"].state_dict(), None
        return d

    def rebuild(self, base: nn.Module) -> nn.Module:
        """The candidate's model: as returned in-process, or rebuilt from ``base`` and the plan (and the
        state, when the job sent its tuned weights back)."""
        if self.model is not None:
            return self.model
        if self.plan is None:
            model = copy.deepcopy(base)
        else:
            model = apply(base, self.plan, mode="mask" if self.plan.masks else "remove")
        if self.state is not None:
            model.load_state_dict(self.state)
        return model


def run_candidate(ctx: SweepContext, name: str, method: dict[str, Any]) -> CandidateResult:
    """Prune ``ctx.base`` by ``method``, fine-tune ``ctx.budget`` steps, score and measure it (pure: writes nothing)."""
    started = time.perf_counter()
    previous = torch.get_num_threads()
    if ctx.threads is not None:
        torch.set_num_threads(ctx.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            tuned = False
            if method["granularity"] == "dense":
                p, pruned = None, copy.deepcopy(ctx.base)
            else:
                if "target" in method:
                    p = _allocated_plan(ctx, method["target"])
                else:
                    p = plan(ctx.base, ctx.example_inputs, method["ratio"], granularity=method["granularity"],
                             criterion=method["criterion"], scope=method["scope"], seed=ctx.seed, **ctx.plan_kwargs)
                pruned = apply(ctx.base, p, mode="mask" if p.masks else "remove")
                if ctx.finetune is not None and ctx.budget > 0:
                    pruned = ctx.finetune(pruned, steps=ctx.budget)
                    tuned = True
            quality = float(ctx.evaluate(pruned))
        with warnings.catch_warnings():  # said once for the whole sweep, by explore
            warnings.filterwarnings("ignore", message="latency is unsteady")
            m = measure(pruned, ctx.example_inputs, latency=ctx.latency, runs=ctx.runs, threads=ctx.threads).to_dict()
    finally:
        torch.set_num_threads(previous)
    from .front import layer_widths
    return CandidateResult(name, method, quality, m, layer_widths(pruned), p, time.perf_counter() - started,
                           model=pruned if ctx.keep_models or tuned else None)


def _allocated_plan(ctx: SweepContext, target: dict[str, float]) -> Plan:
    from .allocate import allocate
    group_ratios = allocate(ctx.base, ctx.example_inputs, ctx.sensitivity, target, **ctx.plan_kwargs)
    return plan(ctx.base, ctx.example_inputs, 0.0, group_ratios=group_ratios, **ctx.plan_kwargs)


def remeasure_latency(models: dict[str, nn.Module], example_inputs: ExampleInputs, *, runs: int = 20,
                      warmup: int = 5, threads: int | None = 1) -> dict[str, dict[str, Any]]:
    """Latency of every model, timed in one process, interleaved: each round runs every model once.

    Interleaving spreads any slow spell of the machine over all models alike, so their ratios hold
    even when absolute times drift. Each round starts at a different model. Returns name -> the
    dict ``Measurement.to_dict()["latency"]`` holds (median/p10/p90 ms, runs, batch size, threads).
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    try:
        used = torch.get_num_threads()
        with torch.inference_mode(), ExitStack() as stack:
            for m in models.values():
                stack.enter_context(eval_mode(m))
            for n in names:
                for _ in range(warmup):
                    run_forward(models[n], example_inputs, n)
            for r in range(runs):
                for i in range(len(names)):
                    n = names[(i + r) % len(names)]
                    start = time.perf_counter()
                    run_forward(models[n], example_inputs, n)
                    _sync(models[n])
                    times[n].append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(previous)
    out = {}
    for n, ts in times.items():
        ts.sort()
        out[n] = {"median_ms": _percentile(ts, 0.5), "p10_ms": _percentile(ts, 0.1), "p90_ms": _percentile(ts, 0.9),
                  "runs": runs, "batch_size": batch_size_of(example_inputs), "threads": used}
    return out


def _sync(model: nn.Module) -> None:
    p = next(model.parameters(), None)
    if p is not None and p.is_cuda:
        torch.cuda.synchronize(p.device)


def remeasure_front(front, *, runs: int = 20, threads: int | None = 1) -> bool:
    """If any candidate of ``front`` lacks a latency, time them all with ``remeasure_latency``; True if it did.

    All of them, not just the missing ones, so every latency in the front comes from one session.
    Each candidate's ``extra["latency_note"]`` says how it was measured (the table and report show it).
    """
    if all(c.measurement.get("latency") for c in front.candidates):
        return False
    models = {c.name: front.rebuild(c)[0] for c in front.candidates}
    timed = remeasure_latency(models, front.example_inputs, runs=runs, threads=threads)
    note = LATENCY_NOTE.format(threads=next(iter(timed.values()))["threads"], n=len(timed), runs=runs)
    for c in front.candidates:
        c.measurement["latency"] = timed[c.name]
        c.extra["latency_note"] = note
    return True
