"""Magnitude criteria (Han et al. 2015, "Learning both Weights and Connections"; Li et al. 2017,
"Pruning Filters for Efficient ConvNets"): an element is as important as its weights' size; a
group element as the norm of every weight removed with it, over all coupled layers."""
from __future__ import annotations

import torch
from torch import nn

from ..graph import Graph
from .registry import Context, Criterion, aggregate_flat, aggregate_sums, layout_power_sums, register


def _params(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach() for n in names}


def _group_power_sums(model: nn.Module, graph: Graph, p: int) -> dict[int, torch.Tensor]:
    """Per group element, the sum of ``|w| ** p`` over every weight removed with it (``aggregate`` of the
    elements' scores, reduced tensor by tensor without materialising them)."""
    return aggregate_sums(graph, layout_power_sums(model, graph, p))


@register("l1")
class L1(Criterion):
    """|w|; for a group element, the sum of |w| over all weights removed with it."""

    def elements(self, model: nn.Module, names: list[str], ctx: Context) -> dict[str, torch.Tensor]:
        return {n: w.abs() for n, w in _params(model, names).items()}

    def groups(self, model: nn.Module, graph: Graph, ctx: Context) -> dict[int, torch.Tensor]:
        return _group_power_sums(model, graph, 1)


@register("l2")
class L2(Criterion):
    """w^2 per element; for a group element, the Euclidean norm of all weights removed with it."""

    def elements(self, model: nn.Module, names: list[str], ctx: Context) -> dict[str, torch.Tensor]:
        return {n: w.float().square() for n, w in _params(model, names).items()}

    def finish(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.sqrt()

    def groups(self, model: nn.Module, graph: Graph, ctx: Context) -> dict[int, torch.Tensor]:
        flat, sizes = aggregate_flat(graph, layout_power_sums(model, graph, 2))
        return dict(zip(sizes, self.finish(flat).split(list(sizes.values()))))  # one sqrt for all groups
