"""Trace a model once and read off its prunable groups.

``trace(model, example_inputs)`` runs the model under the channel tracer (in eval mode, and again
in train mode when some parameters only run in training, such as auxiliary heads), then turns the
tied index spaces into ``Group`` objects and per-tensor layouts.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._gc import gc_paused
from .._inputs import ExampleInputs, call_model, check_inputs, check_module, iter_tensors
from .._outputs import OutputKeys, check_outputs, select_outputs
from . import layout as L
from .rules import IGNORE, lookup
from .rules.moe import ALIGN
from .sizes import SYNC_ATTRS, config_attr, tag_attributes, untag_attributes
from .space import Incompatible, Space, block, find, leaves, unify
from .tracer import Literal, Tracer, TraceState, install_module_hooks
from .walk import named_modules, named_tensors

PROTECTED = ("model input", "model output", "embedding rows", "kernel", "spatial")
# Index dims that are not channels (q/k/v of a packed projection, LSTM gates, a pixel-shuffle factor):
# reported only when they are a whole tensor dimension, not a factor of one.
PIECES = ("unbind index", "stack index", "indexing a single position", "select in", "gate index", "repeat count",
          "stride index", "pixel_shuffle factor", "pixel_unshuffle factor", "chunk piece index")


@dataclass
class Group:
    """A set of coupled channels (or heads) that are pruned together, index by index."""

    id: int
    size: int
    kind: str  # "channel", "head" or "expert" (whole experts of a mixture-of-experts layer)
    tensors: list[tuple[str, int, str]]  # (parameter or buffer name, dim, role "out"/"in"/"")
    exact: bool = True  # False when a normalisation reduces over these channels
    producers: list[str] = field(default_factory=list)
    multiple: int = 1  # kept widths must be multiples of this (aligned kernels: grouped_mm, see rules/moe.py)

    def __str__(self) -> str:
        mods = _modules(self.tensors)
        shown = ", ".join(mods[:4]) + (f", ... ({len(mods)} modules)" if len(mods) > 4 else "")
        flag = "" if self.exact else " (normalised)"
        return f"group {self.id}: {self.size} {self.kind}s{flag} -> {shown}"


@dataclass
class Unsupported:
    """A place the tracer could not reason about; channels through it are left unpruned."""

    reason: str
    tensors: list[str]

    def __str__(self) -> str:
        return f"{self.reason} (keeps {', '.join(self.tensors[:3])}{', ...' if len(self.tensors) > 3 else ''})"


@dataclass
class Graph:
    """The result of tracing: groups, the layout of each parameter dimension, attribute syncs."""

    groups: list[Group]
    layouts: dict[str, dict[int, L.Layout]]  # tensor name -> dim -> layout (dims touching a group)
    shapes: dict[str, list[int]]  # every parameter and buffer of the model
    syncs: list[dict[str, Any]]  # {"module", "attr", "layouts"}: module attributes tied to groups
    unsupported: list[Unsupported]
    model_class: str
    modes: list[str]
    output_shapes: dict[str, list[list[int]]] = field(default_factory=dict)  # per traced mode (wanted outputs)
    outputs: list[str | int] | None = None  # the outputs kept intact (None: all)

    def __str__(self) -> str:
        lines = [f"Graph of {self.model_class}: {len(self.groups)} prunable groups "
                 f"({sum(g.kind == 'head' for g in self.groups)} of heads), traced in {'+'.join(self.modes)} mode"]
        lines += ["  " + str(g) for g in self.groups]
        if self.unsupported:
            lines.append(f"Left unpruned ({len(self.unsupported)}):")
            lines += ["  " + str(u) for u in self.unsupported]
        return "\n".join(lines)

    def group(self, gid: int) -> Group:
        return self.groups[gid]


def _modules(tensors: list[tuple[str, int, str]]) -> list[str]:
    seen: dict[str, None] = {}
    for name, _, r in tensors:
        seen.setdefault(name.rpartition(".")[0] + (f"({r})" if r else ""), None)
    return list(seen)


def check_graph(graph: Any) -> Graph | None:
    """``graph`` if it is None or a Graph; else a TypeError naming the parameter."""
    if graph is not None and not isinstance(graph, Graph):
        raise TypeError(f"graph must be a Graph made by sc.trace(model, example_inputs) or None, "
                        f"got {type(graph).__name__}")
    return graph


@gc_paused()
def trace(model: nn.Module, example_inputs: ExampleInputs, *, outputs: OutputKeys = None) -> Graph:
    """Trace ``model`` on ``example_inputs`` and return its dependency ``Graph``.

    Every output keeps its shape, unless ``outputs`` names the wanted ones (ModelOutput fields or
    dict keys such as ``["logits"]``, or tuple indices): then only those are protected, and the
    others (hidden states returned next to the logits) may shrink with the channels they carry.
    The model is not modified: it runs under ``torch.no_grad`` and its train/eval flags are restored.
    """
    check_module(model)
    check_inputs(example_inputs)
    wanted = check_outputs(outputs)
    state = TraceState()
    results = {"eval": _run(model, example_inputs, state, train=False, outputs=wanted)}
    modules = named_modules(model)  # as the forward left it (a lazy module's parameters are materialised)
    if _missed(state, modules):
        # Some parameters only run in training (auxiliary heads): trace a copy in train mode too, so
        # batch-norm statistics of the user's model stay untouched.
        results["train"] = _run(copy.deepcopy(model), example_inputs, state, train=True, outputs=wanted)
    for outs in results.values():
        for t in outs:
            for s in state.records[id(t)].spaces:
                block(s, "model output")
    graph = _build(model, state, list(results), modules)
    graph.output_shapes = {mode: [list(t.shape) for t in outs] for mode, outs in results.items()}
    graph.outputs = wanted
    return graph


def _missed(state: TraceState, modules: list[tuple[str, nn.Module]]) -> bool:
    """True when some parameter of the model (``modules``: its ``named_modules``) never took part in the traced
    forward."""
    seen = {name for name, _ in state.param_spaces}
    return any(n not in seen and p.dim() > 0 for n, p in named_tensors(modules))


def set_mode(model: nn.Module, train: bool, named: list[tuple[str, nn.Module]] | None = None) -> None:
    """``model.train(train)`` with normalisation layers left in eval: one sample has no batch statistics.

    Tracing and verification then work on any input the model accepts in eval mode (batch size 1).
    ``named``: ``named_modules(model)`` when the caller has it already.
    """
    modules = [m for _, m in (named_modules(model) if named is None else named)]
    if train or any(m.training or type(m).train is not nn.Module.train for m in modules):  # else a no-op
        model.train(train)
    if train:
        for m in modules:
            if isinstance(m, nn.modules.batchnorm._NormBase):
                m.train(False)


def _run(model: nn.Module, example_inputs: ExampleInputs, state: TraceState, train: bool,
         outputs: list[str | int] | None = None) -> list[torch.Tensor]:
    modules = named_modules(model)
    names = {}
    for name, t in named_tensors(modules) + named_tensors(modules, buffers=True):
        names.setdefault(id(t), name)
    state.names = names
    flags = {m: m.training for _, m in modules}
    tracer = Tracer(state, model, lookup, IGNORE, modules)
    handles = install_module_hooks(model, state, modules)
    set_mode(model, train, modules)
    tagged = tag_attributes(model, modules)
    try:
        for t in iter_tensors(example_inputs):
            if id(t) not in state.records:
                spaces = [Space(n) for n in t.shape]
                for s in spaces:
                    block(s, "model input")
                tracer.set(t, spaces)
        with torch.no_grad(), tracer:
            try:
                out = call_model(model, example_inputs)
            except Exception as exc:  # noqa: BLE001 - shown to the user with its original message
                raise ValueError(
                    f"forward failed on example_inputs while tracing {type(model).__name__} "
                    f"({'train' if train else 'eval'} mode): {type(exc).__name__}: {exc}") from exc
        outs = select_outputs(out, outputs)
        tracer.used(outs)
        for t in outs:
            tracer.rec(t)
        return outs
    finally:
        untag_attributes(model, tagged)
        for h in handles:
            h.remove()
        for m, f in flags.items():
            if m.training != f:
                m.training = f
        state.stack.clear()


def _all_spaces(state: TraceState) -> list[Space]:
    out = list(state.param_spaces.values())
    for r in state.records.values():
        out.extend(r.spaces)
    for lits in state.literals:
        out.append(lits.space)
    for _, _, sp in state.syncs:
        out.extend(sp)
    return out


def _propagate(spaces: list[Space]) -> None:
    """Push block reasons and tags of refined spaces down to their leaves."""
    seen: set[int] = set()
    for s in spaces:
        r = s if s.parent is None else find(s)  # most spaces: a root already (find, inlined)
        if not r.children or id(r) in seen:
            continue
        seen.add(id(r))
        if r.blocked or r.tags:
            for leaf in leaves(r):
                for why in r.blocked:
                    block(leaf, why)
                leaf.tags |= r.tags


def _linked_leaves(state: TraceState) -> dict[int, Space]:
    out: dict[int, Space] = {}
    for s in state.param_spaces.values():
        for leaf in leaves(s):
            out[id(leaf)] = leaf
    return out


# Size attributes that surgery recomputes from the weights itself (see prune/surgery.py).
MANAGED = {"Conv1D": {"nf", "nx"}, "Linear": {"in_features", "out_features"},
           "MultiheadAttention": {"embed_dim", "kdim", "vdim", "head_dim"}}


def _managed(mod: nn.Module) -> set[str]:
    return set().union(*(v for k, v in MANAGED.items() if any(c.__name__ == k for c in type(mod).__mro__)))


def _resolve_literals(state: TraceState, named: list[tuple[str, nn.Module]]) -> None:
    """Sizes written in code pin their channels, unless a module attribute holds them (then it follows).

    A literal matching several attributes of its module is ambiguous: it ties nothing, and each
    candidate attribute follows only if every literal naming it agrees on the channels it sizes.
    """
    if not state.literals:  # nothing to resolve (most convolutional nets): skip walking its spaces
        return
    modules = dict(named)
    linked = _linked_leaves(state)
    by_attr: dict[tuple[str, str], list[Space]] = {}
    pending: list[tuple[Literal, list[tuple[str, str]]]] = []
    for lit in state.literals:
        lv = [leaf for leaf in leaves(lit.space) if leaf.size > 1]
        if not any(id(leaf) in linked for leaf in lv):
            continue
        if lit.attr is not None and lit.attr[0] in modules and lit.attr[1] in _managed(modules[lit.attr[0]]):
            continue  # read from an attribute that surgery recomputes from its module's weights (Conv1D's nf)
        mod = modules.get(lit.module)
        if mod is None or lit.strict or not all(id(leaf) in linked for leaf in lv):
            cands = []
        else:
            managed = _managed(mod)
            found = [k for k, v in vars(mod).items() if type(v) is int and v == lit.value]
            if any(k in managed for k in found):
                continue  # surgery resizes this module from its weights
            cands = [(lit.module, k) for k in found if k in SYNC_ATTRS]
        for key in cands:
            by_attr.setdefault(key, []).append(lit.space)
        if len(cands) == 1:
            with contextlib.suppress(Incompatible):
                unify(by_attr[cands[0]][0], lit.space)
        pending.append((lit, cands))
    synced: dict[tuple[str, str], Space] = {}
    for key, spaces in by_attr.items():
        roots = {id(find(sp)): find(sp) for sp in spaces}
        if len(roots) == 1:
            synced[key] = next(iter(roots.values()))
            state.syncs.append((key[0], key[1], [synced[key]]))
    for lit, cands in pending:
        if not any(key in synced and find(synced[key]) is find(lit.space) for key in cands) and not lit.loose:
            block(lit.space, f"size {lit.value} fixed in code in {lit.module or '<model>'}")


def _element_syncs(model: nn.Module, state: TraceState) -> None:
    """One sync per split list attribute, with a space per element: the followed element's space, or
    a fixed one for an element no split followed (its size stays). An element followed twice ties both."""
    by_attr: dict[tuple[str, str], dict[int, Space]] = {}
    for mod, attr, i, space in state.element_syncs:
        seen = by_attr.setdefault((mod, attr), {}).setdefault(i, space)
        if seen is not space:
            try:
                unify(seen, space)
            except Incompatible:
                for sp in (seen, space):
                    block(sp, f"{attr}[{i}] of {mod or '<model>'} sizes dimensions that cannot shrink together")
    for (mod, attr), spaces in by_attr.items():
        values = vars(model.get_submodule(mod)).get(attr)
        if type(values) not in (tuple, list) or max(spaces) >= len(values):  # the forward replaced it
            for i, sp in spaces.items():
                block(sp, f"{attr}[{i}] of {mod or '<model>'} changed while the model ran")
            continue
        state.syncs.append((mod, attr, [spaces.get(i, Space(v)) for i, v in enumerate(values)]))


def _merge_syncs(state: TraceState) -> None:
    """One entry per module attribute; an attribute that sizes several dimensions ties them together."""
    merged: dict[tuple[str, str], list[Space]] = {}
    for mod, attr, spaces in state.syncs:
        first = merged.setdefault((mod, attr), spaces)
        if first is spaces:
            continue
        try:
            if len(first) != len(spaces):
                raise Incompatible("different ranks")
            for a, b in zip(first, spaces):
                unify(a, b)
        except Incompatible:
            for sp in first + spaces:
                block(sp, f"{attr} of {mod or '<model>'} sizes dimensions that cannot shrink together")
    state.syncs = [(mod, attr, spaces) for (mod, attr), spaces in merged.items()]


def _config_numbers(state: TraceState) -> None:
    """A config size a plan would set must be read only as sizes: if the forward also reads it as a number
    (``self.config.hidden_size ** 0.5`` scaling the embeddings), setting it would change that value, so
    every dimension it sizes stays."""
    for mod, attr, spaces in state.syncs:
        where = state.numbers.get((mod, attr))
        if config_attr(attr) and where is not None:
            for sp in spaces:
                block(sp, f"{attr} of {mod or '<model>'} is also read as a number in {where or '<model>'}, "
                          f"which setting it would change")


def _build(model: nn.Module, state: TraceState, modes: list[str], modules: list[tuple[str, nn.Module]]) -> Graph:
    _propagate(_all_spaces(state))
    _resolve_literals(state, modules)
    _element_syncs(model, state)
    _merge_syncs(state)
    _config_numbers(state)
    _propagate(_all_spaces(state))

    shapes = {n: list(t.shape) for n, t in named_tensors(modules) + named_tensors(modules, buffers=True)}
    members: dict[int, list[tuple[str, int, str]]] = {}
    leaf_of: dict[int, Space] = {}
    for (pname, dim), s in state.param_spaces.items():
        entry = (pname, dim, state.roles.get((pname, dim), ""))
        for leaf in leaves(s):
            lst = members.get(id(leaf))
            if lst is None:
                members[id(leaf)] = [entry]
                leaf_of[id(leaf)] = leaf
            elif lst[-1] is not entry:  # a leaf met twice in one dimension (no other dimension makes ``entry``)
                lst.append(entry)

    groups: list[Group] = []
    gid_of: dict[int, int] = {}
    unsupported: dict[str, list[str]] = {}
    for key, leaf in leaf_of.items():
        if leaf.size < 2 or not any(r for _, _, r in members[key]):
            continue
        if leaf.blocked:
            why = leaf.blocked[0]
            piece = why.startswith(PIECES) and all(
                find(state.param_spaces[(n, d)]) is not leaf for n, d, _ in members[key])
            if not piece and not any(w.startswith(PROTECTED) for w in leaf.blocked):
                unsupported.setdefault(why, []).extend(n for n, _, _ in members[key])
            continue
        tensors = members[key]
        if "routed" in leaf.tags and "expert" not in leaf.tags:  # rules/moe.py: a router's rows need their experts
            why = "top-k routing over a dimension that no expert weights follow"
            unsupported.setdefault(why, []).extend(n for n, _, _ in tensors)
            continue
        if all(r == "in" for _, _, r in tensors):  # no layer makes these values: code does, at a fixed size
            why = "channels made in code (a tensor created or sliced in forward), not by a layer"
            unsupported.setdefault(why, []).extend(n for n, _, _ in tensors)
            continue
        kind = "expert" if "expert" in leaf.tags else "head" if "head" in leaf.tags else "channel"
        g = Group(len(groups), leaf.size, kind, tensors,
                  exact=not leaf.tags & {"norm", "qk"},
                  producers=[n.rpartition(".")[0] for n, _, r in tensors if r == "out"])
        g.producers = list(dict.fromkeys(g.producers))
        g.multiple = max((int(t[len(ALIGN):]) for t in leaf.tags if t.startswith(ALIGN)), default=1)
        gid_of[key] = g.id
        groups.append(g)

    def to_layout(s: Space) -> L.Layout:
        r = find(s)
        if r.children:
            return [r.kind, [to_layout(c) for c in r.children]]
        return ["g", gid_of[id(r)], r.size] if id(r) in gid_of else ["n", r.size]

    layouts: dict[str, dict[int, L.Layout]] = {}
    for (pname, dim), s in state.param_spaces.items():
        r = find(s)
        if not r.children and id(r) not in gid_of:  # ["n", size]: most dimensions, no layout needed
            continue
        lay = to_layout(r)
        if L.groups_in(lay):
            layouts.setdefault(pname, {})[dim] = lay
    syncs = []
    for mod, attr, spaces in state.syncs:
        lays = [to_layout(s) for s in spaces]
        if any(L.groups_in(x) for x in lays):
            syncs.append({"module": mod, "attr": attr, "layouts": lays})
    return Graph(groups, layouts, shapes, syncs,
                 [Unsupported(k, list(dict.fromkeys(v))) for k, v in unsupported.items()],
                 type(model).__name__, modes)
