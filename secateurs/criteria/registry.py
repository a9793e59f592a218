"""The criterion registry: ``register("name")`` on a scorer, ``get_criterion("name")`` to fetch it."""
from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import nn

from ..graph import Graph


class Criterion(Protocol):
    def __call__(self, model: nn.Module, graph: Graph, *, seed: int) -> dict[int, torch.Tensor]:
        """Scores per group id: a 1-D tensor as long as the group; higher is more important."""


CRITERIA: dict[str, Criterion] = {}


def register(name: str) -> Callable[[Criterion], Criterion]:
    def deco(fn: Criterion) -> Criterion:
        CRITERIA[name] = fn
        return fn
    return deco


def get_criterion(name: str) -> Criterion:
    """The criterion called ``name``; a ValueError lists the valid names otherwise."""
    if name not in CRITERIA:
        raise ValueError(f"criterion must be one of {sorted(CRITERIA)}, got {name!r}")
    return CRITERIA[name]
