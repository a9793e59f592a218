"""Unstructured sparsity of a model, and what its weights would take stored in a sparse encoding.

Both read the *effective* parameter values (``effective_parameters``): a weight masked through a
torch parametrization counts with its masks applied, and is named like the plain parameter
(``conv.weight``, not ``conv.parametrizations.weight.original``).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from secateurs._inputs import check_module
from secateurs.measure.params import effective_parameters

#: Bytes per stored value of each sparse encoding (a bitmask of every element plus the nonzero values).
ENCODINGS: dict[str, int] = {"bitmask+fp32": 4, "bitmask+fp16": 2}


@dataclass(frozen=True)
class LayerSparsity:
    """One parameter tensor: its shape, element count, nonzero count and fraction of zeros."""

    shape: tuple[int, ...]
    numel: int
    nonzero: int
    sparsity: float


@dataclass(frozen=True)
class Sparsity:
    """Fraction of zeros in each weight tensor (every parameter with ``dim >= 2``) and over all of them.

    ``layers`` maps the parameter name (parametrizations resolved) to its ``LayerSparsity``;
    ``total`` is the fraction of zeros over all those tensors together (``1 - nonzero / numel``,
    0.0 when there are none), weighted by size.
    """

    layers: dict[str, LayerSparsity]
    numel: int
    nonzero: int
    total: float

    def __getitem__(self, name: str) -> LayerSparsity:
        return self.layers[name]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (shapes as lists)."""
        data = asdict(self)
        for layer in data["layers"].values():
            layer["shape"] = list(layer["shape"])
        return data

    def __str__(self) -> str:
        rows = [("layer", "shape", "sparsity")]
        rows += [(name, "x".join(map(str, s.shape)), _percent(s.sparsity)) for name, s in self.layers.items()]
        rows.append(("total", f"{self.numel} weights", _percent(self.total)))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        return "\n".join(
            f"{name:<{widths[0]}}  {shape:<{widths[1]}}  {value:>{widths[2]}}".rstrip() for name, shape, value in rows
        )


def sparsity(model: nn.Module) -> Sparsity:
    """Per-tensor and total fraction of zeros in ``model``'s weights (parameters with ``dim >= 2``).

    Masked weights (torch parametrizations) count with their masks applied and are named like plain
    parameters; a tied weight counts once. Biases, norm parameters and buffers are left out. The
    model is not changed.
    """
    check_module(model)
    layers: dict[str, LayerSparsity] = {}
    for name, tensor in effective_parameters(model).items():
        if tensor.dim() < 2:
            continue
        numel, nonzero = tensor.numel(), _nonzero(name, tensor)
        layers[name] = LayerSparsity(tuple(tensor.shape), numel, nonzero, _zero_fraction(numel, nonzero))
    numel = sum(s.numel for s in layers.values())
    nonzero = sum(s.nonzero for s in layers.values())
    return Sparsity(layers=layers, numel=numel, nonzero=nonzero, total=_zero_fraction(numel, nonzero))


@dataclass(frozen=True)
class WeightBytes:
    """Nonzero count, dense bytes and sparse-encoded bytes of a set of parameter tensors."""

    nonzero: int
    dense_bytes: int
    compressed_bytes: dict[str, int]


def weight_bytes(tensors: Iterable[tuple[str, torch.Tensor]]) -> WeightBytes:
    """Account ``(name, tensor)`` pairs: nonzero values, dense bytes and each encoding's bytes.

    dense = sum(numel * element_size); for each encoding in ``ENCODINGS`` with ``b`` bytes a value,
    compressed = sum over tensors of (ceil(numel / 8) + nonzero * b): one mask bit per element,
    padded to whole bytes per tensor, plus the nonzero values.
    """
    nonzero = dense = 0
    compressed = dict.fromkeys(ENCODINGS, 0)
    for name, tensor in tensors:
        count = _nonzero(name, tensor)
        nonzero += count
        dense += tensor.numel() * tensor.element_size()
        for encoding, value_bytes in ENCODINGS.items():
            compressed[encoding] += math.ceil(tensor.numel() / 8) + count * value_bytes
    return WeightBytes(nonzero=nonzero, dense_bytes=dense, compressed_bytes=compressed)


def _nonzero(name: str, tensor: torch.Tensor) -> int:
    if tensor.device.type == "meta":
        raise ValueError(f"parameter {name} is on the meta device: it has no values to count")
    return int(torch.count_nonzero(tensor)) if tensor.numel() else 0


def _zero_fraction(numel: int, nonzero: int) -> float:
    return 1.0 - nonzero / numel if numel else 0.0


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"
