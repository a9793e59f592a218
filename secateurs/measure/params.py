"""Parameter counts, serialized size (safetensors) and the effective parameter values of a model."""
from __future__ import annotations

from collections.abc import Hashable

import torch
from safetensors.torch import save
from torch import nn
from torch.nn.utils import parametrize

from secateurs._inputs import check_module


def count_params(model: nn.Module) -> int:
    """Number of parameter elements in ``model``; a tied (shared) parameter is counted once."""
    check_module(model)
    seen: set[Hashable] = set()
    total = 0
    for param in model.parameters():
        key = _view_key(param)
        if key not in seen:
            seen.add(key)
            total += param.numel()
    return total


def size_bytes(model: nn.Module) -> int:
    """Bytes of ``model.state_dict()`` serialized with safetensors; tied tensors are stored once."""
    check_module(model)
    return len(save(_unshared(model.state_dict())))


def is_masked(model: nn.Module) -> bool:
    """Whether any submodule carries torch parametrizations (e.g. secateurs 0/1 masks)."""
    check_module(model)
    return any(parametrize.is_parametrized(mod) for mod in model.modules())


def deployed_size_bytes(model: nn.Module) -> int:
    """Bytes of the state dict as it would be deployed: parametrizations baked into plain tensors.

    A masked model stores each weight's original *and* its mask; deployed, only the masked weight
    remains, so this is what ``size_bytes`` gives for the same model once its masks are baked in.
    """
    check_module(model)
    state = {k: v for k, v in model.state_dict().items() if "parametrizations" not in k.split(".")}
    state.update(effective_parameters(model))
    return len(save(_unshared(state)))


def effective_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter of ``model`` by name, as the model uses it: torch parametrizations resolved.

    A parametrized parameter (``conv.parametrizations.weight.original``, e.g. under a 0/1 mask) is
    reported as ``conv.weight`` with its *effective* value ``getattr(conv, "weight")``, i.e. after the
    masks; the parametrization's internals (its ``original`` tensors, and any parameters of the
    parametrization modules themselves) are not reported separately. Parametrized buffers are left
    out, like all buffers.

    A tied (shared) parameter appears once, under the first name ``named_modules`` reaches it by;
    a plain parameter that is also the ``original`` of a parametrization elsewhere appears only as
    that parametrized (effective) tensor. The tensors are detached (computed under ``no_grad``);
    the model is not changed.
    """
    check_module(model)
    modules = list(model.named_modules())
    originals: set[Hashable] = set()
    internals: set[int] = set()
    for _, mod in modules:
        if parametrize.is_parametrized(mod):
            internals.update(id(m) for m in mod.parametrizations.modules())
            for plist in mod.parametrizations.values():
                originals.update(_view_key(p) for p in plist._parameters.values() if p is not None)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[Hashable] = set()
    for prefix, mod in modules:
        if id(mod) in internals:
            continue
        dot = prefix + "." if prefix else ""
        if parametrize.is_parametrized(mod):
            for attr, plist in mod.parametrizations.items():
                if not any(p is not None for p in plist._parameters.values()) or id(plist) in seen:
                    continue  # a parametrized buffer, or a parametrization already reported
                seen.add(id(plist))
                with torch.no_grad():
                    tensors[dot + attr] = getattr(mod, attr).detach()
        for name, param in mod._parameters.items():
            if param is None:
                continue
            key = _view_key(param)
            if key in originals or key in seen:
                continue
            seen.add(key)
            tensors[dot + name] = param.detach()
    return tensors


def _unshared(state: dict[str, object]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory: drop exact duplicates (tied weights) and copy
    # out any other view of a storage already taken, or any non-contiguous tensor
    tensors: dict[str, torch.Tensor] = {}
    views: set[Hashable] = set()
    storages: set[Hashable] = set()
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        tensor = value.detach()
        key = _view_key(tensor)
        if key in views:
            continue
        views.add(key)
        storage = key[:2]
        if storage in storages or not tensor.is_contiguous():
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        storages.add(storage)
        tensors[name] = tensor
    return tensors


def _view_key(tensor: torch.Tensor) -> tuple:
    """What makes two tensors the same data: storage, offset, shape, strides and dtype."""
    if tensor.device.type == "meta" or tensor.numel() == 0:
        return ("object", id(tensor))
    return (
        tensor.device,
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tensor.stride(),
        tensor.dtype,
    )
