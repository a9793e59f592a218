"""Sweep pruning methods x ratios (or targets), measure every candidate for real, keep the Pareto front.

Results are appended to ``workdir/results.jsonl`` as each candidate finishes, with its folder
``candidates/<name>`` (``plan.json`` and ``model.safetensors``, the dense model's too), so every
candidate loads with ``sc.load(fresh_model, folder)`` and a killed sweep resumes where it stopped. Every workdir file is
written crash-safely and the workdir is locked while a sweep runs (see ``secateurs.search.workdir``).
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import posttrain
from .._files import atomic_write
from .._inputs import (
    ExampleInputs,
    call_model,
    check_bool,
    check_inputs,
    check_int,
    check_module,
    check_real,
    check_round_to,
    check_seed,
)
from .._outputs import OutputKeys, check_outputs, select_outputs
from ..criteria import CRITERIA
from ..io import save
from ..measure import DEFAULT_THREADS
from ..measure.latency import SPREAD_WARNING, check_latency_args
from ..prune import GRANULARITIES, SCOPES, Plan
from ..prune.elements import parse_nm
from .candidate import Candidate
from .executors import Executor, Job, get_executor
from .front import Front
from .tasks import SweepContext, remeasure_front, run_candidate
from .workdir import append_line, atomic_folder, locked, read_json, read_jsonl

DEFAULT_METHODS = ("channel/l2/local", "channel/l2/global", "channel/lamp/global")
DEFAULT_RATIOS = (0.3, 0.5, 0.7)
RESULTS, SENSITIVITY = "results.jsonl", "sensitivity.json"
QUANTIZE = ("int8",)  # quantisation a method may add (onnxruntime, via sc.quantize)
ONNX_FILE = "model.int8.onnx"  # a quantised candidate's deployable file, in its candidate folder


def parse_method(method: str | Mapping[str, Any]) -> dict[str, Any]:
    """"granularity/criterion/scope" (or a dict with those keys) -> a method dict, validated.

    A "+int8" suffix ("channel/l2/local+int8", or "dense+int8" for the dense model; in a dict,
    ``"quantize": "int8"``) adds int8 quantisation in onnxruntime after pruning and fine-tuning.
    A "+auto" or "+round<N>" suffix (before any "+int8"; in a dict, ``"round_to": "auto"`` or N) gives the
    method its own ``round_to`` for ``sc.plan``, so a sweep can hold "channel/l2/local" and its
    latency-aware twin "channel/l2/local+auto" (widths snapped to this machine's latency table).
    """
    if isinstance(method, str) and method.endswith("+int8"):
        out = {"granularity": "dense"} if method == "dense+int8" else parse_method(method[:-len("+int8")])
        return dict(out, quantize="int8")
    if isinstance(method, str) and "+" in method:  # "+auto" / "+round16": the method's own round_to
        base, _, tag = method.rpartition("+")
        rt = "auto" if tag == "auto" else int(tag[5:]) if tag[:5] == "round" and tag[5:].isdigit() else None
        if rt is None:
            raise ValueError(f"method {method!r}: the suffix must be '+auto', '+round<N>' (e.g. '+round16') or "
                             f"'+int8' (last), got '+{tag}'")
        out = parse_method(base)
        if "round_to" in out or out.get("quantize"):
            raise ValueError(f"method {method!r}: give one '+auto' or '+round<N>', before any '+int8'")
        return parse_method(dict(out, round_to=rt))
    if isinstance(method, Mapping):
        out = dict(method)
        if out.get("quantize", "int8") not in QUANTIZE:
            raise ValueError(f"method {method!r}: quantize must be one of {list(QUANTIZE)}, got {out['quantize']!r}")
        if out.get("granularity") == "dense" and out.get("quantize"):
            return {"granularity": "dense", "quantize": out["quantize"]}
    elif isinstance(method, str) and method.count("/") == 2:
        g, c, s = method.split("/")
        out = {"granularity": g, "criterion": c, "scope": s}
    else:
        raise ValueError("methods entries must be 'granularity/criterion/scope' strings (optionally with '+auto', "
                         f"'+round<N>', '+int8'), 'dense+int8' or dicts, got {method!r}")
    missing = {"granularity", "criterion", "scope"} - set(out)
    if missing:
        raise ValueError(f"method {method!r} lacks {sorted(missing)}")
    g, c, s = out["granularity"], out["criterion"], out["scope"]
    if not isinstance(g, str) or (g not in (*GRANULARITIES[:3], "expert") and parse_nm(g) is None):
        raise ValueError(f"method {method!r}: granularity must be one of {list(GRANULARITIES)} (N:M as numbers, "
                         f"e.g. '2:4'), got {g!r}")
    if "round_to" in out:
        _check_round_to(method, out["round_to"], g)
    if s == "posttrain":  # calibrated one-shot pruning (sc.posttrain.prune): element masks only
        if g in GRANULARITIES[:2]:
            raise ValueError(f"method {method!r}: scope 'posttrain' prunes weights, so granularity must be "
                             f"'unstructured' or N:M such as '2:4', got {g!r}")
        if c not in posttrain.METHODS:
            raise ValueError(f"method {method!r}: with scope 'posttrain' the criterion must be one of "
                             f"{list(posttrain.METHODS)}, got {c!r}")
        return out
    if not isinstance(c, str) or c not in CRITERIA:
        raise ValueError(f"method {method!r}: criterion must be one of {sorted(CRITERIA)}, got {c!r}")
    if s not in SCOPES:
        raise ValueError(f"method {method!r}: scope must be one of {list(SCOPES) + ['posttrain']}, got {s!r}")
    return out


def _check_round_to(method: Any, rt: Any, granularity: str) -> None:
    """A method's ``round_to`` must be "auto" or a positive int, on a channel or head granularity."""
    check_round_to(rt, f"method {method!r}: round_to")
    if granularity not in GRANULARITIES[:2]:
        raise ValueError(f"method {method!r}: round_to sets channel or head widths; granularity {granularity!r} "
                         "has none")


def method_name(m: Mapping[str, Any]) -> str:
    """A parsed method's name in a sweep (without its ratio): "channel/l2/local", "channel/l2/local+auto+int8"."""
    if m["granularity"] == "dense":
        return "dense+int8" if m.get("quantize") else "dense"
    rt = m.get("round_to")
    tag = "" if rt is None else "+auto" if rt == "auto" else f"+round{rt}"
    return f"{m['granularity']}/{m['criterion']}/{m['scope']}{tag}{'+int8' if m.get('quantize') else ''}"


def fidelity(reference: nn.Module, example_inputs: ExampleInputs,
             outputs: OutputKeys = None) -> Callable[[nn.Module], float]:
    """A quality metric without labels: cosine similarity of outputs to ``reference``'s (1.0 = identical).

    ``outputs`` (as in ``sc.plan``) compares only the named outputs, such as ``["logits"]``.
    """
    outputs = check_outputs(outputs)
    with torch.no_grad():
        ref = [t.float().flatten() for t in select_outputs(call_model(reference.eval(), example_inputs), outputs)]

    def evaluate(model: nn.Module) -> float:
        with torch.no_grad():
            out = [t.float().flatten() for t in select_outputs(call_model(model.eval(), example_inputs), outputs)]
        sims = [torch.nn.functional.cosine_similarity(a, b, dim=0).item() for a, b in zip(ref, out)]
        return float(sum(sims) / len(sims))

    return evaluate


def explore(model: nn.Module, example_inputs: ExampleInputs, evaluate: Callable[[nn.Module], float] | str,
            *, finetune: Callable[..., nn.Module] | None = None, methods: Iterable[str | Mapping] = DEFAULT_METHODS,
            ratios: Iterable[float] = DEFAULT_RATIOS,
            targets: Mapping[str, float] | Iterable[Mapping[str, float]] = (),
            budget: int = 0, workdir: str | os.PathLike | None = None, latency: bool = True,
            threads: int | None = DEFAULT_THREADS, runs: int = 20, seed: int = 0, quiet: bool = False,
            plan_kwargs: Mapping[str, Any] | None = None, executor: str | Executor = "local",
            calibration: Iterable[ExampleInputs] | None = None) -> Front:
    """Prune ``model`` every way asked, measure each candidate, and return the ``Front``.

    ``evaluate(model) -> float`` scores quality (higher is better), or ``"fidelity"`` for output
    similarity to the dense model (of the outputs named by ``plan_kwargs["outputs"]``, if given).
    ``finetune(model, steps=budget) -> model`` recovers each
    candidate (None: one-shot). ``methods`` are "granularity/criterion/scope" strings; each runs at
    every ``ratios`` value; scope "posttrain" (e.g. "unstructured/wanda/posttrain", "2:4/sparsegpt/posttrain")
    runs ``sc.posttrain.prune`` calibrated on ``calibration`` (else the inputs of ``plan_kwargs["batches"]``, else
    ``example_inputs``). ``plan_kwargs`` are ``sc.plan``'s options, so its ``batches`` mean what they mean there:
    with a ``loss_fn``, the loss's batches, ``(inputs, targets)`` pairs as ``recover`` takes them, of which the
    inputs calibrate; without one, batches of model inputs, used as they are (a tuple is positional inputs). A
    one-shot iterator of batches (a generator) is read into a list once, so every candidate gets all of them.
    ``calibration`` (batches of model inputs, each called like ``example_inputs``) also re-estimates the
    BatchNorm statistics of every pruned candidate that is not fine-tuned (``sc.posttrain.recalibrate``,
    before it is scored; ``extra["bn_recalibrated"]`` holds the number of batches, the table says so);
    fine-tuned candidates keep the statistics their training gave them, the dense model its own.
    A "+int8" suffix ("channel/l2/local+int8") quantises the pruned, fine-tuned candidate with
    ``sc.quantize`` (static, calibrated on the same model inputs as posttrain) and scores,
    sizes (the ``.onnx`` file, saved as ``candidates/<name>/model.int8.onnx``) and times it in
    onnxruntime; "dense+int8" adds the quantised dense model. A "+auto" suffix ("channel/l2/local+auto")
    plans that method with ``round_to="auto"`` (each width snapped to a fast one of this machine's latency
    table, timed with ``threads`` threads; "+round16" for a fixed multiple), over ``plan_kwargs["round_to"]``;
    the snaps are kept in the candidate's ``extra["latency_snaps"]`` and the report draws their staircases.
    Each row's ``measurement["runtime"]`` says where its latency comes from. ``targets`` such as
    ``{"macs": 0.5}`` add sensitivity-allocated candidates meeting that fraction of the dense cost. Candidates
    are measured with ``threads`` threads over ``runs`` runs at the batch size of ``example_inputs``. With ``workdir``
    results are appended as they finish and a rerun skips what is done; the workdir is locked while the sweep
    runs (a second process raises ``WorkdirBusy``) and damaged records are reported and recomputed.

    ``executor`` runs the candidates: ``"local"`` (one after another in this process), ``"ray"`` (a
    local Ray instance, or the one ``ray.init`` already connected to) or an ``Executor`` such as
    ``RayExecutor(address)`` (see ``secateurs.search.executors``); only this process writes the
    workdir. When candidates ran concurrently, their latencies are re-measured at the end on this
    process, interleaved (see ``tasks.remeasure_front``), and the table and report say so.
    """
    check_module(model)
    check_inputs(example_inputs)
    if plan_kwargs is not None and not isinstance(plan_kwargs, Mapping):
        raise TypeError(f"plan_kwargs must be a dict of sc.plan arguments or None, got {type(plan_kwargs).__name__}")
    if isinstance(evaluate, str):
        if evaluate != "fidelity":
            raise ValueError(f"evaluate must be a callable(model) -> float or 'fidelity', got {evaluate!r}")
        evaluate = fidelity(copy.deepcopy(model), example_inputs, (plan_kwargs or {}).get("outputs"))
    elif not callable(evaluate):
        raise TypeError(f"evaluate must be a callable(model) -> float or 'fidelity', got {type(evaluate).__name__}")
    if finetune is not None and not callable(finetune):
        raise TypeError("finetune must be a callable(model, steps=...) -> model or None, "
                        f"got {type(finetune).__name__}")
    budget = check_int(budget, "budget", 0)
    seed = check_seed(seed)
    latency, quiet = check_bool(latency, "latency"), check_bool(quiet, "quiet")
    check_latency_args(0, runs, threads)  # no warmup argument here: 0 is in range (as measure_latency's own calls)
    if isinstance(targets, (str, bytes, torch.Tensor)) or not isinstance(targets, Iterable):
        raise TypeError(f"targets must be a dict such as {{'macs': 0.5}} or a list of them, "
                        f"got {type(targets).__name__}")
    methods = [parse_method(m) for m in methods]
    ratios = [check_real(r, f"ratios[{i}]", "(0, 1)") for i, r in enumerate(ratios)]
    targets = [dict(targets)] if isinstance(targets, Mapping) else [dict(t) for t in targets]
    from .allocate import check_target
    for t in targets:
        check_target(t)
    plan_kwargs = dict(plan_kwargs or {})
    if isinstance(plan_kwargs.get("batches"), Iterator):
        # a one-shot iterator (a generator) would be used up by the first candidate that reads it
        plan_kwargs["batches"] = list(plan_kwargs["batches"])
    calibration = None if calibration is None else _calibration_batches(calibration)
    executor = get_executor(executor)
    with _Store(workdir, threads) as store:  # the workdir locked and read
        return _explore(store, model, example_inputs, evaluate, finetune, methods, ratios, targets, budget,
                        latency, threads, runs, seed, quiet, plan_kwargs, executor, calibration)


def _calibration_batches(calibration: Any) -> list[ExampleInputs]:
    """``calibration`` as a non-empty list of model-input batches (each a tensor, tuple/list or dict)."""
    if isinstance(calibration, (torch.Tensor, Mapping, str, bytes)) or not isinstance(calibration, Iterable):
        raise TypeError(f"calibration must be an iterable of batches of model inputs (e.g. a list of tensors), "
                        f"got {type(calibration).__name__}; wrap a single batch in a list")
    batches = list(calibration)
    if not batches:
        raise ValueError("calibration is empty: give at least one batch of model inputs (or leave it None)")
    for i, b in enumerate(batches):
        try:
            check_inputs(b)
        except TypeError as exc:
            raise TypeError(f"calibration batch {i}: {exc}") from None
    return batches


def _explore(store: _Store, model: nn.Module, example_inputs: ExampleInputs, evaluate: Callable[[nn.Module], float],
             finetune: Callable[..., nn.Module] | None, methods: list[dict[str, Any]], ratios: list[float],
             targets: list[dict[str, float]], budget: int, latency: bool,
             threads: int | None, runs: int, seed: int, quiet: bool, plan_kwargs: dict[str, Any],
             executor: Executor, calibration: list[ExampleInputs] | None) -> Front:
    base = copy.deepcopy(model).eval()
    jobs: list[tuple[str, dict[str, Any]]] = [("dense", {"granularity": "dense"})]
    jobs += [("dense+int8", m) for m in methods if m["granularity"] == "dense"][:1]
    jobs += [(f"{method_name(m)}@{r:g}", dict(m, ratio=r)) for m in methods if m["granularity"] != "dense"
             for r in ratios]
    jobs += [(f"allocated/{_target_name(t)}", {"granularity": "channel", "criterion": "l2", "scope": "allocated",
                                               "target": t}) for t in targets]
    sens = None
    todo = [j for j in jobs if j[0] not in store.done]
    if targets and (store.sens is None or any("target" in m for _, m in todo)):
        # missing or dropped as corrupt (the report needs it), or allocated candidates left to plan
        sens = _sensitivity(base, example_inputs, evaluate, quiet, plan_kwargs, executor)
        store.save_sensitivity(sens.to_dict())
    if not quiet and len(todo) < len(jobs):
        print(f"explore: resuming in {store.path}: {len(jobs) - len(todo)} of {len(jobs)} candidates already done")
    ctx = SweepContext(base, example_inputs, evaluate, finetune, budget, seed, threads,
                       latency and not executor.concurrent, runs, plan_kwargs, sens,
                       keep_models=store.path is None or not executor.concurrent, calibration=calibration)
    bar = tqdm(total=len(todo), desc="explore", disable=quiet)
    for job, r in executor.run(run_candidate, ctx, [Job(name, (name, method)) for name, method in todo]):
        bar.update(1)
        bar.set_postfix_str(job.key)
        extra = {"widths": r.widths, **({"bn_recalibrated": r.recalibrated} if r.recalibrated else {})}
        if r.plan is not None and "latency" in r.plan.settings:  # round_to="auto": the staircases it read
            extra["latency_snaps"] = r.plan.settings["latency"]
        cand = Candidate(r.name, r.method, r.quality, r.measurement, seconds=r.seconds, extra=extra)
        store.add(cand, r.rebuild(base), r.plan, r.onnx)
    bar.close()
    candidates = store.load_all([n for n, _ in jobs])
    front = Front(base, example_inputs, candidates, workdir=store.path, models=store.models, sensitivity=store.sens)
    if latency and remeasure_front(front, runs=runs, threads=threads):
        store.rewrite()
    else:
        _warn_unsteady(candidates)
    return front


def _warn_unsteady(candidates: list[Candidate]) -> None:
    """One warning when some candidates' latencies were unsteady (p90/p10 over ``SPREAD_WARNING``)."""
    spreads = {c.name: lat["p90_ms"] / lat["p10_ms"] for c in candidates
               if (lat := c.measurement.get("latency")) and lat["p10_ms"] > 0}
    busy = [name for name, spread in spreads.items() if spread > SPREAD_WARNING]
    if busy:
        warnings.warn(f"latency is unsteady for {len(busy)} of {len(spreads)} candidates (worst p90/p10 "
                      f"{max(spreads.values()):.1f}x, over {SPREAD_WARNING}x): the machine is busy; pick() "
                      "re-times its finalists side by side before deciding", stacklevel=3)


def _target_name(t: Mapping[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in sorted(t.items()))


def _sensitivity(base: nn.Module, x: ExampleInputs, evaluate: Callable, quiet: bool, plan_kwargs: dict,
                 executor: Executor):
    from .sensitivity import sensitivity
    return sensitivity(base, x, evaluate, quiet=quiet, executor=executor, **plan_kwargs)


def read_workdir(path: str | os.PathLike, missing_ok: bool = False) -> tuple[list[Candidate], dict | None]:
    """The candidates (and sensitivity, if any) a sweep wrote.

    Every record is checked (``Candidate.from_dict``): a torn, corrupt or incomplete line, or a corrupt
    ``sensitivity.json``, is reported with a warning and skipped, so ``explore`` recomputes it.
    """
    results = os.path.join(path, RESULTS)
    if not os.path.exists(results):
        if missing_ok:
            return [], None
        raise FileNotFoundError(f"{path} holds no {RESULTS}: not a secateurs workdir")
    rows = {c.name: c for c in read_jsonl(results, Candidate.from_dict)}  # a later record of a name wins
    sens = None
    if os.path.exists(os.path.join(path, SENSITIVITY)):
        sens = read_json(os.path.join(path, SENSITIVITY), _checked_sensitivity)
    return list(rows.values()), sens


def _checked_sensitivity(d: Any) -> dict:
    """``d`` if it parses as a ``Sensitivity`` (raises otherwise)."""
    from .sensitivity import Sensitivity
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, got {type(d).__name__}")
    Sensitivity.from_dict(d)
    if not isinstance(d.get("curves"), dict):
        raise ValueError("missing 'curves'")
    return d


class _Store:
    """The sweep's workdir: results.jsonl plus one folder per candidate (plan, and weights if tuned).

    A context manager: entering locks the workdir (``WorkdirBusy`` if another process holds it) and
    reads what an earlier run recorded; leaving releases the lock. Without a path, it keeps models in memory.
    """

    def __init__(self, path: str | os.PathLike | None, threads: int | None = None):
        self.path = None if path is None else os.fspath(path)
        self.threads = threads  # for the in-memory OnnxModel of a quantised candidate
        self.rows: dict[str, Candidate] = {}
        self.models: dict[str, nn.Module] = {}
        self.sens: dict | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _Store:
        if self.path is not None:
            os.makedirs(self.path, exist_ok=True)
            self._stack.enter_context(locked(self.path))
            candidates, self.sens = read_workdir(self.path, missing_ok=True)
            self.rows = {c.name: c for c in candidates}
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    @property
    def done(self) -> set[str]:
        return set(self.rows)

    def add(self, cand: Candidate, model: nn.Module, p: Plan | None, onnx: bytes | None = None) -> None:
        """Record ``cand``; with a workdir, write its folder (plan and weights: ``sc.load`` reads it back;
        for a quantised candidate also its int8 ``.onnx``)."""
        self.rows[cand.name] = cand
        if self.path is None:
            from ..deploy import OnnxModel
            self.models[cand.name] = model if onnx is None else OnnxModel(onnx, threads=self.threads)
            return
        if p is None:  # the dense model: an empty plan, so its folder loads like any other
            p = Plan(model_class=type(model).__name__, groups=[], layouts={}, shapes={})
        name = cand.name.replace("/", "_")
        cand.plan_path = os.path.join("candidates", name, "plan.json")
        cand.weights_path = os.path.join("candidates", name, "model.safetensors")

        def fill(tmp: str) -> None:
            save(model, p, tmp)
            if onnx is not None:
                with open(os.path.join(tmp, ONNX_FILE), "wb") as f:
                    f.write(onnx)

        if onnx is not None:
            cand.extra["onnx_path"] = os.path.join("candidates", name, ONNX_FILE)
        atomic_folder(os.path.join(self.path, "candidates", name), fill)
        append_line(os.path.join(self.path, RESULTS), json.dumps(cand.to_dict()))

    def load_all(self, names: list[str]) -> list[Candidate]:
        return [self.rows[n] for n in names if n in self.rows]

    def rewrite(self) -> None:
        """Replace results.jsonl, atomically, by the records held now (one per name)."""
        if self.path is not None:
            atomic_write(os.path.join(self.path, RESULTS), "".join(json.dumps(c.to_dict()) + "\n"
                                                                    for c in self.rows.values()))

    def save_sensitivity(self, data: dict) -> None:
        self.sens = data
        if self.path is not None:
            atomic_write(os.path.join(self.path, SENSITIVITY), json.dumps(data))
