"""Sweep pruning methods x ratios (or targets), measure every candidate for real, keep the Pareto front.

Results are appended to ``workdir/results.jsonl`` as each candidate finishes (its plan and, when
fine-tuned, its weights beside it), so a killed sweep resumes where it stopped.
"""
from __future__ import annotations

import copy
import json
import os
import time
import warnings
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from .._inputs import ExampleInputs, call_model, check_inputs, check_module, iter_tensors
from ..io import save
from ..measure import measure
from .. import posttrain
from ..prune import Plan, apply, plan
from .candidate import Candidate
from .front import Front, layer_widths

DEFAULT_METHODS = ("channel/l2/local", "channel/l2/global", "channel/lamp/global")
DEFAULT_RATIOS = (0.3, 0.5, 0.7)
RESULTS, SENSITIVITY = "results.jsonl", "sensitivity.json"


def parse_method(method: str | Mapping[str, Any]) -> dict[str, Any]:
    """"granularity/criterion/scope" (or a dict with those keys) -> a method dict, validated."""
    if isinstance(method, Mapping):
        out = dict(method)
    elif isinstance(method, str) and method.count("/") == 2:
        g, c, s = method.split("/")
        out = {"granularity": g, "criterion": c, "scope": s}
    else:
        raise ValueError(f"methods entries must be 'granularity/criterion/scope' strings or dicts, got {method!r}")
    missing = {"granularity", "criterion", "scope"} - set(out)
    if missing:
        raise ValueError(f"method {method!r} lacks {sorted(missing)}")
    return out


def fidelity(reference: nn.Module, example_inputs: ExampleInputs) -> Callable[[nn.Module], float]:
    """A quality metric without labels: cosine similarity of outputs to ``reference``'s (1.0 = identical)."""
    with torch.no_grad():
        ref = [t.float().flatten() for t in iter_tensors(call_model(reference.eval(), example_inputs))]

    def evaluate(model: nn.Module) -> float:
        with torch.no_grad():
            out = [t.float().flatten() for t in iter_tensors(call_model(model.eval(), example_inputs))]
        sims = [torch.nn.functional.cosine_similarity(a, b, dim=0).item() for a, b in zip(ref, out)]
        return float(sum(sims) / len(sims))

    return evaluate


def explore(model: nn.Module, example_inputs: ExampleInputs, evaluate: Callable[[nn.Module], float] | str,
            *, finetune: Callable[..., nn.Module] | None = None, methods: Iterable[str | Mapping] = DEFAULT_METHODS,
            ratios: Iterable[float] = DEFAULT_RATIOS,
            targets: Mapping[str, float] | Iterable[Mapping[str, float]] = (),
            budget: int = 0, workdir: str | os.PathLike | None = None, latency: bool = True,
            threads: int | None = 1, runs: int = 20, seed: int = 0, quiet: bool = False,
            plan_kwargs: Mapping[str, Any] | None = None) -> Front:
    """Prune ``model`` every way asked, measure each candidate, and return the ``Front``.

    ``evaluate(model) -> float`` scores quality (higher is better), or ``"fidelity"`` for output
    similarity to the dense model. ``finetune(model, steps=budget) -> model`` recovers each
    candidate (None: one-shot). ``methods`` are "granularity/criterion/scope" strings; each runs at
    every ``ratios`` value; scope "posttrain" (e.g. "unstructured/wanda/posttrain", "2:4/sparsegpt/posttrain")
    runs ``sc.posttrain.prune`` calibrated on ``plan_kwargs["batches"]`` (model inputs) or ``example_inputs``.
    ``targets`` such as ``{"macs": 0.5}`` add sensitivity-allocated
    candidates meeting that fraction of the dense cost. Candidates are measured with ``threads``
    threads over ``runs`` runs at the batch size of ``example_inputs``. With ``workdir`` results are
    appended as they finish and a rerun skips what is done.
    """
    check_module(model)
    check_inputs(example_inputs)
    if isinstance(evaluate, str):
        if evaluate != "fidelity":
            raise ValueError(f"evaluate must be a callable(model) -> float or 'fidelity', got {evaluate!r}")
        evaluate = fidelity(copy.deepcopy(model), example_inputs)
    elif not callable(evaluate):
        raise TypeError(f"evaluate must be a callable(model) -> float or 'fidelity', got {type(evaluate).__name__}")
    if finetune is not None and not callable(finetune):
        raise TypeError(f"finetune must be a callable(model, steps=...) -> model or None, got {type(finetune).__name__}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ValueError(f"budget must be a non-negative integer number of steps, got {budget!r}")
    methods = [parse_method(m) for m in methods]
    ratios = [float(r) for r in ratios]
    for r in ratios:
        if not 0 < r < 1:
            raise ValueError(f"ratios must lie in (0, 1), got {r!r}")
    targets = [dict(targets)] if isinstance(targets, Mapping) else [dict(t) for t in targets]
    plan_kwargs = dict(plan_kwargs or {})

    store = _Store(workdir, quiet)
    base = copy.deepcopy(model).eval()
    jobs: list[tuple[str, dict[str, Any]]] = [("dense", {"granularity": "dense"})]
    jobs += [(f"{m['granularity']}/{m['criterion']}/{m['scope']}@{r:g}", dict(m, ratio=r))
             for m in methods for r in ratios]
    jobs += [(f"allocated/{_target_name(t)}", {"granularity": "channel", "criterion": "l2", "scope": "allocated",
                                               "target": t}) for t in targets]
    sens = None
    todo = [j for j in jobs if j[0] not in store.done]
    if not quiet and len(todo) < len(jobs):
        print(f"explore: resuming in {store.path}: {len(jobs) - len(todo)} of {len(jobs)} candidates already done")
    bar = tqdm(todo, desc="explore", disable=quiet)
    for name, method in bar:
        bar.set_postfix_str(name)
        started = time.perf_counter()
        if method["granularity"] == "dense":
            p, pruned = None, copy.deepcopy(base)
        else:
            if "target" in method:
                if sens is None:
                    sens = _sensitivity(base, example_inputs, evaluate, quiet, plan_kwargs)
                p = _allocated_plan(base, example_inputs, sens, method["target"], plan_kwargs)
            elif method["scope"] == "posttrain":  # "unstructured/wanda/posttrain": calibration = plan_kwargs batches
                sparsity = method["ratio"] if method["granularity"] == "unstructured" else method["granularity"]
                pruned, p = posttrain.prune(base, plan_kwargs.get("batches") or [example_inputs], method["criterion"],
                                            sparsity, progress=False)
            else:
                p = plan(base, example_inputs, method["ratio"], granularity=method["granularity"],
                         criterion=method["criterion"], scope=method["scope"], seed=seed, **plan_kwargs)
            if method.get("scope") != "posttrain":
                pruned = apply(base, p, mode="mask" if p.masks else "remove")
            if finetune is not None and budget > 0:
                pruned = finetune(pruned, steps=budget)
        quality = float(evaluate(pruned))
        m = measure(pruned, example_inputs, latency=latency, runs=runs, threads=threads).to_dict()
        cand = Candidate(name, method, quality, m, seconds=time.perf_counter() - started,
                         extra={"widths": layer_widths(pruned)})
        store.add(cand, pruned, p, finetuned=p is not None and ((finetune is not None and budget > 0)
                                                                or method.get("scope") == "posttrain"))
    if sens is not None:
        store.save_sensitivity(sens.to_dict())
    return Front(base, example_inputs, store.load_all([n for n, _ in jobs]), workdir=store.path,
                 models=store.models, sensitivity=store.sens)


def _target_name(t: Mapping[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in sorted(t.items()))


def _sensitivity(base: nn.Module, x: ExampleInputs, evaluate: Callable, quiet: bool, plan_kwargs: dict):
    from .sensitivity import sensitivity
    return sensitivity(base, x, evaluate, quiet=quiet, **plan_kwargs)


def _allocated_plan(base: nn.Module, x: ExampleInputs, sens, target: dict, plan_kwargs: dict) -> Plan:
    from .allocate import allocate
    group_ratios = allocate(base, x, sens, target, **plan_kwargs)
    return plan(base, x, 0.0, group_ratios=group_ratios, **plan_kwargs)


def read_workdir(path: str | os.PathLike, missing_ok: bool = False) -> tuple[list[Candidate], dict | None]:
    """The candidates (and sensitivity, if any) a sweep wrote; corrupt lines are reported and skipped."""
    results = os.path.join(path, RESULTS)
    if not os.path.exists(results):
        if missing_ok:
            return [], None
        raise FileNotFoundError(f"{path} holds no {RESULTS}: not a secateurs workdir")
    rows: dict[str, Candidate] = {}
    with open(results) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                c = Candidate.from_dict(json.loads(line))
            except (json.JSONDecodeError, TypeError) as exc:
                warnings.warn(f"{results}:{i}: skipping a corrupt or truncated line ({exc})", stacklevel=3)
                continue
            rows[c.name] = c
    sens = None
    if os.path.exists(os.path.join(path, SENSITIVITY)):
        with open(os.path.join(path, SENSITIVITY)) as f:
            sens = json.load(f)
    return list(rows.values()), sens


class _Store:
    """The sweep's workdir: results.jsonl plus one folder per candidate (plan, and weights if tuned)."""

    def __init__(self, path: str | os.PathLike | None, quiet: bool):
        self.path = None if path is None else os.fspath(path)
        self.rows: dict[str, Candidate] = {}
        self.models: dict[str, nn.Module] = {}
        self.sens: dict | None = None
        if self.path is None:
            return
        os.makedirs(self.path, exist_ok=True)
        candidates, self.sens = read_workdir(self.path, missing_ok=True)
        self.rows = {c.name: c for c in candidates}

    @property
    def done(self) -> set[str]:
        return set(self.rows)

    def add(self, cand: Candidate, model: nn.Module, p: Plan | None, finetuned: bool) -> None:
        self.rows[cand.name] = cand
        if self.path is None:
            self.models[cand.name] = model
            return
        if p is not None:
            folder = os.path.join(self.path, "candidates", cand.name.replace("/", "_"))
            os.makedirs(folder, exist_ok=True)
            cand.plan_path = os.path.relpath(os.path.join(folder, "plan.json"), self.path)
            if finetuned:
                save(model, p, folder)
                cand.weights_path = os.path.relpath(os.path.join(folder, "model.safetensors"), self.path)
            else:
                with open(os.path.join(self.path, cand.plan_path), "w") as f:
                    f.write(p.to_json())
        with open(os.path.join(self.path, RESULTS), "a") as f:
            f.write(json.dumps(cand.to_dict()) + "\n")

    def load_all(self, names: list[str]) -> list[Candidate]:
        return [self.rows[n] for n in names if n in self.rows]

    def save_sensitivity(self, data: dict) -> None:
        self.sens = data
        if self.path is not None:
            with open(os.path.join(self.path, SENSITIVITY), "w") as f:
                json.dump(data, f)
