"""Per-group sensitivity: how much quality each prunable group loses when it alone is pruned.

``sensitivity(model, x, evaluate)`` traces the model once, then for every prunable group and every
ratio builds the plan that prunes that group alone (``sc.plan(..., ratio=0.0, group_ratios={gid: r})``),
applies it to a copy, scores the copy with ``evaluate(pruned) -> float`` (higher is better) and
counts the MACs and parameters the cut saved. The result feeds ``allocate``, which spends a cost
budget on the groups that lose the least quality per unit of cost saved.
"""
from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from .._inputs import ExampleInputs, check_bool, check_inputs, check_module, check_real
from ..graph import Graph, check_graph, trace
from ..measure import count_macs, count_params
from ..prune import apply, plan

DEFAULT_RATIOS = (0.25, 0.5, 0.75)
# plan arguments that would change which groups are pruned, or how much: sensitivity sets them itself
RESERVED = ("ratio", "ratios", "group_ratios", "scope")
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


@dataclass
class GroupSensitivity:
    """One group's response to being pruned alone.

    ``quality``, ``macs_saved``, ``params_saved`` and ``removed`` (elements actually removed, after
    ``round_to`` and the at-least-one rule) are keyed by ratio and include ratio 0 (the baseline,
    nothing saved). ``skipped`` holds the planner's reason when verification refused to prune the group.
    """

    id: int
    label: str
    size: int
    kind: str
    producers: list[str]
    quality: dict[float, float]
    macs_saved: dict[float, int]
    params_saved: dict[float, int]
    removed: dict[float, int]
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "size": self.size, "kind": self.kind,
                "producers": list(self.producers), "quality": _keyed(self.quality),
                "macs_saved": _keyed(self.macs_saved), "params_saved": _keyed(self.params_saved),
                "removed": _keyed(self.removed), "skipped": self.skipped}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GroupSensitivity:
        return cls(int(d["id"]), str(d["label"]), int(d["size"]), str(d["kind"]), list(d.get("producers", [])),
                   _unkeyed(d["quality"], float), _unkeyed(d["macs_saved"], int),
                   _unkeyed(d["params_saved"], int), _unkeyed(d["removed"], int), d.get("skipped"))


@dataclass
class Sensitivity:
    """Baseline quality and every group's sensitivity curve (see ``sensitivity``).

    ``settings`` records the granularity, criterion and the JSON-safe plan arguments the curves were
    measured with (``allocate`` reuses them); ``dense_macs``/``dense_params`` are the unpruned model's.
    """

    baseline: float
    groups: list[GroupSensitivity]
    ratios: tuple[float, ...]
    dense_macs: int
    dense_params: int
    settings: dict[str, Any] = field(default_factory=dict)
    # every plan argument given to ``sensitivity`` (data criteria's batches/loss_fn too); not serialised
    plan_kwargs: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def group(self, gid: int) -> GroupSensitivity:
        for g in self.groups:
            if g.id == gid:
                return g
        raise KeyError(f"no group {gid!r} in this sensitivity (groups: {[g.id for g in self.groups]})")

    def curves(self) -> dict[str, dict[float, float]]:
        """``label -> {ratio: quality}``, ratio 0 (the baseline) included: ready to plot."""
        return {g.label: dict(g.quality) for g in self.groups}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ratios become string keys (``str(float)``, exact); ``"curves"`` maps label -> {ratio: quality}."""
        return {"baseline": self.baseline, "ratios": list(self.ratios), "dense_macs": self.dense_macs,
                "dense_params": self.dense_params, "settings": _json_safe(self.settings),
                "groups": [g.to_dict() for g in self.groups],
                "curves": {g.label: _keyed(g.quality) for g in self.groups}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Sensitivity:
        """Rebuild what ``to_dict`` wrote; a ValueError says what is missing or malformed."""
        try:
            settings = dict(d.get("settings", {}))
            return cls(float(d["baseline"]), [GroupSensitivity.from_dict(g) for g in d["groups"]],
                       tuple(float(r) for r in d["ratios"]), int(d["dense_macs"]), int(d["dense_params"]),
                       settings, dict(settings.get("plan_kwargs", {})))
        except KeyError as exc:
            raise ValueError(f"sensitivity data is missing key {exc} (expected what Sensitivity.to_dict "
                             f"writes)") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"sensitivity data is malformed (expected what Sensitivity.to_dict writes): "
                             f"{type(exc).__name__}: {str(exc)[:200]}") from None

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Sensitivity:
        return cls.from_dict(json.loads(text))

    def __str__(self) -> str:
        s = self.settings
        last = self.ratios[-1] if self.ratios else 0.0
        head = (f"Sensitivity of {s.get('granularity', '?')} groups pruned one at a time "
                f"(criterion {s.get('criterion', '?')}): baseline quality {_fmt(self.baseline)}")
        cols = ["group", "label", "size"] + [f"q@{r:g}" for r in self.ratios] + \
               [f"MACs saved@{last:g}", f"params saved@{last:g}"]
        rows = []
        for g in self.groups:
            row = [str(g.id), g.label, str(g.size)]
            row += [_fmt(g.quality[r]) for r in self.ratios]
            row += [_pct(g.macs_saved.get(last, 0), self.dense_macs),
                    _pct(g.params_saved.get(last, 0), self.dense_params)]
            if g.skipped:
                row[1] += " (skipped)"
            rows.append(row)
        widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]

        def line(cells: list[str]) -> str:
            padded = (c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
            return "  ".join(padded).rstrip()
        return "\n".join([head, line(cols)] + [line(r) for r in rows])


def sensitivity(model: nn.Module, example_inputs: ExampleInputs, evaluate: Callable[[nn.Module], float], *,
                ratios: Iterable[float] = DEFAULT_RATIOS, granularity: str = "channel", criterion: str = "l2",
                graph: Graph | None = None, quiet: bool = False, executor: Any = "local",
                **plan_kwargs: Any) -> Sensitivity:
    """Prune each prunable group alone at each of ``ratios`` and score the result.

    ``evaluate(pruned_model) -> float`` measures quality, higher is better (accuracy, negative loss,
    output fidelity...); it receives a fresh pruned copy each time and may modify it (recalibrate
    batch norms, say). ``model`` is never modified: the baseline is scored on a deep copy. Groups are
    those of ``granularity`` ("channel" or "head") in ``graph`` (traced when not given); the plans
    use ``criterion`` and any other ``sc.plan`` arguments in ``plan_kwargs`` (``round_to``,
    ``ignore``, ``seed``, ``batches``/``loss_fn``...). A ratio that removes nothing from a group
    (small groups, ``round_to``) is not evaluated: its quality is the baseline's. Shows a tqdm
    progress bar unless ``quiet``. ``executor`` ("local", "ray" or an ``Executor``, see
    ``secateurs.search.executors``) runs one job per group; the curves do not depend on it.
    """
    check_module(model)
    check_inputs(example_inputs)
    if not callable(evaluate):
        raise TypeError(f"evaluate must be a callable(model) -> float, got {type(evaluate).__name__}")
    ratios = _check_ratios(ratios)
    quiet = check_bool(quiet, "quiet")
    if granularity not in ("channel", "head"):
        raise ValueError(f"granularity must be 'channel' or 'head' (structured groups), got {granularity!r}")
    bad = sorted(set(plan_kwargs) & set(RESERVED))
    if bad:
        raise ValueError(f"sensitivity sets {bad} itself (each group is pruned alone); "
                         f"pass other sc.plan arguments only (round_to, ignore, seed, batches, loss_fn...)")
    check_graph(graph)
    graph = graph if graph is not None else trace(model, example_inputs, outputs=plan_kwargs.get("outputs"))
    ignore = set(plan_kwargs.get("ignore", ()))
    chosen = [g for g in graph.groups if g.kind == granularity and not _ignored(g, ignore)]
    if not chosen:
        raise ValueError(f"{type(model).__name__} has no prunable {granularity} groups to measure")

    baseline = _score(evaluate, copy.deepcopy(model), "the unpruned model")
    dense_macs = count_macs(model, example_inputs).total
    dense_params = count_params(model)
    modules = dict(model.named_modules())
    labels = _labels(chosen, modules)

    from .executors import Job, get_executor
    shared = _Shared(model, example_inputs, evaluate, ratios, granularity, criterion, graph, plan_kwargs, baseline,
                     dense_macs, dense_params)
    jobs = [Job(labels[g.id], (g.id, labels[g.id])) for g in chosen]
    by_id: dict[int, GroupSensitivity] = {}
    bar = tqdm(total=len(chosen), desc="sensitivity", disable=quiet, leave=False)
    try:
        for job, gs in get_executor(executor).run(_group_curve, shared, jobs):
            by_id[gs.id] = gs
            bar.set_postfix_str(job.key, refresh=False)
            bar.update(1)
    finally:
        bar.close()
    out = [by_id[g.id] for g in chosen]
    saved = dict(plan_kwargs, ignore=sorted(ignore)) if "ignore" in plan_kwargs else dict(plan_kwargs)
    settings = {"granularity": granularity, "criterion": criterion,
                "plan_kwargs": {k: v for k, v in saved.items() if _is_json(v)}}
    return Sensitivity(baseline, out, ratios, dense_macs, dense_params, settings, dict(plan_kwargs))


@dataclass
class _Shared:
    """What every group's job needs (shipped to each worker once)."""

    model: nn.Module
    example_inputs: ExampleInputs
    evaluate: Callable[[nn.Module], float]
    ratios: tuple[float, ...]
    granularity: str
    criterion: str
    graph: Graph
    plan_kwargs: dict[str, Any]
    baseline: float
    dense_macs: int
    dense_params: int


def _group_curve(sh: _Shared, gid: int, label: str) -> GroupSensitivity:
    """Group ``gid`` pruned alone at every ratio: its curve (a pure job, see ``executors``)."""
    g = next(g for g in sh.graph.groups if g.id == gid)
    gs = GroupSensitivity(g.id, label, g.size, g.kind, list(g.producers),
                          {0.0: sh.baseline}, {0.0: 0}, {0.0: 0}, {0.0: 0})
    seen: dict[tuple[int, ...], tuple[float, int, int]] = {(): (sh.baseline, 0, 0)}
    for r in sh.ratios:
        p = plan(sh.model, sh.example_inputs, 0.0, granularity=sh.granularity, criterion=sh.criterion,
                 group_ratios={g.id: r}, graph=sh.graph, **sh.plan_kwargs)
        removed = tuple(next((e["remove"] for e in p.groups if e["id"] == g.id), []))
        if p.skipped and any(s.get("id") == g.id for s in p.skipped):
            gs.skipped = next(s.get("reason") for s in p.skipped if s.get("id") == g.id)
        if removed not in seen:
            pruned = apply(sh.model, p)
            macs = sh.dense_macs - count_macs(pruned, sh.example_inputs).total
            params = sh.dense_params - count_params(pruned)
            seen[removed] = (_score(sh.evaluate, pruned, f"group {g.id} ({label}) pruned at {r:g}"), macs, params)
        gs.quality[r], gs.macs_saved[r], gs.params_saved[r] = seen[removed]
        gs.removed[r] = len(removed)
    return gs


def _check_ratios(ratios: Iterable[float]) -> tuple[float, ...]:
    if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Iterable):
        raise TypeError(f"ratios must be an iterable of numbers in (0, 1), got {ratios!r}")
    out = [check_real(r, f"ratios[{i}]", "(0, 1)") for i, r in enumerate(ratios)]
    if not out:
        raise ValueError("ratios must not be empty")
    return tuple(sorted(set(out)))


def _score(evaluate: Callable[[nn.Module], float], model: nn.Module, what: str) -> float:
    q = evaluate(model)
    try:
        v = float(q)
    except (TypeError, ValueError):
        raise TypeError(f"evaluate must return a number (higher is better); got {type(q).__name__} "
                        f"for {what}") from None
    if not math.isfinite(v):
        raise ValueError(f"evaluate returned {v} for {what}; it must return a finite number (higher is better)")
    return v


def _ignored(g, ignore: set[str]) -> bool:
    def inside(name: str, prefix: str) -> bool:
        return prefix == "" or name == prefix or name.startswith(prefix + ".")
    return any(inside(t.rpartition(".")[0], ig) for t, _, _ in g.tensors for ig in ignore)


def _labels(groups, modules: dict[str, nn.Module]) -> dict[int, str]:
    """A short, unique name per group: its first producing layer (norms left out), '+k' for k more."""
    raw = {}
    for g in groups:
        names = [p for p in g.producers if not isinstance(modules.get(p), _NORMS)] or list(g.producers)
        if not names:  # no producing layer (only consumers): name the first module that holds it
            names = list(dict.fromkeys(t.rpartition(".")[0] for t, _, _ in g.tensors))
        label = (names[0] or "<model>") if names else f"group {g.id}"
        if len(names) > 1:
            label += f" +{len(names) - 1}"
        raw[g.id] = label
    counts: dict[str, int] = {}
    for label in raw.values():
        counts[label] = counts.get(label, 0) + 1
    return {gid: (f"{label} #{gid}" if counts[label] > 1 else label) for gid, label in raw.items()}


def _keyed(d: Mapping[float, Any]) -> dict[str, Any]:
    return {str(float(k)): v for k, v in sorted(d.items())}


def _unkeyed(d: Mapping[str, Any], kind: type) -> dict[float, Any]:
    return {float(k): kind(v) for k, v in d.items()}


def _is_json(v: Any) -> bool:
    try:
        json.dumps(v, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def _json_safe(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (_json_safe(v) if isinstance(v, Mapping) else v) for k, v in d.items() if _is_json(v)}


def _fmt(q: float) -> str:
    return f"{q:.4g}"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"
