"""Carry out a plan: physically slice every parameter and buffer, or mask them in place of removal.

Physical surgery is generic: each touched tensor is ``index_select``-ed along the dimensions its
layouts name, then module attributes (``out_channels``, ``groups``, ``num_heads`` ...) are brought
in line with the new shapes.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize

from .._gc import gc_paused
from .._inputs import check_module
from ..graph import layout as L
from ..graph.sizes import SYNC_LIST_ATTRS, config_attr
from ..graph.walk import walk
from .clone import deepcopy_module
from .elements import unpack
from .modules import sync_multihead
from .plan import Plan
from .validate import is_parametrized

MODES = ("remove", "mask")


class Mask(nn.Module):
    """Parametrization ``w * mask``: pruned entries read as exactly zero whatever the optimizer does.

    The mask is a bool keep-mask (1 byte per weight, a quarter of a float32 mask; ``w * mask`` keeps
    ``w``'s dtype). Masks saved as float 0/1 still load: ``load_state_dict`` copies them into the bool
    buffer.
    """

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


@gc_paused()
def apply(model: nn.Module, plan: Plan, *, mode: str = "remove", inplace: bool = False) -> nn.Module:
    """Apply ``plan`` to ``model``: a new, physically smaller module (``mode="remove"``) or a masked copy.

    The plan is validated against the model first (``Plan.validate``). The input model is untouched
    unless ``inplace=True``, and even then all or nothing: a failure part-way restores it.
    """
    check_module(model)
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be a secateurs Plan, got {type(plan).__name__}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if plan.masks and mode != "mask":
        raise ValueError("mode must be 'mask' for a plan of element masks (granularity 'unstructured' or "
                         "'N:M'): they zero weights without shrinking tensors; sc.finalize bakes them in")
    plan.validate(model)
    experts = [g["id"] for g in plan.groups if g.get("kind") == "expert" and g["remove"]]
    if mode == "mask" and experts:
        raise ValueError(f"mode 'mask' cannot remove whole experts (groups {experts}): a router still picks a "
                         "zeroed expert; apply the plan with mode='remove'")
    if not inplace:
        return _apply(model, plan, mode, inplace)
    with _all_or_nothing(model):
        return _apply(model, plan, mode, inplace)


@gc_paused()
def apply_derived(model: nn.Module, plan: Plan) -> nn.Module:
    """``apply(model, plan)`` for a plan the planner has just derived from ``model`` itself (verification):
    the same new, smaller model, without validating the plan against the model it was made from."""
    return _apply(model, plan, "remove", inplace=False)


def _apply(model: nn.Module, plan: Plan, mode: str, inplace: bool) -> nn.Module:
    if any(is_parametrized(m) for m in model.modules()):
        model = finalize(model if inplace else deepcopy_module(model, {}))
        inplace = True
    keep = _kept_per_group(plan)
    if mode == "mask":
        target = model if inplace else deepcopy_module(model, {})
        _mask(target, plan, keep)
        _element_masks(target, plan)
        if keep:
            target._secateurs_plan = plan  # lets measure() report the MACs it will have once applied
        return target
    tensors = _tensors(model)
    sliced = _sliced(tensors, plan, keep)
    if inplace:
        target = model
        for name, new in sliced.items():
            _put(target, name, new)
    else:
        # Pre-seed deepcopy's memo with the sliced tensors: the big ones are never copied whole.
        memo: dict[int, object] = {}
        for name, new in sliced.items():
            old = tensors[name]
            memo[id(old)] = nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new
        target = deepcopy_module(model, memo)
    configs: set[int] = set()  # the config copies made here (one per module that reads a synced config size)
    for s in plan.syncs:
        mod = target.get_submodule(s["module"])
        sizes = [len(L.kept(t, keep)) for t in s["layouts"]]
        if config_attr(s["attr"]):
            _set_config(mod, config_attr(s["attr"]), sizes[0], configs)
        elif s["attr"] in SYNC_LIST_ATTRS:  # a split's sizes, one per piece, in the attribute's own type
            setattr(mod, s["attr"], type(getattr(mod, s["attr"]))(sizes))
        else:
            setattr(mod, s["attr"], tuple(sizes) if s["attr"] == "normalized_shape" else sizes[0])
    for mod in target.modules():
        _sync_metadata(mod)
    return target


def _set_config(mod: nn.Module, attr: str, size: int, mine: set[int]) -> None:
    """Set ``mod.config.<attr>`` on a copy of the config for ``mod`` alone: the config object is shared by
    every layer (and the model), and each layer may keep a different number of heads."""
    if id(mod.config) not in mine:
        mod.config = copy.copy(mod.config)
        mine.add(id(mod.config))
    setattr(mod.config, attr, size)


@contextmanager
def _all_or_nothing(model: nn.Module) -> Iterator[None]:
    """Undo every change to ``model`` (tensors, module dicts, classes, attributes) if the block fails."""
    mods = list(model.modules())
    saved = [(m, m.__class__, dict(m.__dict__), dict(m._parameters), dict(m._buffers), dict(m._modules))
             for m in mods]
    params = [(p, p.data, p.grad) for m in mods for p in m._parameters.values() if p is not None]
    try:
        yield
    except BaseException:
        for p, data, grad in params:
            p.data, p.grad = data, grad
        for m, cls, attrs, ps, bs, ms in saved:
            m.__class__ = cls
            m.__dict__.clear()
            m.__dict__.update(attrs)
            for live, old in ((m._parameters, ps), (m._buffers, bs), (m._modules, ms)):
                live.clear()
                live.update(old)
        raise


def preview(model: nn.Module) -> nn.Module | None:
    """The physically pruned form of a model masked by ``apply(..., mode="mask")``, else None."""
    plan = getattr(model, "_secateurs_plan", None)
    return apply(model, plan) if isinstance(plan, Plan) else None


def finalize(model: nn.Module) -> nn.Module:
    """Bake secateurs masks into plain weights and remove every trace of the masking (in place).

    Done by hand rather than with ``parametrize.remove_parametrizations``: deep copies of a
    parametrized module share its generated class, and removing through one copy breaks the others.
    """
    check_module(model)
    for mod in list(model.modules()):
        if not parametrize.is_parametrized(mod):
            continue
        lists = mod.parametrizations
        if not all(isinstance(f, Mask) for a in lists for f in lists[a]):
            # others' parametrizations (weight norm) stay; masks beside them are baked one by one
            # (the module's class is its own: masking copied it, see _own_class)
            for a in [a for a in lists if all(isinstance(f, Mask) for f in lists[a])]:
                parametrize.remove_parametrizations(mod, a, leave_parametrized=True)
            continue
        with torch.no_grad():
            baked = {a: getattr(mod, a).detach().clone() for a in lists}
            grads = {a: lists[a].original.requires_grad for a in lists}
        mod.__class__ = mod.__class__.__bases__[0]
        del mod._modules["parametrizations"]
        for a, value in baked.items():
            mod._parameters[a] = nn.Parameter(value, requires_grad=grads[a])
    if "_secateurs_plan" in vars(model):
        del model._secateurs_plan
    return model


def _kept_per_group(plan: Plan) -> dict[int, torch.Tensor]:
    keep = {}
    for g in plan.groups:
        if g["remove"]:
            gone = set(g["remove"])
            keep[g["id"]] = torch.tensor([i for i in range(g["size"]) if i not in gone], dtype=torch.long)
    return keep


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return walk(model).tensors()


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    mod_name, _, attr = name.rpartition(".")
    return (model.get_submodule(mod_name) if mod_name else model), attr


def _sliced(tensors: dict[str, torch.Tensor], plan: Plan, keep: dict[int, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The new value of every tensor the plan shrinks, computed from the model's current ``tensors``."""
    kept = _KeptIndices(keep)
    out = {}
    with torch.no_grad():
        for name, dims in plan.layouts.items():
            t = tensors[name].detach()
            picks = [(int(d), idx) for d, tree in dims.items() if (idx := kept(tree, t.device)) is not None]
            if picks:
                out[name] = _select(t, picks).contiguous()
    return out


class _KeptIndices:
    """``L.kept`` of each layout (None where it names no pruned group), computed once per layout and device:
    the tensors of one layer (weight, bias, norm statistics) share their layouts."""

    def __init__(self, keep: dict[int, torch.Tensor]):
        self.keep = keep
        self.done: dict[tuple[str, torch.device], torch.Tensor | None] = {}

    def __call__(self, tree: L.Layout, device: torch.device) -> torch.Tensor | None:
        key = (repr(tree), device)
        if key not in self.done:
            idx = L.kept(tree, self.keep) if L.groups_in(tree) & self.keep.keys() else None
            self.done[key] = idx if idx is None or idx.device == device else idx.to(device)
        return self.done[key]


GATHER_ONCE = 2 ** 23  # elements: a larger tensor sliced along adjacent dims is copied once, not once per dim


def _select(t: torch.Tensor, picks: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    """``t`` keeping ``idx`` along each ``(dim, idx)`` (a pure copy: how it is done changes no value).

    One ``index_select`` per dim is fastest, except on tensors over ``GATHER_ONCE`` elements, where the
    intermediate copy costs more than one indexing gather over adjacent dims (vgg's 100M-weight conv: 2x).
    """
    picks = sorted(picks, key=lambda p: p[0])
    dims = [d for d, _ in picks]
    if len(picks) > 1 and t.numel() > GATHER_ONCE and dims == list(range(dims[0], dims[0] + len(dims))):
        n = len(picks)
        index = [idx.view([-1] + [1] * (n - 1 - i)) for i, (_, idx) in enumerate(picks)]
        return t[(slice(None),) * dims[0] + tuple(index)]
    for d, idx in picks:
        t = t.index_select(d, idx)
    return t


def _put(model: nn.Module, name: str, new: torch.Tensor) -> None:
    mod, attr = _owner(model, name)
    t = getattr(mod, attr)
    if isinstance(t, nn.Parameter):
        t.data = new
        t.grad = None
    else:
        mod._buffers[attr] = new


def _mask(model: nn.Module, plan: Plan, keep: dict[int, torch.Tensor]) -> None:
    params = dict(walk(model).params)
    kept = _KeptIndices(keep)
    for name, dims in plan.layouts.items():
        if name not in params:
            continue  # buffers: masking the weights already silences the channel
        p = params[name]
        mask = None
        for d, tree in dims.items():
            idx = kept(tree, p.device)
            if idx is not None:
                m = torch.zeros(p.shape[int(d)], dtype=torch.bool, device=p.device)
                m[idx] = True
                shape = [1] * p.dim()
                shape[int(d)] = -1
                m = m.view(shape)
                mask = m if mask is None else mask & m  # broadcasts: only bool tensors, never one of p's dtype
        if mask is not None:
            mod, attr = _owner(model, name)
            _own_class(mod)
            # bool keep-mask, 1 byte per weight (not p's 4); contiguous, so it saves and loads like any buffer
            parametrize.register_parametrization(mod, attr, Mask(mask.expand(p.shape).contiguous()), unsafe=True)


def _own_class(mod: nn.Module) -> None:
    """Give an already parametrized module (weight norm) its own copy of the generated class.

    ``register_parametrization`` adds a property to that class, and a deep copy shares it with the
    original: without a copy, masking the copy's bias would break the user's model.
    """
    if parametrize.is_parametrized(mod):
        cls = type(mod)
        mod.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))


def _element_masks(model: nn.Module, plan: Plan) -> None:
    for name, entry in plan.masks.items():
        mod, attr = _owner(model, name)
        w = getattr(mod, attr)
        mask = unpack(entry["bits"], entry["shape"]).to(device=w.device)  # bool: 1 byte per weight, not 4
        _own_class(mod)
        parametrize.register_parametrization(mod, attr, Mask(mask), unsafe=True)


def _sync_metadata(mod: nn.Module) -> None:
    """Bring a module's size attributes in line with its (possibly sliced) tensors."""
    if not (mod._parameters or mod._buffers or "parametrizations" in mod._modules):
        return  # every size below is read from the module's own tensors: containers and activations have none
    w = getattr(mod, "weight", None)
    if isinstance(mod, nn.MultiheadAttention):
        sync_multihead(mod)
    elif isinstance(mod, nn.modules.conv._ConvNd):
        if mod.transposed:
            mod.in_channels, mod.out_channels = w.shape[0], w.shape[1] * mod.groups
        else:
            mod.out_channels, mod.in_channels = w.shape[0], w.shape[1] * mod.groups
    elif isinstance(mod, nn.Linear):
        mod.out_features, mod.in_features = w.shape
    elif isinstance(mod, nn.modules.batchnorm._NormBase):
        ref = w if w is not None else mod.running_mean
        if ref is not None:
            mod.num_features = ref.shape[0]
    elif isinstance(mod, (nn.LayerNorm, nn.RMSNorm)) and w is not None:
        mod.normalized_shape = tuple(w.shape)
    elif isinstance(mod, nn.GroupNorm) and w is not None:
        mod.num_channels = w.shape[0]
    elif isinstance(mod, (nn.Embedding, nn.EmbeddingBag)):
        mod.embedding_dim = w.shape[1]
    elif isinstance(mod, nn.PReLU):
        mod.num_parameters = w.numel()
    elif type(mod).__name__ == "Conv1D" and hasattr(mod, "nf") and w is not None:  # Hugging Face GPT-2
        mod.nx, mod.nf = w.shape
    elif isinstance(getattr(mod, "down_proj", None), nn.Parameter) and mod.down_proj.dim() == 3:  # HF fused experts
        e = mod.down_proj.shape[0]
        hidden, inner = _expert_widths(mod)
        sizes = {"num_experts": e, "hidden_dim": hidden, "hidden_size": hidden, "intermediate_dim": inner,
                 "intermediate_size": inner}
        for attr, n in sizes.items():
            if type(vars(mod).get(attr)) is int:
                setattr(mod, attr, n)


def _expert_widths(mod: nn.Module) -> tuple[int, int]:
    """(hidden, inner) of fused experts: ``down_proj`` is (E, inner, hidden) (Llama4, GPT-OSS) or (E, hidden,
    inner) (Mixtral, Qwen-MoE); ``gate_up_proj``, which holds ``hidden`` beside ``2 * inner``, tells which."""
    _, a, b = mod.down_proj.shape
    up = getattr(mod, "gate_up_proj", None)
    if isinstance(up, nn.Parameter) and up.dim() == 3:
        dims = sorted(up.shape[1:])
        inner_first, hidden_first = sorted((b, 2 * a)) == dims, sorted((a, 2 * b)) == dims
        if inner_first != hidden_first:
            return (b, a) if inner_first else (a, b)
    return (b, a) if getattr(mod, "is_transposed", False) else (a, b)
