"""Parameter counts and serialized size (safetensors) of a model."""
from __future__ import annotations

from typing import Hashable

import torch
from safetensors.torch import save
from torch import nn

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
