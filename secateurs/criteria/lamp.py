"""Layer-adaptive magnitude-based pruning (Lee et al. 2021, "Layer-adaptive Sparsity for the
Magnitude-based Pruning", ICLR): magnitudes rescaled so that one global threshold is fair to
every layer."""
from __future__ import annotations

import torch
from torch import nn

from ..graph import Graph
from .registry import Context, Criterion, aggregate_sums, layout_power_sums, register


def lamp_normalise(sq: torch.Tensor) -> torch.Tensor:
    """LAMP scores from squared magnitudes ``sq`` (any shape; one layer or one group).

    Sorting ``sq`` ascending (ties by position), ``score(u) = sq_u / sum_{v >= u} sq_v``: the largest
    entry scores exactly 1, and an entry whose suffix sum is 0 (all-zero tail) scores 0.
    """
    flat = sq.detach().reshape(-1).double().cpu()
    if flat.numel() == 0:
        return flat.view(sq.shape)
    srt, order = torch.sort(flat, stable=True)
    suffix = srt.flip(0).cumsum(0).flip(0)
    val = torch.where(suffix > 0, srt / suffix.clamp(min=torch.finfo(torch.float64).tiny), torch.zeros_like(srt))
    out = torch.empty_like(flat)
    out[order] = val
    return out.view(sq.shape)


@register("lamp")
class LAMP(Criterion):
    """LAMP scores (Lee et al. 2021).

    ``elements``: per parameter tensor, ``score(u) = w_u^2 / sum_{v >= u} w_v^2`` over the tensor's
    weights sorted by magnitude ascending. Every tensor's largest weight scores exactly 1, so a
    single global threshold (``scope="global"``) never empties a layer and compares layers of
    different scales fairly.

    ``groups``: the same normalisation applied within each group to its squared L2 scores (the sum
    of ``w^2`` over every weight removed with an element, as criterion ``l2``): the group's
    strongest element scores 1.
    """

    comparable = True

    def elements(self, model: nn.Module, names: list[str], ctx: Context) -> dict[str, torch.Tensor]:
        named = dict(model.named_parameters())
        return {n: lamp_normalise(named[n].detach().double().square()) for n in names}

    def groups(self, model: nn.Module, graph: Graph, ctx: Context) -> dict[int, torch.Tensor]:
        sq = aggregate_sums(graph, layout_power_sums(model, graph, 2))
        return {gid: lamp_normalise(s) for gid, s in sq.items()}
