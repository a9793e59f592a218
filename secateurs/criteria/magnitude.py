"""Magnitude criteria (Han et al. 2015, "Learning both Weights and Connections"; Li et al. 2017,
"Pruning Filters for Efficient ConvNets"): an element is as important as its weights' size; a
group element as the norm of every weight removed with it, over all coupled layers."""
from __future__ import annotations

import torch
from torch import nn

from .registry import Context, Criterion, register


def _params(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach() for n in names}


@register("l1")
class L1(Criterion):
    """|w|; for a group element, the sum of |w| over all weights removed with it."""

    def elements(self, model: nn.Module, names: list[str], ctx: Context) -> dict[str, torch.Tensor]:
        return {n: w.abs() for n, w in _params(model, names).items()}


@register("l2")
class L2(Criterion):
    """w^2 per element; for a group element, the Euclidean norm of all weights removed with it."""

    def elements(self, model: nn.Module, names: list[str], ctx: Context) -> dict[str, torch.Tensor]:
        return {n: w.float().square() for n, w in _params(model, names).items()}

    def finish(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.sqrt()
