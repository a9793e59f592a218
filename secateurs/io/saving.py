"""Save a pruned model as ``model.safetensors`` + ``plan.json``; load it onto a freshly built model.

Loading validates the plan against the fresh model, applies it (so its shapes and module attributes
match) and then loads the weights, checked first: a file can only ever supply tensors, never code.
"""
from __future__ import annotations

import copy
import os

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .._inputs import check_module
from ..prune import Plan, apply
from ..prune.surgery import finalize

WEIGHTS, PLAN = "model.safetensors", "plan.json"


def save(model: nn.Module, plan: Plan, directory: str | os.PathLike) -> None:
    """Write ``model``'s weights (masks baked in) and ``plan`` into ``directory``."""
    check_module(model)
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be a secateurs Plan, got {type(plan).__name__}")
    os.makedirs(directory, exist_ok=True)
    baked = finalize(copy.deepcopy(model))
    state = {k: v.detach().contiguous().clone() for k, v in baked.state_dict().items()}
    save_file(state, os.path.join(directory, WEIGHTS))
    with open(os.path.join(directory, PLAN), "w") as f:
        f.write(plan.to_json())


def load(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Rebuild a saved pruned model from a freshly constructed ``model`` of the same architecture."""
    check_module(model)
    for name in (WEIGHTS, PLAN):
        if not os.path.exists(os.path.join(directory, name)):
            raise FileNotFoundError(f"{directory} holds no {name}: not a directory written by secateurs.save")
    with open(os.path.join(directory, PLAN)) as f:
        plan = Plan.from_json(f.read())
    pruned = apply(model, plan, mode="mask" if plan.masks else "remove")  # validates the plan first
    finalize(pruned)
    try:
        state = load_file(os.path.join(directory, WEIGHTS))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type
        raise ValueError(f"{os.path.join(directory, WEIGHTS)} is not a readable safetensors file: "
                         f"{str(exc)[:200]}") from exc
    _check_weights(state, pruned.state_dict())
    pruned.load_state_dict(state)
    return pruned


def _check_weights(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Every saved tensor fits the model rebuilt from the plan (checked before any is loaded)."""
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    wrong = [f"{k} {list(state[k].shape)} (model: {list(expected[k].shape)})"
             for k in sorted(expected.keys() & state.keys()) if state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"saved weights do not fit the model rebuilt from the plan: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}"[:500])
