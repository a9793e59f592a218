"""The criterion registry and the one interface every criterion implements.

A criterion scores *elements* of parameters (one score per weight, higher = more important).
Structured pruning needs a score per group element; by default it is the sum of the element
scores of every weight removed with that element, over all coupled layers (``aggregate``), and a
criterion may refine that (``finish``) or replace it (``groups``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..graph import Graph
from ..graph import layout as L


@dataclass
class Context:
    """What a criterion may use besides the weights: a seed, and data for criteria that need it.

    ``batches`` yields batches as ``loss_fn`` expects them; ``loss_fn(model, batch)`` returns a
    scalar loss to differentiate.
    """

    seed: int = 0
    batches: Iterable[Any] | None = None
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None


class Criterion:
    """Base class: override ``elements``; optionally ``finish`` or ``groups``."""

    name = ""
    needs_data = False
    comparable = False  # scores already comparable across groups (global ranking uses them as they are)

    def elements(self, model: nn.Module, names: list[str], ctx: Context) -> dict[str, torch.Tensor]:
        """Per-element scores (same shape as the parameter) for the named parameters."""
        raise NotImplementedError

    def finish(self, scores: torch.Tensor) -> torch.Tensor:
        """Turn summed element scores of one group into its final scores (identity by default)."""
        return scores

    def groups(self, model: nn.Module, graph: Graph, ctx: Context) -> dict[int, torch.Tensor]:
        """Scores per group id: a float64 vector as long as the group."""
        params = dict(model.named_parameters())
        names = [n for n in graph.layouts if n in params]
        return {gid: self.finish(s) for gid, s in aggregate(graph, self.elements(model, names, ctx)).items()}


def aggregate(graph: Graph, element_scores: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Sum element scores over every slice that goes with each group element (all coupled layers)."""
    out = {g.id: torch.zeros(g.size, dtype=torch.float64) for g in graph.groups}
    for name, dims in graph.layouts.items():
        s = element_scores.get(name)
        if s is None:
            continue
        s = s.detach().float()
        for dim, tree in dims.items():
            other = [d for d in range(s.dim()) if d != dim]
            per_index = (s.sum(dim=other) if other else s).to(torch.float64)
            for gid, co in L.coords(tree).items():
                keep = co >= 0
                out[gid].index_add_(0, co[keep], per_index[keep])
    return out


CRITERIA: dict[str, Criterion] = {}


def register(name: str) -> Callable[[type[Criterion]], type[Criterion]]:
    """Class decorator: make a Criterion subclass available under ``name``."""
    def deco(cls: type[Criterion]) -> type[Criterion]:
        cls.name = name
        CRITERIA[name] = cls()
        return cls
    return deco


def get_criterion(name: str | Criterion) -> Criterion:
    """The criterion called ``name`` (a Criterion instance is returned as it is); a ValueError lists
    the valid names otherwise."""
    if isinstance(name, Criterion):
        return name
    if not isinstance(name, str):
        raise TypeError(f"criterion must be a string, one of {sorted(CRITERIA)}, "
                        f"got {type(name).__name__} {name!r:.80}")
    if name not in CRITERIA:
        raise ValueError(f"criterion must be one of {sorted(CRITERIA)}, got {name!r}")
    return CRITERIA[name]


def check_data(crit: Criterion, ctx: Context) -> None:
    """Criteria that need data say so clearly when called without it."""
    if crit.needs_data and (ctx.batches is None or ctx.loss_fn is None):
        raise ValueError(f"criterion {crit.name!r} needs data: pass batches=<iterable of batches> and "
                         "loss_fn=<callable(model, batch) -> scalar loss>")
