"""Which of a model's outputs are wanted: names of ModelOutput fields or dict keys, or tuple indices.

A model that returns hidden states next to its logits pins its hidden width: every returned tensor
keeps its shape. ``outputs=["logits"]`` says only the logits matter; the others may change shape.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ._inputs import iter_tensors

OutputKeys = Sequence[str | int] | None


def check_outputs(outputs: Any) -> list[str | int] | None:
    """None (every output is wanted) or a non-empty list of names and indices; TypeError/ValueError otherwise."""
    if outputs is None:
        return None
    if isinstance(outputs, (str, int)) or not isinstance(outputs, (list, tuple)):
        raise TypeError(f"outputs must be None or a list of output names (ModelOutput fields, dict keys) or tuple "
                        f"indices, such as ['logits'], got {outputs!r}")
    if not outputs:
        raise ValueError("outputs must name at least one output (None keeps them all)")
    for k in outputs:
        if isinstance(k, bool) or not isinstance(k, (str, int)):
            raise TypeError(f"outputs entries must be names (str) or tuple indices (int), got {k!r} in {list(outputs)}")
    if len(set(outputs)) != len(outputs):
        raise ValueError(f"outputs names an output twice: {list(outputs)}")
    return list(outputs)


def available(out: Any) -> list[str | int]:
    """What ``outputs`` may name for a model that returned ``out``."""
    if isinstance(out, Mapping):
        return [k for k, v in out.items() if any(True for _ in iter_tensors(v))]
    if isinstance(out, (tuple, list)):
        return list(range(len(out)))
    return []


def select_outputs(out: Any, outputs: list[str | int] | None) -> list[torch.Tensor]:
    """The tensors of the wanted outputs (all of them when ``outputs`` is None), in a fixed order."""
    if outputs is None:
        return list(iter_tensors(out))
    can = available(out)
    picked = []
    for k in outputs:
        if k not in can or (isinstance(k, int) and not isinstance(out, (tuple, list))):
            shown = f"it returns {type(out).__name__} with outputs {can}" if can else \
                f"it returns a single {type(out).__name__}, so there is nothing to choose"
            raise ValueError(f"outputs names {k!r}, which the model does not return: {shown}")
        picked.extend(iter_tensors(out[k]))
    return picked
