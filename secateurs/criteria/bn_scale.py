"""Network slimming (Liu et al. 2017, "Learning Efficient Convolutional Networks through Network
Slimming", ICCV): a channel is as important as the batch-norm scale factor gamma that gates it."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..graph import Graph
from .registry import Context, Criterion, aggregate, register


def is_bn_weight(model: nn.Module, name: str) -> bool:
    """True when ``name`` is the ``weight`` (gamma) of a BatchNorm module of ``model``."""
    mod_name, _, leaf = name.rpartition(".")
    if leaf != "weight":
        return False
    try:
        mod = model.get_submodule(mod_name)
    except AttributeError:
        return False
    return isinstance(mod, _BatchNorm)


@register("bn_scale")
class BNScale(Criterion):
    """|gamma| of the batch norms that produce a group's channels (Liu et al. 2017).

    ``groups``: for a group with batch-norm weights among its producing tensors (role "out"), an
    element's score is the mean of ``|gamma|`` over those batch norms (several when a residual
    add ties their channels). A group with no batch norm falls back to L1 (the sum of ``|w|`` over
    every weight removed with the element, as criterion ``l1``), rescaled so that the group's mean
    score equals the mean ``|gamma|`` score over all elements of the model's batch-norm groups:
    raw L1 sums are orders of magnitude off the gamma scale, which would make such groups go
    first (or never) under a global threshold for no reason. Without any batch norm in the model
    the scores are plain L1.

    ``elements``: ``|w|`` for every parameter (``|gamma|`` for batch-norm weights, the L1 magnitude
    for the others).
    """

    def elements(self, model: nn.Module, names: list[str], ctx: Context) -> dict[str, torch.Tensor]:
        named = dict(model.named_parameters())
        return {n: named[n].detach().abs().cpu() for n in names}

    def groups(self, model: nn.Module, graph: Graph, ctx: Context) -> dict[int, torch.Tensor]:
        named = dict(model.named_parameters())
        with_bn: dict[int, bool] = {}
        bn_names: set[str] = set()
        for g in graph.groups:
            found = [n for n, _, role in g.tensors if role == "out" and n in named and is_bn_weight(model, n)]
            with_bn[g.id] = bool(found)
            bn_names.update(found)
        gamma = aggregate(graph, {n: named[n].detach().abs().cpu() for n in bn_names})
        count = aggregate(graph, {n: torch.ones(named[n].shape) for n in bn_names})
        l1 = aggregate(graph, {n: named[n].detach().abs().cpu() for n in graph.layouts if n in named})
        out: dict[int, torch.Tensor] = {}
        for g in graph.groups:
            if with_bn[g.id]:
                out[g.id] = gamma[g.id] / count[g.id].clamp(min=1)
        ref = torch.cat(list(out.values())).mean() if out else None
        for g in graph.groups:
            if g.id in out:
                continue
            s = l1[g.id]
            mean = s.mean()
            out[g.id] = s / mean * ref if ref is not None and mean > 0 else s
        return out
