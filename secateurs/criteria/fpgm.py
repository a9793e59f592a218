"""Filter pruning via geometric median (He et al. 2019, "Filter Pruning via Geometric Median for
Deep Convolutional Neural Networks Acceleration", CVPR): the filters nearest the geometric median
of a layer are the ones its other filters can stand in for, whatever their norm."""
from __future__ import annotations

import torch
from torch import nn

from ..graph import Graph
from ..graph import layout as L
from .registry import Context, Criterion, aggregate, register

_FLOAT64_MAX = 1 << 24  # filters up to this many numbers are compared in float64


def distance_sums(weight: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """For each filter (slice of ``weight`` along ``dim``): the sum of its Euclidean distances to
    all the other filters of the tensor (float64, on the CPU)."""
    filters = weight.detach().movedim(dim, 0).reshape(weight.shape[dim], -1)
    filters = filters.double() if filters.numel() <= _FLOAT64_MAX else filters.float()
    dist = torch.cdist(filters[None], filters[None])[0]
    dist.fill_diagonal_(0)
    return dist.sum(dim=1).double().cpu()


@register("fpgm")
class FPGM(Criterion):
    """Geometric-median filter pruning (He et al. 2019).

    For each producing weight of a group (role "out", at least 2-D: conv and linear weights, HF
    ``Conv1D``, embeddings; the filter is the slice along the producing dimension, dim 0 for conv
    and linear), every filter is scored by the sum of its Euclidean distances to the other filters
    of the same tensor: the paper's approximation of the distance to the geometric median. Small
    means redundant. A group element gets the sum of these over the group's producing weights (and
    over the rows of a head). A group with no such weight falls back to the L2 norm of its weights.

    Scores filters only: ``elements`` raises ValueError (use a channel or head granularity).
    """

    def elements(self, model: nn.Module, names: list[str], ctx: Context) -> dict[str, torch.Tensor]:
        raise ValueError("criterion 'fpgm' scores filters, not single weights: use a channel granularity "
                         "(granularity='channel' or 'head')")

    def groups(self, model: nn.Module, graph: Graph, ctx: Context) -> dict[int, torch.Tensor]:
        named = dict(model.named_parameters())
        out = {g.id: torch.zeros(g.size, dtype=torch.float64) for g in graph.groups}
        scored: set[int] = set()
        done: set[tuple[str, int]] = set()
        for g in graph.groups:
            for name, dim, role in g.tensors:
                if role != "out" or name not in named or named[name].dim() < 2 or (name, dim) in done:
                    continue
                done.add((name, dim))
                tree = graph.layouts.get(name, {}).get(dim)
                if tree is None:
                    continue
                per_filter = distance_sums(named[name], dim)
                for gid, co in L.coords(tree).items():
                    keep = co >= 0
                    out[gid].index_add_(0, co[keep], per_filter[keep])
                    scored.add(gid)
        missing = [g.id for g in graph.groups if g.id not in scored]
        if missing:
            l2 = aggregate(graph, {n: named[n].detach().float().square().cpu() for n in graph.layouts if n in named})
            for gid in missing:
                out[gid] = l2[gid].sqrt()
        return out
