"""Structural surgery in the middle of training that keeps the optimizer usable.

Removing channels shrinks parameters; an optimizer still holds momentum and Adam moments of the
old shapes (and, when the pruned weights were masked, the old parameter objects). ``shrink``
applies a structural plan to the model in place and makes the SAME optimizer carry on: every
per-element state tensor (same shape as its parameter: momentum buffers, ``exp_avg``,
``exp_avg_sq``, ``max_exp_avg_sq``...) is sliced exactly as its parameter is, scalar state (Adam's
``step``) is kept, and ``param_groups`` point at the model's current parameters.

    small = shrink(model, plan, optimizer)      # model is small now; optimizer.step() keeps working
"""
from __future__ import annotations

import torch
from torch import nn

from .._inputs import check_module
from ..graph import layout as L
from ..prune import Plan, apply


def plain_name(name: str) -> str:
    """``a.parametrizations.weight.original`` -> ``a.weight`` (names as the unmasked model has them)."""
    return name.replace(".parametrizations.", ".").replace("parametrizations.", "").removesuffix(".original")


def plain_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's parameters under their unmasked names (the stored tensor of a masked weight)."""
    return {plain_name(n): p for n, p in model.named_parameters()}


def _indices(plan: Plan) -> dict[str, list[tuple[int, torch.Tensor]]]:
    """Per tensor the plan shrinks: (dim, kept indices) pairs, as surgery slices it."""
    keep = {g["id"]: torch.tensor(sorted(set(range(g["size"])) - set(g["remove"])), dtype=torch.long)
            for g in plan.groups if g["remove"]}
    out: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for name, dims in plan.layouts.items():
        sel = [(int(d), L.kept(tree, keep)) for d, tree in dims.items() if L.groups_in(tree) & keep.keys()]
        if sel:
            out[name] = sel
    return out


def shrink(model: nn.Module, plan: Plan, optimizer: torch.optim.Optimizer | None = None) -> nn.Module:
    """Apply a structural ``plan`` to ``model`` in place (masks, if any, are baked first) and carry
    ``optimizer``'s state over to the smaller parameters; returns ``model``."""
    check_module(model)
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be a secateurs Plan, got {type(plan).__name__}")
    if plan.masks:
        raise ValueError("plan holds element masks (unstructured/N:M): nothing to shrink; shrink takes a channel or "
                         "head plan")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    before = plain_parameters(model)
    owned = {id(p) for g in (optimizer.param_groups if optimizer else []) for p in g["params"]}
    if optimizer is not None and not any(id(p) in owned for p in before.values()):
        raise ValueError("optimizer does not hold any parameter of this model")
    shapes = {n: tuple(p.shape) for n, p in before.items()}
    index = _indices(plan)
    apply(model, plan, inplace=True)  # checks that the plan fits before changing anything
    for name, p in model.named_parameters():
        if tuple(p.shape) != shapes.get(name, tuple(p.shape)):
            # A fresh Parameter: autograd caches a leaf's shape in its gradient accumulator, which a
            # graph still alive from the last step (a `loss` variable) keeps using otherwise.
            mod_name, _, attr = name.rpartition(".")
            mod = model.get_submodule(mod_name) if mod_name else model
            mod._parameters[attr] = nn.Parameter(p.detach(), requires_grad=p.requires_grad)
    if optimizer is None:
        return model
    after = dict(model.named_parameters())
    moved = {id(before[n]): after[n] for n in before if n in after}
    for group in optimizer.param_groups:
        group["params"] = [moved.get(id(p), p) for p in group["params"]]
    for name, old in before.items():
        state = optimizer.state.pop(old, None)
        if state is None:
            continue
        new_state = {}
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and tuple(value.shape) == shapes[name] and value.dim() > 0:
                for dim, idx in index.get(name, []):
                    value = value.index_select(dim, idx.to(value.device))
                value = value.contiguous()
            new_state[key] = value
        optimizer.state[after[name]] = new_state
    return model
