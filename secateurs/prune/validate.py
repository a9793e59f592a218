"""Check a plan before it touches a model: a plan is data that may come from an edited file.

Nothing in a plan is trusted. Its form is checked on its own (types, indices, layouts against their
groups, masks, the attributes its syncs may set) and then against the model: the architecture it
was made for (its signature), every tensor it names, every size, every attribute it syncs. All of
it runs before ``apply`` allocates or changes anything; the first problem raises one ValueError
of at most ``MAX_MESSAGE`` characters.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import reprlib
from typing import Any, NoReturn

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..graph import layout as L
from ..graph.graph import SYNC_ATTRS
from ..graph.sizes import SYNC_LIST_ATTRS, config_attr, syncable
from ..graph.walk import Tree, walk
from .experts import check_top_k

MAX_MESSAGE = 500
MAX_SIZE = 2 ** 48  # no tensor dimension is larger; bounds layout arithmetic on crafted input
MAX_DEPTH = 12  # layouts nest prod/cat a few levels deep; anything deeper is not from the tracer
GROUP_KEYS = frozenset({"id", "size", "kind", "producers", "remove", "multiple"})
KINDS = ("channel", "head", "expert")  # what a traced group prunes (graph.Group.kind)
SIGNATURE_KEYS = frozenset({"fingerprint", "modules", "tensors", "elements", "pruned", "structure"})
EDITABLE = "only the indices in 'remove' (of the groups it prunes) and the bits of element masks may be edited"

_repr = reprlib.Repr()
_repr.maxlist = _repr.maxtuple = _repr.maxset = 6
_repr.maxdict, _repr.maxstring, _repr.maxother, _repr.maxlevel = 4, 60, 60, 3


def show(value: Any) -> str:
    """A short repr: long lists and strings are cut, so a message never echoes a megabyte back."""
    return _repr.repr(value)


def fail(message: str) -> NoReturn:
    """Raise the ValueError for one problem, cut to ``MAX_MESSAGE`` characters."""
    raise ValueError(message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 3] + "...")


_NOTHING = object()


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# ---- what a plan records about its model --------------------------------------------------------

def tensors_of(model: nn.Module, tree: Tree | None = None) -> dict[str, torch.Tensor]:
    """Parameters and buffers by name, seen through parametrizations (``a.parametrizations.weight.original``
    is ``a.weight``; ``original0``, ``original1``... of a split one such as weight norm keep their names; a
    parametrization's own tensors, such as masks, are left out). ``tree``: ``walk(model)``, if made already."""
    out = {}
    tree = tree if tree is not None else walk(model)
    for name, t in tree.params + tree.buffers:
        parts = name.split(".")
        if "parametrizations" in parts:
            i = parts.index("parametrizations")
            rest = parts[i + 2:]
            if len(rest) != 1 or not (rest[0] == "original" or rest[0][len("original"):].isdigit()):
                continue
            if rest[0] == "original":  # original0, original1...: the tensors of one split (weight norm's g, v)
                name = ".".join(parts[:i] + [parts[i + 1]])
        out[name] = t
    return out


def _type_name(mod: nn.Module) -> str:
    cls = type(mod).__bases__[0] if is_parametrized(mod) else type(mod)
    return cls.__name__


def is_parametrized(mod: nn.Module) -> bool:
    """``parametrize.is_parametrized``, answered without an attribute lookup for the common unparametrized module."""
    return "parametrizations" in mod._modules and parametrize.is_parametrized(mod)


def model_signature(model: nn.Module, tree: Tree | None = None) -> dict[str, Any]:
    """Module names and types, tensor names and shapes, hashed into a fingerprint (plus counts for messages).
    ``tree``: ``walk(model)``, if made already."""
    tree = tree if tree is not None else walk(model)
    return _signature(tree, tensors_of(model, tree))


def _signature(tree: Tree, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``model_signature`` from the model's ``walk`` and its ``tensors_of``."""
    # names are distinct, so sorting by name alone gives the order of sorting the pairs
    mods = sorted(((n, _type_name(m)) for n, m in tree.modules
                   if "parametrizations" not in n or "parametrizations" not in n.split(".")), key=_first)
    shapes = sorted(((n, t.shape) for n, t in tensors.items()), key=_first)  # a torch.Size is written as a list
    return {"fingerprint": _digest([mods, shapes], sort_keys=False), "modules": len(mods), "tensors": len(shapes),
            "elements": sum(t.numel() for t in tensors.values())}


def _first(pair: tuple) -> Any:
    return pair[0]


def structure_digest(plan: Any, pruned: list[int]) -> str:
    """Hash of what tracing decided (groups' ids, sizes and kinds, layouts, syncs, shapes, pruned groups)."""
    return _digest({"groups": _group_keys(plan.groups), "layouts": plan.layouts, "syncs": plan.syncs,
                    "shapes": plan.shapes, "pruned": pruned})


def _group_keys(groups: list[dict]) -> list[list]:
    return [[g["id"], g["size"], g.get("kind")] + ([g["multiple"]] if "multiple" in g else []) for g in groups]


def seal(plan: Any, signature: dict[str, Any]) -> None:
    """Record the model's signature in a freshly made plan, with the digest of its structure."""
    pruned = sorted(g["id"] for g in plan.groups if g["remove"])
    plan.signature = dict(signature, pruned=pruned, structure=structure_digest(plan, pruned))


def _digest(obj: Any, sort_keys: bool = True) -> str:
    """Hash of ``obj``'s JSON text (``sort_keys=False`` for an object with no dicts: the same text, sooner)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=sort_keys).encode()).hexdigest()[:32]


# ---- the plan on its own --------------------------------------------------------------------------

def check_form(plan: Any) -> None:
    """Everything that can be checked without the model; ValueError at the first problem."""
    _check_fields(plan)
    sizes = _check_groups(plan.groups)
    shapes = _check_shapes(plan.shapes)
    named: set[int] = set()
    known: dict[str, tuple[int, set[int]]] = {}  # size and groups of each layout checked (layers share them)
    for name, dims in plan.layouts.items():
        named |= _check_tensor_layouts(name, dims, sizes, shapes, known)
    for name, entry in plan.masks.items():
        _check_mask(name, entry, shapes)
    for i, s in enumerate(plan.syncs):
        _check_sync(i, s, sizes, named)
    _check_removals(plan, named)
    if plan.signature is not None:
        _check_signature(plan)


def check_sealed(plan: Any) -> None:
    """The plan's structure is the one recorded when it was made (plans without a signature pass)."""
    sig = plan.signature
    if sig is not None and sig["structure"] != structure_digest(plan, sig["pruned"]):
        fail("invalid plan: its structure (groups' ids and sizes, layouts, syncs, shapes) differs from the one "
             f"recorded when it was made; {EDITABLE}")


def _check_fields(plan: Any) -> None:
    kinds = {"model_class": str, "groups": list, "layouts": dict, "shapes": dict, "syncs": list,
             "settings": dict, "skipped": list, "masks": dict}
    for field, kind in kinds.items():
        value = getattr(plan, field)
        if not isinstance(value, kind):
            fail(f"invalid plan: field {field!r} must be a {kind.__name__}, got {type(value).__name__} {show(value)}")
    if plan.signature is not None and not isinstance(plan.signature, dict):
        fail(f"invalid plan: field 'signature' must be an object, got {show(plan.signature)}")
    for s in plan.skipped:
        if not isinstance(s, dict) or not isinstance(s.get("reason"), str):
            fail(f"invalid plan: every entry of 'skipped' needs a 'reason' string, got {show(s)}")


def _check_groups(groups: list) -> dict[int, int]:
    sizes: dict[int, int] = {}
    for i, g in enumerate(groups):
        if not isinstance(g, dict) or not {"id", "size", "remove"} <= g.keys() or not g.keys() <= GROUP_KEYS:
            fail(f"invalid plan: group #{i} must be an object with keys id, size, remove (and optionally kind, "
                 f"producers, multiple), got {show(g)}")
        gid, size, remove = g["id"], g["size"], g["remove"]
        if not _int(gid) or gid < 0 or gid in sizes:
            fail(f"invalid plan: group #{i} has id {show(gid)}; ids are distinct non-negative integers")
        if not _int(size) or size < 1:
            fail(f"invalid plan: group {gid} has size {show(size)}, expected a positive integer")
        if "kind" in g and g["kind"] not in KINDS:
            fail(f"invalid plan: group {gid} has kind {show(g['kind'])}, expected one of {list(KINDS)}")
        producers = g.get("producers", [])
        if not (isinstance(producers, list) and all(isinstance(p, str) for p in producers)):
            fail(f"invalid plan: group {gid} has producers {show(g['producers'])}, expected a list of module names")
        _check_indices(gid, remove, size)
        _check_multiple(g)
        sizes[gid] = size
    return sizes


def _check_indices(gid: int, remove: Any, size: int) -> None:
    if not isinstance(remove, list):
        fail(f"invalid plan: group {gid} has remove {show(remove)}, expected a list of indices")
    if len(remove) > size:
        fail(f"invalid plan: group {gid} lists {len(remove)} indices to remove but has only {size} elements")
    plain = set(map(type, remove)) <= {int} and (not remove or (min(remove) >= 0 and max(remove) < size))
    bad = _NOTHING if plain else next((x for x in remove if not _int(x) or not 0 <= x < size), _NOTHING)
    if bad is not _NOTHING:
        fail(f"invalid plan: group {gid} removes index {show(bad)}; indices are integers in [0, {size})")
    if len(set(remove)) != len(remove):
        fail(f"invalid plan: group {gid} lists an index twice in remove {show(remove)}")
    if len(remove) == size:
        fail(f"invalid plan: group {gid} removes all {size} of its elements; a group keeps at least one")


def _check_multiple(g: dict) -> None:
    """A group some kernel needs aligned (``multiple``, e.g. grouped_mm's 8) keeps a multiple of it, or all."""
    if "multiple" not in g:
        return
    m, gid, kept = g["multiple"], g["id"], g["size"] - len(g["remove"])
    if not _int(m) or not 2 <= m <= MAX_SIZE:
        fail(f"invalid plan: group {gid} has multiple {show(m)}, expected an integer >= 2 (groups without "
             "an alignment need leave it out)")
    if kept != g["size"] and kept % m:
        fail(f"invalid plan: group {gid} keeps {kept} of {g['size']} elements; a kernel it feeds (grouped_mm) needs "
             f"a multiple of {m}, so remove {kept % m} more or {m - kept % m} fewer")


def _check_shapes(shapes: dict) -> dict[str, list[int]]:
    for name, shape in shapes.items():
        if isinstance(shape, list) and set(map(type, shape)) <= {int} and min(shape, default=0) >= 0:
            continue  # plain ints: the common case, checked without a call per dimension
        if not isinstance(shape, list) or not all(_int(d) and d >= 0 for d in shape):
            fail(f"invalid plan: shape of {show(name)} must be a list of non-negative integers, got {show(shape)}")
    return shapes


def layout_size(tree: Any, sizes: dict[int, int], where: str, depth: int = 0) -> int:
    """Size of a well-formed layout whose group leaves match the plan's groups; ValueError otherwise."""
    def bad(why: str) -> NoReturn:
        fail(f"invalid plan: layout of {where} is malformed at {show(tree)}: {why}")

    if depth > MAX_DEPTH:
        bad(f"nested deeper than {MAX_DEPTH}")
    if not isinstance(tree, list) or not tree:
        bad("a layout is a non-empty list")
    kind = tree[0]
    if kind == "g":
        if len(tree) != 3 or not _int(tree[1]) or not _int(tree[2]):
            bad('a group leaf is ["g", id, size]')
        if tree[1] not in sizes:
            fail(f"invalid plan: layout of {where} names group {tree[1]}, which the plan does not have")
        if tree[2] != sizes[tree[1]]:
            fail(f"invalid plan: layout of {where} gives group {tree[1]} size {tree[2]}, the group has size "
                 f"{sizes[tree[1]]}")
        return tree[2]
    if kind == "n":
        if len(tree) != 2 or not _int(tree[1]) or not 1 <= tree[1] <= MAX_SIZE:
            bad('a fixed leaf is ["n", size] with size >= 1')
        return tree[1]
    if kind not in ("prod", "cat") or len(tree) != 2 or not isinstance(tree[1], list) or not tree[1]:
        bad('a node is ["prod", [children]] or ["cat", [children]]')
    total = int(kind == "prod")
    for c in tree[1]:
        n = layout_size(c, sizes, where, depth + 1)
        total = total * n if kind == "prod" else total + n
        if total > MAX_SIZE:
            bad(f"spans more than {MAX_SIZE} indices")
    return total


def _check_tensor_layouts(name: Any, dims: Any, sizes: dict[int, int], shapes: dict,
                          known: dict[str, tuple[int, set[int]]]) -> set[int]:
    if not isinstance(name, str) or name not in shapes:
        fail(f"invalid plan: layouts name tensor {show(name)}, which has no entry in the plan's shapes")
    if not isinstance(dims, dict) or not dims:
        fail(f"invalid plan: layouts of {name} must map dimensions to layouts, got {show(dims)}")
    shape, named = shapes[name], set()
    for d, tree in dims.items():
        if not (isinstance(d, str) and d.isascii() and d.isdigit() and int(d) < len(shape)):
            fail(f"invalid plan: layouts of {name} name dimension {show(d)}; the tensor has shape {show(shape)}")
        where = f"{name} dim {d}"
        key = repr(tree)
        if key not in known:
            known[key] = layout_size(tree, sizes, where), L.groups_in(tree)
        n, found = known[key]
        if n != shape[int(d)]:
            fail(f"invalid plan: layout of {where} spans {n} indices, the tensor's dimension has {shape[int(d)]}")
        if not found:
            fail(f"invalid plan: layout of {where} names no group: {show(tree)}")
        named |= found
    return named


def _check_mask(name: Any, entry: Any, shapes: dict) -> None:
    if not isinstance(name, str) or name not in shapes:
        fail(f"invalid plan: masks name tensor {show(name)}, which has no entry in the plan's shapes")
    if not isinstance(entry, dict) or set(entry) != {"shape", "bits"} or not isinstance(entry["bits"], str):
        fail(f"invalid plan: mask of {name} must be an object with 'shape' and 'bits' (base64), got {show(entry)}")
    if entry["shape"] != shapes[name]:
        fail(f"invalid plan: mask of {name} has shape {show(entry['shape'])}, the tensor has {shapes[name]}")
    n = math.prod(shapes[name])
    try:
        raw = base64.b64decode(entry["bits"], validate=True)
    except (binascii.Error, ValueError):
        fail(f"invalid plan: mask of {name} is not base64 text")
    if len(raw) != (n + 7) // 8:
        fail(f"invalid plan: mask of {name} holds {len(raw) * 8} bits, its shape {shapes[name]} needs {n}")
    full, rest = divmod(n, 8)
    if not raw[:full].strip(b"\0") and not (rest and raw[full] >> (8 - rest)):
        fail(f"invalid plan: mask of {name} removes every element of the tensor")


def _check_sync(i: int, s: Any, sizes: dict[int, int], named: set[int]) -> None:
    if not isinstance(s, dict) or set(s) != {"module", "attr", "layouts"} or not isinstance(s["module"], str):
        fail(f"invalid plan: sync #{i} must be an object with module, attr and layouts, got {show(s)}")
    attr, lays = s["attr"], s["layouts"]
    if not isinstance(attr, str) or not (syncable(attr) or attr in SYNC_LIST_ATTRS):
        fail(f"invalid plan: sync #{i} sets {show(attr)} of module {show(s['module'])}; a plan may only set the "
             f"size attributes (of the module, or of its config as config.<attr>) {sorted(SYNC_ATTRS)} and the "
             f"split size lists {sorted(SYNC_LIST_ATTRS)}")
    several = attr == "normalized_shape" or attr in SYNC_LIST_ATTRS  # one layout per element
    if not isinstance(lays, list) or not lays or (not several and len(lays) != 1):
        fail(f"invalid plan: sync #{i} ({s['module']}.{attr}) needs one layout per size it sets, got {show(lays)}")
    found = set()
    for tree in lays:
        layout_size(tree, sizes, f"sync {s['module']}.{attr}")
        found |= L.groups_in(tree)
    if not found or not found <= named:
        fail(f"invalid plan: sync {s['module']}.{attr} follows groups {sorted(found)}, which must be non-empty "
             f"and sized by the layouts of the plan's tensors")


def _check_removals(plan: Any, named: set[int]) -> None:
    skipped = {s.get("id") for s in plan.skipped if _int(s.get("id"))}
    for g in plan.groups:
        if not g["remove"]:
            continue
        if g["id"] not in named:
            fail(f"invalid plan: group {g['id']} removes elements, but no tensor layout in the plan names it")
        if g["id"] in skipped:
            fail(f"invalid plan: group {g['id']} removes elements, but the plan lists it as skipped")


def _check_signature(plan: Any) -> None:
    sig = plan.signature
    if set(sig) != SIGNATURE_KEYS or not isinstance(sig["pruned"], list) or not all(_int(g) for g in sig["pruned"]):
        fail(f"invalid plan: signature must have keys {sorted(SIGNATURE_KEYS)} ('pruned' a list of group ids), "
             f"got {show(sig)}")
    extra = sorted(g["id"] for g in plan.groups if g["remove"] and g["id"] not in sig["pruned"])
    if extra:
        fail(f"invalid plan: groups {show(extra)} remove elements, but the plan was made to prune only groups "
             f"{show(sig['pruned'])}; make a new plan to prune others")


# ---- the plan against a model ---------------------------------------------------------------------

def check_model(plan: Any, model: nn.Module) -> None:
    """The plan fits ``model``: same architecture, every tensor and attribute it names as the plan expects."""
    made_for = f"(plan made for {plan.model_class})"
    tree = walk(model)
    have = tensors_of(model, tree)
    if plan.signature is not None:
        _check_fingerprint(plan.signature, _signature(tree, have), type(model).__name__, plan.model_class)
    for name, shape in plan.shapes.items():
        if name not in have:
            fail(f"plan does not fit this model: it names tensor {show(name)}, which {type(model).__name__} "
                 f"does not have {made_for}")
        if list(have[name].shape) != shape:
            fail(f"plan does not fit this model: {name} has shape {list(have[name].shape)}, the plan expects "
                 f"{show(shape)} {made_for}")
    for name in plan.masks:
        if not isinstance(have[name], nn.Parameter) or not have[name].is_floating_point():
            fail(f"plan does not fit this model: it masks {name}, which is not a floating-point parameter")
    for s in plan.syncs:
        _check_sync_target(model, s)
    check_top_k(plan, model)


def _check_fingerprint(sig: dict, mine: dict, cls: str, made_for: str) -> None:
    if sig["fingerprint"] == mine["fingerprint"]:
        return
    fail(f"plan does not fit this model: it was made for a {made_for} with {_counts(sig)}; this model is a "
         f"{cls} with {_counts(mine)}, and the fingerprints of module names, types and tensor shapes differ")


def _counts(sig: dict) -> str:
    return f"{sig['modules']} modules, {sig['tensors']} tensors, {sig['elements']} elements"


def _check_sync_target(model: nn.Module, s: dict) -> None:
    where = f"plan does not fit this model: sync {s['module']}.{s['attr']}"
    try:
        mod = model.get_submodule(s["module"])
    except AttributeError:
        fail(f"{where} names module {show(s['module'])}, which the model does not have")
    name = config_attr(s["attr"])
    value = vars(mod).get(s["attr"]) if name is None else vars(getattr(mod, "config", None) or mod).get(name)
    want = [L.size(t) for t in s["layouts"]]
    if s["attr"] == "normalized_shape":
        ok = isinstance(value, tuple) and all(_int(v) for v in value) and list(value) == want
    elif s["attr"] in SYNC_LIST_ATTRS:
        ok = type(value) in (tuple, list) and all(type(v) is int for v in value) and list(value) == want
    else:
        ok = type(value) is int and value == want[0]
    if not ok:
        fail(f"{where}: {type(mod).__name__} holds {show(value)} there, the plan's layouts span {show(want)}")


def validate(plan: Any, model: nn.Module) -> None:
    """The whole check: the plan's form, the plan against ``model``, then its sealed structure."""
    check_form(plan)
    check_model(plan, model)
    check_sealed(plan)
