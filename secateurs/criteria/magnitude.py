"""Magnitude criteria (Li et al. 2017, "Pruning Filters for Efficient ConvNets"): a group element is
as important as the norm of every weight that goes with it, over all coupled layers."""
from __future__ import annotations

import torch
from torch import nn

from ..graph import Graph
from ..graph import layout as L
from .registry import register


def group_norms(model: nn.Module, graph: Graph, p: int) -> dict[int, torch.Tensor]:
    """Sum over coupled parameters of |w|^p, per group element (buffers are not weights)."""
    params = dict(model.named_parameters())
    scores = {g.id: torch.zeros(g.size, dtype=torch.float64) for g in graph.groups}
    for name, dims in graph.layouts.items():
        w = params.get(name)
        if w is None:
            continue
        w = w.detach().float().abs().pow(p)
        for dim, tree in dims.items():
            other = [d for d in range(w.dim()) if d != dim]
            per_index = (w.sum(dim=other) if other else w).to(torch.float64)
            for gid, co in L.coords(tree).items():
                keep = co >= 0
                scores[gid].index_add_(0, co[keep], per_index[keep])
    return scores


@register("l1")
def l1(model: nn.Module, graph: Graph, *, seed: int = 0) -> dict[int, torch.Tensor]:
    """Sum of |w| over all weights removed with the element."""
    return group_norms(model, graph, 1)


@register("l2")
def l2(model: nn.Module, graph: Graph, *, seed: int = 0) -> dict[int, torch.Tensor]:
    """Euclidean norm of all weights removed with the element."""
    return {k: v.sqrt() for k, v in group_norms(model, graph, 2).items()}
