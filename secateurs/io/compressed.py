"""A compressed file for element-sparse models: per parameter a bitmask of its nonzeros plus their values.

Stored as safetensors (no pickle, nothing executed): for every parameter ``name`` (masks baked in)
the tensors ``name:mask`` (uint8, ``ceil(numel / 8)`` packed bits, row-major) and ``name:values``
(the nonzero values, fp32 or fp16); buffers (BatchNorm statistics ...) are stored dense under their
own name. The metadata holds the format, version, encoding, each tensor's shape and dtype, tied
names, and a SHA-256 of every stored byte, so a truncated, corrupted or tampered file is refused
before anything is loaded. The size on disk is ``sc.measure(model).compressed_bytes[encoding]``
plus the buffers and the safetensors header.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import nn

from ..measure.params import _view_key
from ..measure.sparsity import ENCODINGS

FORMAT, VERSION = "secateurs-compressed", "1"
FILE = "model.compressed.safetensors"
VALUE_DTYPES = {"bitmask+fp32": torch.float32, "bitmask+fp16": torch.float16}


def check_encoding(compressed: bool | str) -> str | None:
    """The encoding ``compressed`` names (True means ``"bitmask+fp32"``), or None for a dense file."""
    if compressed is False:
        return None
    if compressed is True:
        return "bitmask+fp32"
    if compressed not in ENCODINGS:
        raise ValueError(f"compressed must be True, False or one of {list(ENCODINGS)}, got {compressed!r}")
    return compressed


def encode(model: nn.Module, encoding: str) -> bytes:
    """The compressed safetensors bytes of ``model``'s state (masks must already be baked in)."""
    value_dtype = VALUE_DTYPES[encoding]
    params = {id(p) for p in model.parameters()}
    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    dtypes: dict[str, str] = {}
    aliases: dict[str, str] = {}
    seen: dict[Any, str] = {}
    for name, value in model.state_dict(keep_vars=True).items():
        tensor = value.detach().cpu()
        key = _view_key(tensor)
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        shapes[name], dtypes[name] = list(tensor.shape), str(tensor.dtype).removeprefix("torch.")
        if id(value) in params and tensor.is_floating_point():
            flat = tensor.flatten()
            nonzero = flat != 0
            tensors[f"{name}:mask"] = torch.from_numpy(np.packbits(nonzero.numpy().astype(np.uint8)))
            tensors[f"{name}:values"] = flat[nonzero].to(value_dtype).contiguous()
        else:
            tensors[name] = tensor.contiguous().clone()
    compact = {"separators": (",", ":")}
    metadata = {"format": FORMAT, "version": VERSION, "encoding": encoding, "shapes": json.dumps(shapes, **compact),
                "dtypes": json.dumps(dtypes, **compact), "aliases": json.dumps(aliases, **compact),
                "sha256": _digest(tensors)}
    return save_bytes(tensors, metadata=metadata)


def decode(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The full state dict stored in a compressed file; ValueError for any file that is not intact."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        tensors = load_bytes(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupted?): {exc}") from exc
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a secateurs compressed file (format {metadata.get('format')!r})")
    if metadata.get("version") != VERSION:
        raise ValueError(f"{path} has compressed-format version {metadata.get('version')!r}; "
                         f"this secateurs reads version {VERSION}")
    if metadata.get("sha256") != _digest(tensors):
        raise ValueError(f"{path} fails its checksum: the stored tensors were changed after saving")
    try:
        shapes, dtypes, aliases = (json.loads(metadata[k]) for k in ("shapes", "dtypes", "aliases"))
        state = {name: _tensor(name, tensors, shapes[name], dtypes[name]) for name in shapes}
        for name, target in aliases.items():
            state[name] = state[target]
    except (KeyError, TypeError, json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"{path} has malformed metadata: {type(exc).__name__}: {exc}") from exc
    return state


def _tensor(name: str, tensors: dict[str, torch.Tensor], shape: list[int], dtype: str) -> torch.Tensor:
    target = getattr(torch, dtype)
    if not isinstance(target, torch.dtype):
        raise ValueError(f"tensor {name!r}: unknown dtype {dtype!r}")
    if name in tensors:  # stored dense
        t = tensors[name]
        if list(t.shape) != shape or t.dtype != target:
            raise ValueError(f"tensor {name!r}: stored {tuple(t.shape)} {t.dtype}, metadata says {shape} {dtype}")
        return t
    numel = math.prod(shape)
    packed, values = tensors[f"{name}:mask"], tensors[f"{name}:values"]
    if packed.dtype != torch.uint8 or packed.numel() != math.ceil(numel / 8):
        raise ValueError(f"tensor {name!r}: mask has {packed.numel()} bytes, "
                         f"shape {shape} needs {math.ceil(numel / 8)}")
    bits = torch.from_numpy(np.unpackbits(packed.numpy())[:numel].astype(bool))
    if int(bits.sum()) != values.numel():
        raise ValueError(f"tensor {name!r}: mask marks {int(bits.sum())} nonzeros, {values.numel()} values stored")
    out = torch.zeros(numel, dtype=target)
    out[bits] = values.to(target)
    return out.view(shape)


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
