"""Save a pruned model as ``model.safetensors`` + ``plan.json``; load it onto a freshly built model.

Loading validates the plan against the fresh model, applies it (so its shapes and module attributes
match) and then loads the weights, checked first: a file can only ever supply tensors, never code.
``compressed=True`` writes ``model.compressed.safetensors`` instead (bitmask + nonzero values, see
``io/compressed.py``); ``load`` detects which one a directory holds.
"""
from __future__ import annotations

import copy
import os

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from torch import nn

from .._inputs import check_module, check_path
from ..prune import Plan, apply
from ..prune.planner import CARRIED, carried_plan
from ..prune.surgery import finalize
from . import compressed as C

WEIGHTS, PLAN = "model.safetensors", "plan.json"


def save(model: nn.Module, plan: Plan | str | os.PathLike | None = None, directory: str | os.PathLike | None = None,
         *, compressed: bool | str = False) -> None:
    """Write ``model``'s weights (masks baked in) and ``plan`` into ``directory``.

    A model masked by ``apply(..., mode="mask")`` with a channel or head plan is saved physically
    pruned, as ``load`` rebuilds it.

    ``save(model, directory)`` uses the plan ``sc.prune`` attached to ``model``. ``compressed``
    (True, or an encoding of ``sc.measure``'s ``compressed_bytes`` such as ``"bitmask+fp16"``)
    stores each parameter as a bitmask plus its nonzero values. Files are written under temporary
    names and renamed, so a failed save leaves no half-written file.
    """
    check_module(model)
    if directory is None and isinstance(plan, (str, os.PathLike)):
        plan, directory = None, plan
    if directory is None:
        raise TypeError("save needs a directory: save(model, directory) or save(model, plan, directory)")
    directory = check_path(directory, "directory")
    if plan is None:
        plan = carried_plan(model)
        if plan is None:
            raise ValueError("model carries no plan (only sc.prune's result does, and not once pruned twice): "
                             "pass the plan, save(model, plan, directory)")
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be a secateurs Plan, got {type(plan).__name__}")
    encoding = C.check_encoding(compressed)
    os.makedirs(directory, exist_ok=True)
    pending = vars(model).get("_secateurs_plan")  # structured masks (apply mode="mask"): load rebuilds them removed
    baked = finalize(copy.deepcopy(model))
    if isinstance(pending, Plan) and not pending.masks:  # with element masks, load keeps the masked shapes too
        if pending.to_json() != plan.to_json():
            raise ValueError("model is masked (apply(..., mode='mask')) by a different plan from the one given: "
                             "save it with the plan it was masked by")
        baked = apply(baked, pending, inplace=True)
    if encoding is None:
        weights, stale = WEIGHTS, C.FILE
        data = save_bytes({k: v.detach().contiguous().clone() for k, v in baked.state_dict().items()})
    else:
        weights, stale, data = C.FILE, WEIGHTS, C.encode(baked, encoding)
    _write({os.path.join(directory, weights): data, os.path.join(directory, PLAN): plan.to_json().encode()})
    if os.path.exists(os.path.join(directory, stale)):
        os.remove(os.path.join(directory, stale))  # one weights file per directory: load never has to guess


def load(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Rebuild a saved pruned model from a freshly constructed ``model`` of the same architecture."""
    check_module(model)
    directory = check_path(directory, "directory")
    weights = C.FILE if os.path.exists(os.path.join(directory, C.FILE)) else WEIGHTS
    for name in (weights, PLAN):
        if not os.path.exists(os.path.join(directory, name)):
            raise FileNotFoundError(f"{directory} holds no {name}: not a directory written by secateurs.save")
    with open(os.path.join(directory, PLAN)) as f:
        plan = Plan.from_json(f.read())
    pruned = apply(model, plan, mode="mask" if plan.masks else "remove")  # validates the plan first
    finalize(pruned)
    path = os.path.join(directory, weights)
    try:
        state = C.decode(path) if weights == C.FILE else load_file(path)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type
        raise ValueError(f"{path} is not a readable safetensors file: "
                         f"{str(exc)[:200]}") from exc
    _check_weights(state, pruned.state_dict())
    pruned.load_state_dict(state)
    vars(pruned)[CARRIED] = plan  # like sc.prune's result: save(loaded, directory) needs no plan
    return pruned


def _check_weights(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Every saved tensor fits the model rebuilt from the plan (checked before any is loaded)."""
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    wrong = [f"{k} {list(state[k].shape)} (model: {list(expected[k].shape)})"
             for k in sorted(expected.keys() & state.keys()) if state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"saved weights do not fit the model rebuilt from the plan: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}"[:500])


def _write(files: dict[str, bytes]) -> None:
    """Write every file under a temporary name first, then rename them all: a failed write replaces nothing."""
    temps = {path: f"{path}.tmp{os.getpid()}" for path in files}
    try:
        for path, data in files.items():
            with open(temps[path], "wb") as f:
                f.write(data)
        for path, tmp in temps.items():
            os.replace(tmp, path)
    finally:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.remove(tmp)
