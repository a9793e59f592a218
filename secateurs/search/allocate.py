"""Sensitivity-driven allocation: per-group pruning ratios that meet a cost target at the least predicted loss.

``allocate(model, x, sens, {"macs": 0.5})`` starts from ratio 0 everywhere and repeatedly raises, by
``step``, the ratio of the group whose next step loses the least quality per unit of cost saved,
both read off the group's ``sensitivity`` curve (linear between the measured ratios). The cost of a
combination is predicted by adding the groups' single-group savings; once the prediction meets the
target, the real plan is measured (``count_macs``, ``count_params`` or ``measure_latency``), and
the greedy continues, its predicted target corrected by how far off the prediction was, until the
measured cost meets the target. Steps that the target turns out not to need are then undone
(measured again). For a latency target a group's saving is read off the machine's latency table
(``latency_model``), scaled by one measurement of the model with every group at its largest ratio.
``{"latency": f}`` asks for a fraction of the dense model's latency (or of ``latency_reference``'s) and
times every candidate back to back with that model in each round (``latency_ratio``), so load that
comes and goes on the machine cancels out.
The result is ``group_ratios`` for ``sc.plan(model, x, 0.0, group_ratios=...)``.

``uniform_ratio`` finds, by bisection, the smallest single ratio whose plan meets the same target:
the baseline an allocation has to beat.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .._inputs import ExampleInputs, check_inputs, check_module, check_real
from ..graph import Graph, check_graph, trace
from ..measure import count_macs, count_params, latency_ratio, measure_latency
from ..prune import apply, plan
from ..prune.planner import RoundingWarning, kept_count, removed_count
from ..prune.snap import Timer, check_timer, default_table
from .latency_model import group_staircases, ms_saved
from .sensitivity import RESERVED, GroupSensitivity, Sensitivity

TARGETS = ("macs", "params", "latency_ms", "latency")
LATENCY_TARGETS = ("latency_ms", "latency")
LATENCY_KWARGS = ("warmup", "runs", "threads")
MAX_ROUNDS = 200  # measured corrections of the greedy before giving up
CONFIRMATIONS = 3  # latency targets: times the chosen prefix of the greedy is re-measured before it is kept


def allocate(model: nn.Module, example_inputs: ExampleInputs, sens: Sensitivity | Mapping[str, Any],
             target: Mapping[str, float], *, granularity: str | None = None, criterion: str | None = None,
             graph: Graph | None = None, step: float = 0.05, max_ratio: float = 0.9,
             evaluate: Callable[[nn.Module], float] | None = None, min_gain: float = 0.0,
             latency_kwargs: Mapping[str, Any] | None = None, latency_table: Timer | None = None,
             latency_reference: nn.Module | None = None, latency_tolerance: float = 0.0,
             **plan_kwargs: Any) -> dict[int, float]:
    """Per-group ratios (``{group_id: ratio}``, every group of ``sens``) whose plan meets ``target``.

    ``target``: ``{"macs": f}`` or ``{"params": f}`` with ``f`` the fraction of the dense model's
    MACs / parameters to KEEP (0 < f <= 1), or ``{"latency_ms": t}``, the measured median forward
    latency to reach (``measure_latency(**latency_kwargs)`` on ``example_inputs``; each group's
    saving is predicted from ``latency_table``, by default the machine's cached table at the
    measurement's thread count, see ``latency_model``), or ``{"latency": f}``, the fraction of the
    dense model's latency to keep, each candidate timed back to back with the dense model in ``runs``
    rounds (``latency_ratio``, the median per-round ratio): robust to load that drifts while the search
    runs. With ``latency_reference`` (another model taking the same inputs, such as a uniformly pruned
    one) ``f`` is a fraction of that model's latency instead, and candidates are timed against it:
    ``{"latency": 1.0}`` asks for a model as fast as the reference, however the machine's load moves.
    A latency target counts as met up to ``latency_tolerance`` (a fraction, default 0) above it: near a
    flat stretch of latency against width, models a percent apart in truth are told apart by the
    noise alone, and a tolerance of about the measurement's resolution keeps the wider one.

    ``sens`` is a ``Sensitivity`` (or its ``to_dict()``) measured on this model; ``granularity``,
    ``criterion`` and plan arguments default to those it was measured with (``plan_kwargs`` such as
    ``round_to`` override them; pass the same to ``sc.plan`` afterwards).
    Ratios move in steps of ``step`` up to ``max_ratio``. With ``evaluate(model) -> float`` the
    allocation is also compared with the uniform ratio meeting the same measured target
    (``uniform_ratio``) and the better scoring of the two is returned (uniform as equal ratios). The
    allocation must score more than ``min_gain`` above uniform to be kept: with a noisy ``evaluate``
    (accuracy on n samples moves by about ``sqrt(p (1 - p) / n)``), a margin of that size keeps the
    uniform model unless the allocation is measurably better.

    Raises ``ValueError`` for an unknown target key, a bad value, or a target that pruning every
    group at ``max_ratio`` still does not reach. The model is not modified.
    """
    check_module(model)
    check_inputs(example_inputs)
    sens = _as_sensitivity(sens)
    key, value = check_target(target)
    _check_steps(step, max_ratio)
    if evaluate is not None and not callable(evaluate):
        raise TypeError(f"evaluate must be a callable(model) -> float or None, got {type(evaluate).__name__}")
    check_timer(latency_table)
    min_gain = check_real(min_gain, "min_gain (a score margin)", "[0, inf)")
    granularity = granularity if granularity is not None else sens.settings.get("granularity", "channel")
    criterion = criterion if criterion is not None else sens.settings.get("criterion", "l2")
    kw = _plan_kwargs(sens, plan_kwargs)
    if latency_table is not None and kw.get("round_to") == "auto":
        kw["latency_table"] = latency_table  # the plans it measures snap with the same table
    check_graph(graph)
    graph = graph if graph is not None else trace(model, example_inputs, outputs=kw.get("outputs"))
    _check_groups(sens, graph, granularity)
    meter = _Meter(model, example_inputs, graph, key, granularity, criterion, kw, latency_kwargs, latency_reference,
                   latency_tolerance)
    dense = meter.dense()
    goal = meter.goal(value)
    gids = [g.id for g in sens.groups]
    zeros = {gid: 0.0 for gid in gids}
    if dense <= goal:
        return zeros

    grid = _grid(step, max_ratio)
    round_to = 1 if kw.get("round_to") == "auto" else int(kw.get("round_to", 1))
    saved_of = "params_saved" if key == "params" else "macs_saved"
    stairs: dict[int, dict[int, float]] = {}
    ms_per_mac = 1.0  # latency targets: groups without timed layers predict from MACs, in milliseconds
    if key in LATENCY_TARGETS:
        table = latency_table or default_table(example_inputs, meter.latency_kwargs.get("threads") or
                                               torch.get_num_threads())
        stairs = group_staircases(model, example_inputs, graph, gids, table)
        ms_per_mac = dense / max(1, count_macs(model, example_inputs).total)
    rounding = kw.get("rounding", "down")
    curves = [c for c in (_Curve(g, sens.baseline, saved_of, grid, round_to, stairs.get(g.id), ms_per_mac, rounding)
                          for g in sens.groups) if c.usable]
    at_max = {c.id: grid[c.top] for c in curves}
    best = meter.cost({**zeros, **at_max})
    if not curves or best > goal:
        raise ValueError(f"target {key}={value:g} cannot be reached: pruning every group at max_ratio "
                         f"{max_ratio:g} still {meter.describe(best, dense)} (target {meter.describe(goal, dense)})")

    state = {c.id: 0 for c in curves}
    by_id = {c.id: c for c in curves}
    history: dict[int, list[int]] = {c.id: [] for c in curves}
    moves: list[tuple[int, int]] = []  # the greedy's steps in order: (group id, new grid index)

    def predicted() -> float:
        return sum(c.save(c.n[state[c.id]]) for c in curves)

    def advance(need: float, at_least_one: bool) -> bool:
        moved = False
        while predicted() < need or (at_least_one and not moved):
            pick = None
            for c in curves:
                mv = c.next_move(state[c.id])
                if mv is not None and (pick is None or (mv[1], -mv[2], c.id) < (pick[1][1], -pick[1][2], pick[0].id)):
                    pick = (c, mv)
            if pick is None:
                return moved
            c, (k, _, _) = pick
            history[c.id].append(state[c.id])
            state[c.id] = k
            moves.append((c.id, k))
            moved = True
        return True

    def replay(n: int) -> None:
        """The state after the greedy's first ``n`` steps."""
        state.update({c.id: 0 for c in curves})
        for gid, k in moves[:n]:
            state[gid] = k

    def ratios_now() -> dict[int, float]:
        return {**zeros, **{gid: grid[k] for gid, k in state.items()}}

    need = meter.initial_need(dense, goal)
    if key in LATENCY_TARGETS and dense > best:  # calibrate the table's milliseconds to the measured model's
        need *= sum(c.save(c.n[c.top]) for c in curves) / (dense - best)
    cost = dense
    over = 0  # moves[:over] measured above the goal
    for rounds in range(MAX_ROUNDS):
        advance(need, at_least_one=rounds > 0)
        cost = meter.cost(ratios_now())
        if cost <= goal:
            break
        over = len(moves)
        if all(by_id[gid].next_move(k) is None for gid, k in state.items()):
            # the greedy ran out of steps short of the target: every group at its largest ratio meets it
            for c in curves:
                if state[c.id] != c.top:
                    history[c.id].append(state[c.id])
                    state[c.id] = c.top
                    moves.append((c.id, c.top))
            cost = meter.cost(ratios_now())
            break
        have, real = predicted(), dense - cost
        need = have + (cost - goal) * (have / real if real > 0 and have > 0 else 1.0)
    if cost > goal:
        raise ValueError(f"target {key}={value:g} not reached: the allocation still {meter.describe(cost, dense)} "
                         f"after {MAX_ROUNDS} corrections (target {meter.describe(goal, dense)})")

    if not meter.deterministic and cost <= goal:
        # a latency prediction can overshoot (layers timed alone, a noisy calibration): the shortest prefix of
        # the greedy's steps whose measured latency meets the goal, searched down from the end, then bisected
        def shortest(lo: int, hi: int) -> int:
            gap = 1
            while hi - lo > 1:
                mid = max((lo + hi) // 2, hi - gap)
                replay(mid)
                if meter.cost(ratios_now()) <= goal:
                    hi, gap = mid, gap * 2
                else:
                    lo, gap = mid, len(moves)
            return hi

        hi = shortest(over, len(moves))
        for _ in range(CONFIRMATIONS):  # one lucky measurement is not enough: the prefix found is timed again
            replay(hi)
            if hi == len(moves) or meter.cost(ratios_now()) <= goal:
                break
            hi = shortest(hi, len(moves))
        replay(hi)
    if meter.deterministic:
        # undo the least efficient steps the measured target does not need
        rejected: set[int] = set()
        while True:
            undo = []
            for gid, hist in history.items():
                if hist and gid not in rejected:
                    c, k, prev = by_id[gid], state[gid], hist[-1]
                    d_save = c.save(c.n[k]) - c.save(c.n[prev])
                    undo.append(((c.loss(c.n[k]) - c.loss(c.n[prev])) / d_save if d_save > 0 else math.inf, gid))
            if not undo:
                break
            _, gid = max(undo)
            k = state[gid]
            state[gid] = history[gid][-1]
            if meter.cost(ratios_now()) <= goal:
                history[gid].pop()
            else:
                state[gid] = k
                rejected.add(gid)
    result = ratios_now()

    if evaluate is not None:
        u = uniform_ratio(model, example_inputs, target, granularity=granularity, criterion=criterion, graph=graph,
                          max_ratio=max_ratio, latency_kwargs=latency_kwargs, _meter=meter, **kw)
        uniform = {gid: u for gid in gids}
        q_uniform = meter.quality(evaluate, uniform)
        if meter.quality(evaluate, result) <= q_uniform + min_gain:
            return uniform
    return result


def uniform_ratio(model: nn.Module, example_inputs: ExampleInputs, target: Mapping[str, float], *,
                  granularity: str = "channel", criterion: str = "l2", graph: Graph | None = None,
                  max_ratio: float = 0.9, tol: float = 1e-3, latency_kwargs: Mapping[str, Any] | None = None,
                  latency_reference: nn.Module | None = None, latency_tolerance: float = 0.0,
                  _meter: _Meter | None = None, **plan_kwargs: Any) -> float:
    """The smallest single ratio (within ``tol``) whose plan ``sc.plan(model, x, ratio, ...)`` meets ``target``.

    ``target``, ``latency_reference`` and ``latency_tolerance`` as in ``allocate``; found by bisection on
    the measured cost of the plan. Raises ``ValueError`` when even ``max_ratio`` does not meet it;
    returns 0.0 when the dense model does.
    """
    check_module(model)
    check_inputs(example_inputs)
    key, value = check_target(target)
    _check_steps(tol, max_ratio, "tol")
    bad = sorted(set(plan_kwargs) & set(RESERVED))
    if bad:
        raise ValueError(f"uniform_ratio sets {bad} itself; pass other sc.plan arguments only")
    meter = _meter
    if meter is None:
        check_graph(graph)
        graph = graph if graph is not None else trace(model, example_inputs, outputs=plan_kwargs.get("outputs"))
        meter = _Meter(model, example_inputs, graph, key, granularity, criterion, plan_kwargs, latency_kwargs,
                       latency_reference, latency_tolerance)
    dense, goal = meter.dense(), meter.goal(value)
    if dense <= goal:
        return 0.0
    if meter.cost_uniform(max_ratio) > goal:
        raise ValueError(f"target {key}={value:g} cannot be reached with a uniform ratio up to max_ratio "
                         f"{max_ratio:g}: it {meter.describe(meter.cost_uniform(max_ratio), dense)}")
    lo, hi = 0.0, float(max_ratio)
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if meter.cost_uniform(mid) <= goal:
            hi = mid
        else:
            lo = mid
    return hi


def check_target(target: Mapping[str, float]) -> tuple[str, float]:
    """Validate a cost target; returns ``(key, value)``."""
    if not isinstance(target, Mapping):
        raise TypeError(f"target must be a dict such as {{'macs': 0.5}}, got {type(target).__name__}")
    if len(target) != 1:
        raise ValueError(f"target must have exactly one key among {list(TARGETS)}, got {dict(target)!r}")
    key, value = next(iter(target.items()))
    if key not in TARGETS:
        raise ValueError(f"unknown target {key!r}: use one of {list(TARGETS)} ('macs'/'params'/'latency': the "
                         f"fraction of the dense model's to keep, e.g. 0.5; 'latency_ms': milliseconds)")
    if key == "latency_ms":
        return key, check_real(value, "target 'latency_ms' (milliseconds)", "(0, inf)")
    return key, check_real(value, f"target {key!r} (the fraction of the dense model's {key} to keep)", "(0, 1]")


class _Curve:
    """One group's predicted loss and saving, as functions of the number of elements it loses."""

    def __init__(self, g: GroupSensitivity, baseline: float, saved_of: str, grid: list[float], round_to: int,
                 staircase: dict[int, float] | None = None, scale: float = 1.0, rounding: str = "down"):
        self.id, self.size, self.staircase, self.scale = g.id, g.size, staircase, scale
        saved = getattr(g, saved_of)
        pts: dict[int, tuple[float, float]] = {0: (0.0, 0.0)}
        for r in sorted(g.quality):
            n = int(g.removed.get(r, 0))
            if n > 0 and n not in pts:
                pts[n] = (baseline - g.quality[r], float(saved.get(r, 0)))
        self.xs = sorted(pts)
        self.losses = [pts[n][0] for n in self.xs]
        self.saves = [pts[n][1] for n in self.xs]
        self.n = [g.size - kept_count(g.size, removed_count(r, g.size, rounding), round_to) for r in grid]
        self.top = max(range(len(grid)), key=lambda k: (self.n[k], -k))  # first grid point at the most removed
        self.usable = len(self.xs) > 1 and self.saves[-1] > 0 and self.n[self.top] > 0

    def loss(self, n: int) -> float:
        xs, ys = self.xs, self.losses
        if n >= xs[-1]:
            slope = max(0.0, (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]))
            return ys[-1] + slope * (n - xs[-1])
        return _interp(xs, ys, n)

    def save(self, n: int) -> float:
        if self.staircase is not None:
            return ms_saved(self.staircase, self.size, n)
        if n >= self.xs[-1]:
            return self.scale * self.saves[-1] * n / self.xs[-1]
        return self.scale * _interp(self.xs, self.saves, n)

    def next_move(self, k: int) -> tuple[int, float, float] | None:
        """(next grid index that removes more, loss per unit saved, saving) or None at the top."""
        for k2 in range(k + 1, len(self.n)):
            if self.n[k2] > self.n[k]:
                d_save = self.save(self.n[k2]) - self.save(self.n[k])
                if d_save <= 0:
                    continue  # a flat (or noisy) stretch of a measured staircase: look past it
                return k2, (self.loss(self.n[k2]) - self.loss(self.n[k])) / d_save, d_save
        return None


class _Meter:
    """Measures the real cost of plans (cached), for one model, graph and target kind."""

    def __init__(self, model: nn.Module, x: ExampleInputs, graph: Graph, key: str, granularity: str,
                 criterion: str, plan_kwargs: Mapping[str, Any], latency_kwargs: Mapping[str, Any] | None,
                 reference: nn.Module | None = None, tolerance: float = 0.0):
        tolerance = check_real(tolerance, "latency_tolerance", "[0, 1)")
        if tolerance and key not in LATENCY_TARGETS:
            raise ValueError(f"latency_tolerance applies to latency targets, not to {key!r}")
        self.tolerance = float(tolerance)
        if reference is not None:
            check_module(reference, "latency_reference")
            if key != "latency":
                raise ValueError(f"latency_reference applies to the 'latency' target (a fraction of the reference's "
                                 f"latency), not to {key!r}")
        self.model, self.x, self.graph, self.key = model, x, graph, key
        self.reference = model if reference is None else reference
        self.granularity, self.criterion, self.kw = granularity, criterion, dict(plan_kwargs)
        if latency_kwargs is not None and not isinstance(latency_kwargs, Mapping):
            raise TypeError(f"latency_kwargs must be a dict of measure_latency arguments or None, "
                            f"got {type(latency_kwargs).__name__}")
        lk = dict(latency_kwargs or {})
        unknown = sorted(set(lk) - set(LATENCY_KWARGS))
        if unknown:
            raise ValueError(f"latency_kwargs takes {list(LATENCY_KWARGS)} (measure_latency), got {unknown}")
        self.latency_kwargs = lk
        self.deterministic = key not in LATENCY_TARGETS
        self._cache: dict[tuple, float] = {}
        self._dense: float | None = None
        self._unit: float | None = None

    def _measure(self, m: nn.Module) -> float:
        if self.key == "macs":
            return float(count_macs(m, self.x).total)
        if self.key == "params":
            return float(count_params(m))
        if self.key == "latency":
            # timed back to back with the reference in every round: the median ratio, in the reference's ms
            if m is self.reference:
                return self.unit()
            kw = {"rounds" if k == "runs" else k: v for k, v in self.latency_kwargs.items()}
            return latency_ratio(m, self.reference, self.x, **kw).median * self.unit()
        return float(measure_latency(m, self.x, **self.latency_kwargs).median_ms)

    def unit(self) -> float:
        """The reference's measured milliseconds: ``{"latency": f}`` costs are ratios to it, in its unit."""
        if self._unit is None:
            self._unit = float(measure_latency(self.reference, self.x, **self.latency_kwargs).median_ms)
        return self._unit

    def dense(self) -> float:
        if self._dense is None:
            self._dense = self._measure(self.model)
        return self._dense

    def goal(self, value: float) -> float:
        """The largest cost that meets the target (latency: the asked one plus the tolerance)."""
        if self.key == "latency":
            return value * self.unit() * (1 + self.tolerance)
        if self.key == "latency_ms":
            return value * (1 + self.tolerance)
        return value * self.dense()

    def initial_need(self, dense: float, goal: float) -> float:
        """Predicted saving to aim for first, in the target's unit (milliseconds for latency)."""
        return dense - goal

    def _plan(self, ratio: float, group_ratios: Mapping[int, float] | None):
        with warnings.catch_warnings():  # a bisection tries small ratios on purpose
            warnings.simplefilter("ignore", RoundingWarning)
            return plan(self.model, self.x, ratio, granularity=self.granularity, criterion=self.criterion,
                        group_ratios=group_ratios, graph=self.graph, **self.kw)

    def cost(self, group_ratios: Mapping[int, float]) -> float:
        key = ("groups",) + tuple(sorted((g, r) for g, r in group_ratios.items() if r > 0))
        if key not in self._cache or not self.deterministic:
            self._cache[key] = self._measure(apply(self.model, self._plan(0.0, dict(group_ratios))))
        return self._cache[key]

    def cost_uniform(self, ratio: float) -> float:
        key = ("uniform", ratio)
        if key not in self._cache or not self.deterministic:
            self._cache[key] = self._measure(apply(self.model, self._plan(ratio, None)))
        return self._cache[key]

    def quality(self, evaluate: Callable[[nn.Module], float], group_ratios: Mapping[int, float]) -> float:
        q = float(evaluate(apply(self.model, self._plan(0.0, dict(group_ratios)))))
        return q if math.isfinite(q) else -math.inf

    def describe(self, cost: float, dense: float) -> str:
        if self.key == "latency_ms":
            return f"runs in {cost:.3g} ms (dense {dense:.3g} ms)"
        if self.key == "latency":
            whose = "dense model's" if self.reference is self.model else "reference model's"
            return f"runs at {cost / self.unit():.1%} of the {whose} latency (timed back to back with it)"
        return f"keeps {cost / dense:.1%} of the dense {self.key} ({cost:.4g} of {dense:.4g})"


def _as_sensitivity(sens: Sensitivity | Mapping[str, Any]) -> Sensitivity:
    if isinstance(sens, Sensitivity):
        return sens
    if isinstance(sens, Mapping):
        return Sensitivity.from_dict(sens)
    raise TypeError(f"sens must be a Sensitivity (or its to_dict()), got {type(sens).__name__}")


def _check_steps(step: float, max_ratio: float, name: str = "step") -> None:
    max_ratio = check_real(max_ratio, "max_ratio", "(0, 1)")  # a Python float: its repr writes the interval
    check_real(step, f"{name} (at most max_ratio={max_ratio:g})", f"(0, {max_ratio!r}]")


def _plan_kwargs(sens: Sensitivity, given: Mapping[str, Any]) -> dict[str, Any]:
    bad = sorted(set(given) & set(RESERVED))
    if bad:
        raise ValueError(f"allocate sets {bad} itself; pass other sc.plan arguments only (round_to, ignore, seed...)")
    kw = dict(sens.plan_kwargs or sens.settings.get("plan_kwargs", {}))
    kw.update(given)
    return kw


def _check_groups(sens: Sensitivity, graph: Graph, granularity: str) -> None:
    by_id = {g.id: g for g in graph.groups}
    for gs in sens.groups:
        g = by_id.get(gs.id)
        if g is None or g.size != gs.size or g.kind != gs.kind or g.kind != granularity:
            raise ValueError(f"the sensitivity does not match this model: its group {gs.id} ({gs.label}, "
                             f"{gs.size} {gs.kind}s) is not a {granularity} group of the traced "
                             f"{graph.model_class} ({'absent' if g is None else f'{g.size} {g.kind}s'})")
    if not sens.groups:
        raise ValueError("the sensitivity has no groups to allocate over")


def _grid(step: float, max_ratio: float) -> list[float]:
    k_max = math.floor(max_ratio / step + 1e-9)
    grid = [round(k * step, 10) for k in range(k_max + 1)]
    if max_ratio - grid[-1] > 1e-9:
        grid.append(float(max_ratio))
    return grid


def _interp(xs: list[int], ys: list[float], x: float) -> float:
    for i in range(1, len(xs)):
        if x <= xs[i]:
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]
