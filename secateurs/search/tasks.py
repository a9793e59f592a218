"""The sweep's unit of work, a pure function any executor can run: one candidate, pruned, tuned, scored, measured.

``run_candidate(ctx, name, method)`` depends only on its arguments (the dense model, inputs, metric,
fine-tuning function, budget, seed and calibration inputs in ``ctx``; the method) and seeds torch itself, so it
gives the same plan, weights and quality in this process or in a Ray worker. It writes nothing: it returns a
``CandidateResult`` that the driver records. ``remeasure_front`` times finished candidates on the
driver, interleaved, after a concurrent sweep whose in-task timings would have been distorted.
"""
from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .. import posttrain
from .._inputs import ExampleInputs
from ..measure import compare_latency, measure
from ..posttrain.recalibrate import tracked_norms
from ..prune import Plan, apply, plan
from ..prune.snap import default_table

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
    calibration: list[ExampleInputs] | None = None  # model inputs: BatchNorm recalibration, posttrain, int8


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
    onnx: bytes | None = None  # a quantised candidate's int8 ONNX file (the model it is scored and timed as)
    recalibrated: int = 0  # calibration batches its BatchNorm statistics were re-estimated on (0: not)

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
    """Prune ``ctx.base`` by ``method``, fine-tune ``ctx.budget`` steps, score and measure it (pure: writes nothing).

    A candidate left one-shot (no fine-tuning) has its BatchNorm statistics re-estimated on
    ``ctx.calibration`` when given (``sc.posttrain.recalibrate``): pruning made the dense model's stale.
    Fine-tuned candidates are not: training re-estimates them on the tuned weights.
    """
    started = time.perf_counter()
    previous = torch.get_num_threads()
    if ctx.threads is not None:
        torch.set_num_threads(ctx.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            tuned, recalibrated = False, 0
            if method["granularity"] == "dense":
                p, pruned = None, copy.deepcopy(ctx.base)
            else:
                if method["scope"] == "posttrain":  # calibrated: weights change, so the model goes back as tuned
                    pruned, p = _posttrain(ctx, method)
                    tuned = True
                else:
                    p = _allocated_plan(ctx, method["target"]) if "target" in method else plan(
                        ctx.base, ctx.example_inputs, method["ratio"], granularity=method["granularity"],
                        criterion=method["criterion"], scope=method["scope"], seed=ctx.seed,
                        **_plan_kwargs(ctx, method))
                    pruned = apply(ctx.base, p, mode="mask" if p.masks else "remove")
                if ctx.finetune is not None and ctx.budget > 0:
                    pruned = ctx.finetune(pruned, steps=ctx.budget)
                    tuned = True
                elif ctx.calibration and tracked_norms(pruned):  # BN statistics change: the model goes back
                    pruned = posttrain.recalibrate(pruned, ctx.calibration, inplace=True)
                    tuned, recalibrated = True, len(ctx.calibration)
            served = _quantized(ctx, pruned) if method.get("quantize") else None
            quality = float(ctx.evaluate(pruned if served is None else served))
        with warnings.catch_warnings():  # said once for the whole sweep, by explore
            warnings.filterwarnings("ignore", message="latency is unsteady")
            m = measure(pruned, ctx.example_inputs, latency=ctx.latency and served is None, runs=ctx.runs,
                        threads=ctx.threads).to_dict()
        m["runtime"] = "pytorch"
        if served is not None:  # scored, sized and timed as it will be served: the int8 file in onnxruntime
            m.update(size_bytes=served.nbytes, runtime="onnxruntime", description=served.description)
            if ctx.latency:
                m["latency"] = asdict(served.latency(ctx.example_inputs, warmup=5, runs=ctx.runs))
    finally:
        torch.set_num_threads(previous)
    from .front import layer_widths
    return CandidateResult(name, method, quality, m, layer_widths(pruned), p, time.perf_counter() - started,
                           model=pruned if ctx.keep_models or tuned else None,
                           onnx=None if served is None else served.model_bytes, recalibrated=recalibrated)


def _calibration(ctx: SweepContext) -> list[ExampleInputs]:
    """Model inputs to calibrate on (posttrain, int8): ``ctx.calibration``, else those of ``plan_kwargs["batches"]``,
    else the example inputs.

    ``plan_kwargs["batches"]`` mean what they mean to ``sc.plan``: with a ``loss_fn`` they are its batches,
    ``(inputs, targets)`` pairs as ``recover`` takes them, and their inputs calibrate (a tensor or dict batch is
    its own inputs); without one they are batches of model inputs (activation criteria's) and calibrate as they are.
    """
    batches = ctx.plan_kwargs.get("batches")
    if ctx.calibration or not batches:
        return ctx.calibration or [ctx.example_inputs]
    if ctx.plan_kwargs.get("loss_fn") is None:
        return list(batches)
    return [_inputs_of(b, i) for i, b in enumerate(batches)]


def _inputs_of(batch: Any, i: int) -> ExampleInputs:
    """The inputs of a ``loss_fn`` batch: the first item of an ``(inputs, targets)`` pair."""
    if isinstance(batch, (torch.Tensor, Mapping)):
        return batch
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0]
    got = f"a {type(batch).__name__} of {len(batch)}" if isinstance(batch, (tuple, list)) else type(batch).__name__
    raise ValueError(f"plan_kwargs['batches'][{i}]: with a loss_fn, batches are (inputs, targets) pairs (as for "
                     f"sc.plan's data criteria and recover), whose inputs calibrate posttrain and int8 candidates; "
                     f"got {got}. Pass explore(..., calibration=[model inputs, ...]) to calibrate on other batches")


def _plan_kwargs(ctx: SweepContext, method: dict[str, Any]) -> dict[str, Any]:
    """``sc.plan`` options for one method: the sweep's (``batches`` and ``loss_fn`` for data criteria too), with
    the method's own ``round_to`` over them; a latency table only where widths snap ("auto"), timed with the
    sweep's threads unless one was given."""
    kw = dict(ctx.plan_kwargs)
    if "round_to" in method:
        kw["round_to"] = method["round_to"]
    if method["granularity"] not in ("channel", "head"):
        kw.pop("round_to", None)  # widths only: element masks have none to round
    if kw.get("round_to") != "auto":
        kw.pop("latency_table", None)
    elif kw.get("latency_table") is None:
        kw["latency_table"] = default_table(ctx.example_inputs, ctx.threads or torch.get_num_threads())
    return kw


def _quantized(ctx: SweepContext, model: nn.Module):
    """``model`` int8-quantised by ``sc.quantize`` (an ``OnnxModel``), calibrated on ``_calibration(ctx)``."""
    from ..deploy import quantize
    # weights left in float are listed in the model's description's run, not per candidate
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="quantize left")
        return quantize(model, ctx.example_inputs, _calibration(ctx), threads=ctx.threads)


def _posttrain(ctx: SweepContext, method: dict[str, Any]) -> tuple[nn.Module, Plan]:
    """``sc.posttrain.prune`` by ``method``, calibrated on ``_calibration(ctx)``."""
    sparsity = method["ratio"] if method["granularity"] == "unstructured" else method["granularity"]
    return posttrain.prune(ctx.base, _calibration(ctx), method["criterion"], sparsity, progress=False)


def _allocated_plan(ctx: SweepContext, target: dict[str, float]) -> Plan:
    from .allocate import allocate
    group_ratios = allocate(ctx.base, ctx.example_inputs, ctx.sensitivity, target, **ctx.plan_kwargs)
    return plan(ctx.base, ctx.example_inputs, 0.0, group_ratios=group_ratios, **ctx.plan_kwargs)


class _Served(nn.Module):
    """An ``OnnxModel`` as an ``nn.Module``, so ``compare_latency`` can interleave it with PyTorch candidates."""

    def __init__(self, onnx: Any) -> None:
        super().__init__()
        self.onnx = onnx

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.onnx(*args, **kwargs)


def timeable(model: Any) -> nn.Module:
    """``model``, or an ``OnnxModel`` wrapped so ``compare_latency`` can time it (tensor to numpy and back included)."""
    return model if isinstance(model, nn.Module) else _Served(model)


def remeasure_front(front, *, runs: int = 20, threads: int | None = 1) -> bool:
    """If any candidate of ``front`` lacks a latency, time them all interleaved (``compare_latency``); True if it did.

    All of them, not just the missing ones, so every latency in the front comes from one session.
    Each candidate's ``extra["latency_note"]`` says how it was measured (the table and report show it).
    """
    if all(c.measurement.get("latency") for c in front.candidates):
        return False
    models = {c.name: timeable(front.rebuild(c)[0]) for c in front.candidates}
    timed = compare_latency(models, front.example_inputs, rounds=runs, warmup=5, threads=threads)
    note = LATENCY_NOTE.format(threads=next(iter(timed.values())).threads, n=len(timed), runs=runs)
    for c in front.candidates:
        c.measurement["latency"] = asdict(timed[c.name])
        c.extra["latency_note"] = note
    return True
