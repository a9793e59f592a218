"""Random importance: the baseline every criterion must beat (seeded, so plans are reproducible)."""
from __future__ import annotations

import torch
from torch import nn

from ..graph import Graph
from .registry import register


@register("random")
def random(model: nn.Module, graph: Graph, *, seed: int = 0) -> dict[int, torch.Tensor]:
    """Uniform random scores from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return {g.id: torch.rand(g.size, generator=gen, dtype=torch.float64) for g in graph.groups}
