"""Random importance: the baseline every criterion must beat (seeded, so plans are reproducible)."""
from __future__ import annotations

import torch
from torch import nn

from ..graph import Graph
from .registry import Context, Criterion, register


@register("random")
class Random(Criterion):
    """Uniform random scores from a generator seeded with ``ctx.seed``."""

    def elements(self, model: nn.Module, names: list[str], ctx: Context) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(ctx.seed)
        params = dict(model.named_parameters())
        return {n: torch.rand(params[n].shape, generator=gen) for n in names}

    def groups(self, model: nn.Module, graph: Graph, ctx: Context) -> dict[int, torch.Tensor]:
        gen = torch.Generator().manual_seed(ctx.seed)
        return {g.id: torch.rand(g.size, generator=gen, dtype=torch.float64) for g in graph.groups}
