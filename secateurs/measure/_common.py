"""Shared helpers for the measure package: temporary eval mode and integer argument checks."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore every submodule's own ``training`` flag."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


def check_int(value: Any, name: str, minimum: int) -> int:
    """Return ``value`` if it is an integer >= ``minimum``; otherwise raise a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value
