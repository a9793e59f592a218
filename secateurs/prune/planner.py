"""From a model to a Plan: score groups, allocate how many elements each loses, verify it applies."""
from __future__ import annotations

import contextvars
import copy
import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .._gc import gc_paused
from .._inputs import (
    ExampleInputs,
    call_model,
    check_bool,
    check_inputs,
    check_module,
    check_real,
    check_round_to,
    check_seed,
    run_forward,
)
from .._outputs import OutputKeys, check_outputs, select_outputs
from ..criteria import Context, check_data, get_criterion
from ..graph import Graph, Group, check_graph, set_mode, trace
from ..graph import layout as L
from ..graph.walk import Tree, walk
from .elements import default_targets, global_masks, local_masks, nm_masks, pack, parse_nm
from .experts import expert_floors
from .plan import Plan
from .snap import Timer, check_timer, default_table, snap_widths
from .surgery import apply, apply_derived
from .validate import model_signature, seal

GRANULARITIES = ("channel", "head", "unstructured", "N:M", "expert")
STRUCTURED = ("channel", "head", "expert")  # granularities that remove traced groups (Group.kind)
FLOOR = 0.01  # global element sparsity keeps at least this fraction of every tensor
SCOPES = ("local", "global")
ROUNDINGS = ("down", "nearest", "up")  # how ratio x size becomes a count of elements to remove


class RoundingWarning(UserWarning):
    """Groups too small for their ratio lose nothing (counts rounded down); see ``plan``'s ``rounding``."""


def plan(model: nn.Module, example_inputs: ExampleInputs, ratio: float = 0.5, *,
         granularity: str = "channel", criterion: str = "l2", scope: str = "local",
         ignore: Iterable[str] = (), round_to: int | str = 1, ratios: Mapping[str, float] | None = None,
         seed: int = 0, params: Iterable[str] = (), batches: Iterable[Any] | None = None,
         loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
         group_ratios: Mapping[int, float] | None = None, verify: bool = True,
         graph: Graph | None = None, latency_table: Timer | None = None, outputs: OutputKeys = None,
         rounding: str = "down") -> Plan:
    """Decide what to remove (channels, heads, experts or single weights); the model is not modified.

    ``granularity``: "channel" (channels and neurons), "head" (attention heads), "expert" (whole
    experts of mixture-of-experts layers; each router keeps at least its top_k), "unstructured"
    (single weights) or "N:M" such as "2:4" (keep N of every M weights along the input dimension;
    ``ratio`` is then implied). ``ratio`` is the fraction of each group's (or tensor's) elements to
    remove (``scope="local"``) or of all elements, ranked together (``scope="global"``; element
    sparsity keeps at least 1% of every tensor). ``ratios`` overrides ``ratio`` for groups produced
    by the named modules (dotted prefixes, the longest match wins), ``group_ratios`` for single
    groups by id (``trace(...).groups``; what sensitivity-driven allocation uses). ``ignore`` names modules whose
    parameters are left untouched; ``params`` names extra tensors to mask. Criteria that need data
    (gradients) take ``batches`` and ``loss_fn(model, batch) -> loss``. With ``verify`` a channel
    plan is applied to a copy and run once; groups whose removal breaks the forward are left out
    and listed in ``plan.skipped``. ``outputs`` names the outputs that must keep their shape (see
    ``trace``; e.g. ``["logits"]`` for a model that also returns hidden states): verification compares
    those only, and the pruned model's other outputs may come out narrower. ``rounding`` turns
    ``ratio x size`` into a count per group: "down" (default), "nearest" or "up"; a group smaller than
    ``1/ratio`` (2 heads at ratio 0.25) loses nothing rounded down (a warning names such head groups)
    and one element rounded up; ``scope="global"`` instead spends one budget over all groups.
    """
    check_module(model)
    check_inputs(example_inputs)
    ratio = check_real(ratio, "ratio", "[0, 1)")
    graph, verify = check_graph(graph), check_bool(verify, "verify")
    nm = parse_nm(granularity) if isinstance(granularity, str) else None
    if granularity not in STRUCTURED + ("unstructured",) and nm is None:
        raise ValueError(f"granularity must be one of {list(GRANULARITIES)} (N:M as numbers, e.g. '2:4'), "
                         f"got {granularity!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {list(SCOPES)}, got {scope!r}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {list(ROUNDINGS)}, got {rounding!r}")
    crit = get_criterion(criterion)
    seed = check_seed(seed)
    ctx = Context(seed=seed, batches=batches, loss_fn=loss_fn)
    check_data(crit, ctx)
    round_to = check_round_to(round_to, "round_to")
    auto = round_to == "auto"
    if auto and granularity not in GRANULARITIES[:2]:
        raise ValueError(f"round_to='auto' snaps channel or head widths; granularity {granularity!r} has none")
    if latency_table is not None and not auto:
        raise ValueError("latency_table is used by round_to='auto' only; pass round_to='auto' with it")
    check_timer(latency_table)
    outputs = check_outputs(outputs)
    if graph is not None and outputs is not None and graph.outputs != outputs:
        raise ValueError(f"outputs={outputs!r} differs from the outputs the graph was traced with "
                         f"({graph.outputs!r}); trace with the same outputs, or leave outputs out")
    tree = walk(model)
    names = {n for n, _ in tree.modules}
    ignore = _check_names(ignore, names, "ignore")
    for arg, value in (("ratios", ratios), ("group_ratios", group_ratios)):
        if value is not None and not isinstance(value, Mapping):
            raise TypeError(f"{arg} must be a dict ({'module name' if arg == 'ratios' else 'group id'} -> ratio) "
                            f"or None, got {type(value).__name__}")
    ratios = dict(ratios or {})
    _check_names(ratios, names, "ratios")
    ratios = {k: check_real(v, f"ratios[{k!r}]", "[0, 1)") for k, v in ratios.items()}
    group_ratios = {g: check_real(r, f"group_ratios[{g!r}]", "[0, 1)") for g, r in dict(group_ratios or {}).items()}

    settings = dict(ratio=ratio, granularity=granularity, criterion=criterion, scope=scope,
                    round_to=round_to, seed=seed, ratios=ratios, ignore=sorted(ignore),
                    group_ratios={str(k): v for k, v in group_ratios.items()})
    if rounding != "down":
        settings["rounding"] = rounding
    with gc_paused():  # a walk of every module and tensor
        signature = model_signature(model, tree)
    if granularity == "unstructured" or nm is not None:
        if scope == "global" and ratios:
            raise ValueError("ratios (per-module ratios) apply to scope='local'; scope='global' uses ratio alone")
        _check_forward(model, example_inputs)
        p = _element_plan(model, crit, ctx, ratio, nm, scope, ignore, ratios, params, settings)
        seal(p, signature)
        return p
    if params:
        raise ValueError("params (extra tensors to mask) applies to element granularities: 'unstructured' or 'N:M'")
    graph = graph if graph is not None else trace(model, example_inputs, outputs=outputs)
    if graph.outputs is not None:
        settings["outputs"] = list(graph.outputs)
    with gc_paused():
        scores = crit.groups(model, graph, ctx)
    chosen = [g for g in graph.groups if g.kind == granularity and not _touches(g, ignore)]
    targets = {g.id: _ratio_for(g.producers, ratio, ratios) for g in chosen}
    for gid, r in group_ratios.items():
        if gid not in targets:
            raise ValueError(f"group_ratios names group {gid!r}, which is not a prunable {granularity} group "
                             f"of this model (valid ids: {sorted(targets)[:10]}...)")
        targets[gid] = r
    skipped: list[dict] = []
    step = 1 if auto else round_to
    table = (latency_table or default_table(example_inputs)) if auto else None
    warn = scope == "local" and rounding == "down"
    while True:
        with gc_paused():  # verification's forwards run with the collector as the user left it
            if scope == "local":
                removals = _local(chosen, scores, targets, step, _factor_sets(graph, chosen), rounding)
            else:
                removals = _global(chosen, scores, targets, step, normalise=not crit.comparable, rounding=rounding)
            if warn:  # once, on the first allocation (before verification sets failing groups to 0)
                _warn_floored([g for g in chosen if g.id not in removals and g.id not in group_ratios], targets)
                warn = False
            if auto:
                removals = _snapped(model, example_inputs, graph, removals, scores, table, settings)
            removals = _fitted(chosen, removals, scores, step, expert_floors(model, graph.syncs))
            p = _make(graph, removals, settings, skipped)
            seal(p, signature)
        if not verify or not removals:
            return p
        bad = _failing(model, example_inputs, graph, p, sorted(removals))
        if not bad:
            return p
        for gid, why in bad:
            skipped.append({"id": gid, "reason": why})
            targets[gid] = 0.0


def _snapped(model: nn.Module, example_inputs: ExampleInputs, graph: Graph, removals: dict[int, list[int]],
             scores: dict[int, torch.Tensor], table: Timer, settings: dict) -> dict[int, list[int]]:
    """Removals with each pruned group's kept width snapped to a fast one; the choices go in ``settings``."""
    sizes = {g.id: g.size for g in graph.groups}
    asked = {gid: sizes[gid] - len(r) for gid, r in removals.items()}
    snaps = snap_widths(model, example_inputs, graph, asked, table)
    out = dict(removals)
    for gid, s in snaps.items():
        out[gid] = _lowest(scores[gid], sizes[gid] - s.kept)
        if not out[gid]:
            del out[gid]
    settings["latency"] = {"table": getattr(table, "key", type(table).__name__),
                           "groups": {str(gid): s.record() for gid, s in sorted(snaps.items())},
                           "gain_ms": round(sum(s.ms_asked - s.ms_kept for s in snaps.values()), 6)}
    return out


def _fitted(groups: list[Group], removals: dict[int, list[int]], scores: dict[int, torch.Tensor], round_to: int,
            floors: dict[int, tuple[int, str]]) -> dict[int, list[int]]:
    """Removals that keep what kernels and routers need: widths in multiples of ``Group.multiple`` (and
    ``round_to``), at least top_k experts per router (``floors``). Groups that cannot shrink keep all."""
    out = {}
    for g in groups:
        if g.id not in removals:
            continue
        step = math.lcm(round_to, g.multiple)
        keep = max(g.size - len(removals[g.id]), floors.get(g.id, (1, ""))[0])
        keep = min(g.size, math.ceil(keep / step) * step)
        if keep == g.size - len(removals[g.id]):
            out[g.id] = removals[g.id]
        elif keep < g.size:
            out[g.id] = _lowest(scores[g.id], g.size - keep)
    return out


def _check_forward(model: nn.Module, example_inputs: ExampleInputs) -> None:
    """Run the model once (eval, no grad) so that wrong example inputs fail here, clearly; modes restored."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            run_forward(model, example_inputs)
    finally:
        for m, training in modes:
            m.training = training


def _check_names(given: Iterable[str], names: set[str], what: str) -> set[str]:
    if isinstance(given, str):
        raise TypeError(f"{what} must be a list of module names, got the string {given!r}")
    out = set()
    for n in given:
        if n not in names:
            close = sorted(m for m in names if m and (n in m or m in n))[:5]
            raise ValueError(f"{what} names module {n!r}, which the model does not have"
                             + (f" (similar: {close})" if close else ""))
        out.add(n)
    return out


def _inside(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _touches(g: Group, ignore: set[str]) -> bool:
    return any(_inside(t.rpartition(".")[0], ig) for t, _, _ in g.tensors for ig in ignore)


def _ratio_for(modules: list[str], default: float, ratios: dict[str, float]) -> float:
    """The ratio of the longest ``ratios`` key that contains one of ``modules``, else ``default``."""
    best, best_len = default, -1
    for key, r in ratios.items():
        if any(_inside(p, key) for p in modules) and len(key) > best_len:
            best, best_len = r, len(key)
    return best


def removed_count(ratio: float, size: int, rounding: str = "down") -> int:
    """How many of ``size`` elements ``ratio`` asks to remove, rounded as ``rounding`` says (see ``ROUNDINGS``)."""
    exact = ratio * size
    if rounding == "up":
        return int(math.ceil(exact - 1e-9))
    if rounding == "nearest":
        return int(math.floor(exact + 0.5))
    return int(math.floor(exact + 1e-9))


def _warn_floored(groups: list[Group], targets: dict[int, float]) -> None:
    """Warn about head groups (that lost nothing) too small for their ratio to remove even one head."""
    small = [g for g in groups if g.kind == "head" and targets[g.id] > 0 and removed_count(targets[g.id], g.size) == 0]
    if not small:
        return
    shown = "; ".join(f"group {g.id} ({', '.join(g.producers[:1]) or '?'}): {g.size} heads, "
                      f"{targets[g.id] * g.size:.2g} asked, {g.size} kept" for g in small[:6])
    more = f"; and {len(small) - 6} more" if len(small) > 6 else ""
    warnings.warn(f"{len(small)} head group(s) lose no head: the ratio asks for less than one and counts round "
                  f"down ({shown}{more}). Pass rounding='up' to remove at least one head from each, or "
                  f"scope='global' to spend one head budget over all groups", RoundingWarning, stacklevel=3)


def kept_count(size: int, n_remove: int, round_to: int) -> int:
    """How many of ``size`` elements a group keeps when asked to drop ``n_remove``: at least one, rounded
    up to a multiple of ``round_to`` (never above ``size``)."""
    keep = max(size - n_remove, 1)
    keep = min(size, math.ceil(keep / round_to) * round_to)
    return keep


def _lowest(score: torch.Tensor, n: int) -> list[int]:
    order = torch.argsort(score, stable=True)
    return sorted(order[:n].tolist())


def _local(groups: list[Group], scores: dict[int, torch.Tensor], targets: dict[int, float],
           round_to: int, factor_sets: list[list[int]] = (), rounding: str = "down") -> dict[int, list[int]]:
    keeps = {g.id: kept_count(g.size, removed_count(targets[g.id], g.size, rounding), round_to) for g in groups}
    sizes = {g.id: g.size for g in groups}
    decided: set[int] = set()
    for ids in factor_sets:  # largest products first; a factor shared with one decided already keeps its count
        todo = [i for i in ids if i not in decided]
        if not todo or len({targets[i] for i in ids}) != 1:
            continue
        fixed = math.prod(keeps[i] for i in ids if i in decided)
        whole = math.prod(sizes[i] for i in ids)
        keeps.update(zip(todo, _joint_keep([sizes[i] for i in todo], fixed, whole, targets[ids[0]], round_to,
                                           rounding)))
        decided.update(todo)
    out = {}
    for g in groups:
        if keeps[g.id] < g.size:
            out[g.id] = _lowest(scores[g.id], g.size - keeps[g.id])
    return out


def _factor_sets(graph: Graph, chosen: list[Group]) -> list[list[int]]:
    """Sets of chosen groups that are factors of one product dimension, largest first.

    A GroupNorm or grouped convolution splits a layer's channels into (groups x per-group); a
    ratio is the fraction of the layer's channels removed, so the factors share one budget.
    """
    ids = {g.id for g in chosen}
    found: set[tuple[int, ...]] = set()

    def walk(tree: L.Layout) -> None:
        if tree[0] == "prod":
            members = tuple(sorted(set(gid for c in tree[1] for gid in _factor_groups(c)) & ids))
            if len(members) > 1:
                found.add(members)
        if tree[0] in ("prod", "cat"):
            for c in tree[1]:
                walk(c)

    for dims in graph.layouts.values():
        for tree in dims.values():
            walk(tree)
    return [list(m) for m in sorted(found, key=lambda m: (-len(m), m))]


def _factor_groups(tree: L.Layout) -> list[int]:
    """Groups that are direct factors of a product (through nested products, not concatenations)."""
    if tree[0] == "g":
        return [int(tree[1])]
    if tree[0] == "prod":
        return [gid for c in tree[1] for gid in _factor_groups(c)]
    return []


def _joint_keep(sizes: list[int], fixed: int, whole: int, ratio: float, round_to: int,
                rounding: str = "down") -> list[int]:
    """Kept counts for factors of ``sizes`` so that, times the ``fixed`` count kept by factors decided
    before, the product keeps ``1 - ratio`` of ``whole`` (rounded like one group), spread evenly."""
    target = kept_count(whole, removed_count(ratio, whole, rounding), round_to)
    share = target / whole * (whole // math.prod(sizes)) / fixed  # what these factors together keep
    even = min(1.0, share) ** (1 / len(sizes))
    heads, last = sizes[:-1], sizes[-1]
    if math.prod(heads) > 20000:  # too many combinations to search: each factor keeps the same share
        return [max(1, round(n * even)) for n in sizes]
    best, best_key = list(sizes), None
    for combo in itertools.product(*(range(1, n + 1) for n in heads)):
        rest = math.prod(combo) * fixed
        for k in {max(1, min(last, target // rest)), max(1, min(last, -(-target // rest)))}:
            ks = list(combo) + [k]
            kept = rest * k
            key = (abs(kept - target), kept % round_to != 0,
                   sum((math.log(c / n) - math.log(even)) ** 2 for c, n in zip(ks, sizes)))
            if best_key is None or key < best_key:
                best, best_key = ks, key
    return best


def _global(groups: list[Group], scores: dict[int, torch.Tensor], targets: dict[int, float],
            round_to: int, normalise: bool = True, rounding: str = "down") -> dict[int, list[int]]:
    """One threshold over all groups' scores; each group keeps at least ``round_to``.

    Scores are divided by their group's mean magnitude first, unless the criterion's scores are
    already comparable across groups (LAMP).
    """
    live = [g for g in groups if targets[g.id] > 0]
    if not live:
        return {}
    total = sum(g.size for g in live)
    budget = removed_count(max(targets[g.id] for g in live), total, rounding)
    pool = []
    for g in live:
        s = scores[g.id]
        norm = s / (s.abs().mean() + 1e-12) if normalise else s
        pool += [(float(v), g.id, i) for i, v in enumerate(norm.tolist())]
    pool.sort()
    count: dict[int, int] = {}
    sizes = {g.id: g.size for g in live}
    for _, gid, _ in pool:
        if budget <= 0:
            break
        if sizes[gid] - count.get(gid, 0) > max(1, min(round_to, sizes[gid])):
            count[gid] = count.get(gid, 0) + 1
            budget -= 1
    out = {}
    for g in live:
        keep = kept_count(g.size, count.get(g.id, 0), round_to)
        if keep < g.size:
            out[g.id] = _lowest(scores[g.id], g.size - keep)
    return out


def _element_plan(model: nn.Module, crit, ctx, ratio: float, nm: tuple[int, int] | None, scope: str,
                  ignore: set[str], ratios: dict[str, float], params: Iterable[str], settings: dict) -> Plan:
    """A plan of element masks (unstructured or N:M) over Linear/Conv/Embedding weights and ``params``."""
    named = dict(model.named_parameters())
    extra = list(params)
    for n in extra:
        if n not in named:
            raise ValueError(f"params names parameter {n!r}, which the model does not have")
    names = [n for n in default_targets(model) if not any(_inside(n.rpartition(".")[0], ig) for ig in ignore)]
    names += [n for n in extra if n not in names]
    if not names:
        raise ValueError(f"granularity {settings['granularity']!r} found no weights to mask in "
                         f"{type(model).__name__}: it has no Linear, Conv or Embedding weights outside ignore "
                         "(name other parameters with params=[...])")
    scores = {n: s.detach() for n, s in crit.elements(model, names, ctx).items()}
    skipped: list[dict] = []
    if nm is not None:
        masks, bad = nm_masks(scores, *nm)
        skipped = [{"tensor": n, "reason": why} for n, why in bad.items()]
    elif scope == "global":
        masks = global_masks(scores, ratio, FLOOR)
    else:
        masks = local_masks(scores, {n: _ratio_for([n.rpartition(".")[0]], ratio, ratios) for n in scores})
    entries = {n: {"shape": list(m.shape), "bits": pack(m)} for n, m in masks.items() if not bool(m.all())}
    shapes = {n: list(named[n].shape) for n in entries}
    return Plan(type(model).__name__, [], {}, shapes, [], dict(settings, params=extra), skipped, entries)


def _make(graph: Graph, removals: dict[int, list[int]], settings: dict,
          skipped: list[dict]) -> Plan:
    touched = set(removals)
    layouts = {}
    for name, dims in graph.layouts.items():
        sel = {str(d): t for d, t in dims.items() if L.groups_in(t) & touched}
        if sel:
            layouts[name] = sel
    syncs = [s for s in graph.syncs if any(L.groups_in(t) & touched for t in s["layouts"])]
    groups = [{"id": g.id, "size": g.size, "kind": g.kind, "producers": g.producers,
               "remove": removals.get(g.id, []), **({"multiple": g.multiple} if g.multiple > 1 else {})}
              for g in graph.groups]
    shapes = {n: graph.shapes[n] for n in layouts if n in graph.shapes}
    left = [{"tensors": u.tensors, "reason": f"left unpruned by the trace: {u.reason}"} for u in graph.unsupported]
    return Plan(graph.model_class, groups, layouts, shapes, syncs, dict(settings), left + list(skipped))


# Set by ``prune`` around its ``plan`` call: verification leaves the pruned model of the returned plan here.
_VERIFIED: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("secateurs_verified", default=None)


def _state(model: nn.Module, tree: Tree | None = None) -> list[tuple]:
    """Every tensor's storage, in-place version counter and shape (what a forward could have changed).
    ``tree``: ``walk(model)``, if made already."""
    tree = tree if tree is not None else walk(model)
    return [(k, v.data_ptr(), v._version, tuple(v.shape)) for k, v in tree.params + tree.buffers]


def _output_shapes(model: nn.Module, example_inputs: ExampleInputs, train: bool,
                   outputs: list[str | int] | None) -> list[list[int]]:
    set_mode(model, train)
    with torch.no_grad():
        return [list(t.shape) for t in select_outputs(call_model(model, example_inputs), outputs)]


def _failing(model: nn.Module, example_inputs: ExampleInputs, graph: Graph, p: Plan,
             gids: list[int]) -> list[tuple[int, str]]:
    """Groups whose removal breaks the forward (found by bisection); empty when the plan applies.

    When the whole plan applies, the pruned model it was checked on is offered to ``prune`` (see
    ``_VERIFIED``), which then returns it instead of running the same surgery again.
    """

    def error(subset: list[int]) -> str | None:
        sub = copy.copy(p)
        sub.groups = [dict(g, remove=g["remove"] if g["id"] in subset else []) for g in p.groups]
        keeper = _VERIFIED.get() if subset is gids else None
        try:
            pruned = apply_derived(model, sub)
            before = _state(pruned) if keeper is not None else None
            for mode, expected in graph.output_shapes.items():
                got = _output_shapes(pruned, example_inputs, mode == "train", graph.outputs)
                if got != expected:
                    return f"output shapes changed from {expected} to {got}"
        except Exception as exc:  # noqa: BLE001 - any failure marks the group as unprunable
            return f"forward fails once removed: {type(exc).__name__}: {str(exc)[:200]}"
        if keeper is not None:
            keeper.clear()  # a plan the loop replaced
            after = walk(pruned)
            if _state(pruned, after) == before:  # the forwards changed no tensor: as apply(model, p) makes it
                flags = {n: m.training for n, m in walk(model).modules}
                for n, m in after.modules:
                    m.training = flags.get(n, m.training)
                keeper.update(plan=p, model=pruned)
        return None

    def search(subset: list[int], why: str) -> list[tuple[int, str]]:
        if len(subset) == 1:
            return [(subset[0], why)]
        half = len(subset) // 2
        found = []
        for part in (subset[:half], subset[half:]):
            e = error(part)
            if e is not None:
                found += search(part, e)
        return found or [(g, why) for g in subset]

    first = error(gids)
    return [] if first is None else search(gids, first)


def prune(model: nn.Module, example_inputs: ExampleInputs, ratio: float = 0.5, **kwargs) -> nn.Module:
    """Plan and apply in one call, on a copy: physically smaller for channel/head granularities,
    masked (parametrizations; ``finalize`` bakes them) for unstructured and N:M. Takes ``plan``'s arguments.

    The result carries its plan (``carried_plan``), so ``sc.save(pruned, directory)`` needs nothing
    else; pruning an already pruned model carries none (plans do not compose: save with a plan of your own).
    """
    verified: dict[str, Any] = {}
    token = _VERIFIED.set(verified)
    try:
        p = plan(model, example_inputs, ratio, **kwargs)
    finally:
        _VERIFIED.reset(token)
    if verified.get("plan") is p:  # the model verification ran the whole plan on: the same surgery, done once
        pruned = verified["model"]
    else:
        pruned = apply(model, p, mode="mask" if p.masks else "remove")
    vars(pruned)[CARRIED] = None if CARRIED in vars(model) else p
    return pruned


CARRIED = "_secateurs_prune_plan"


def carried_plan(model: nn.Module) -> Plan | None:
    """The plan ``prune`` made ``model`` with, or None (not made by ``prune``, or pruned twice)."""
    p = vars(model).get(CARRIED)
    return p if isinstance(p, Plan) else None
