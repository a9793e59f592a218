"""Regularisers to add to the training loss, so that weights or whole channels head to zero first.

    reg = GroupLasso(model, x, weight=1e-3)          # every coupled slice of a channel counted together
    loss = task_loss + reg(model)
    ...
    small = remove_groups_below(model, x, threshold=1e-3)   # physically drop the groups it zeroed

Each regulariser is a callable ``reg(model) -> scalar tensor``; it reads the weights as the model
uses them (a weight masked by a Pruner counts as its masked value). ``L1`` and ``L2`` act on the
usual sparsity targets (Linear, Conv, Embedding weights); ``BNGammaL1`` on batch-norm scales
(network slimming, Liu et al. 2017); ``GroupLasso`` (Yuan & Lin 2006; Wen et al. 2016) on the
dependency groups of ``sc.trace``: one Euclidean norm per channel (or head) over every weight
removed with it, in every coupled layer, so the penalty pushes exactly what surgery can remove.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize

from .._inputs import ExampleInputs, check_module, check_real
from ..graph import Graph, trace
from ..graph import layout as L
from ..prune import apply, finalize, plan
from ..prune.elements import default_targets
from .optim_state import plain_parameters


def _current(model: nn.Module, name: str) -> torch.Tensor:
    """The tensor ``name`` as the forward sees it (masked, if a parametrization masks it)."""
    mod_name, _, attr = name.rpartition(".")
    return getattr(model.get_submodule(mod_name) if mod_name else model, attr)


class _Elementwise:
    def __init__(self, weight: float, params: Iterable[str] | None = None):
        self.weight = check_real(weight, "weight", "[0, inf)")
        self.params = None if params is None else list(params)

    def _names(self, model: nn.Module) -> list[str]:
        if self.params is None:
            return default_targets(model)
        known = plain_parameters(model)
        missing = [n for n in self.params if n not in known]
        if missing:
            raise ValueError(f"params names {missing[:3]}, which {type(model).__name__} does not have")
        return self.params


class L1(_Elementwise):
    """``weight * sum |w|`` over Linear/Conv/Embedding weights (or the named ``params``): drives
    single weights to exactly zero under a subgradient method, for unstructured pruning after."""

    def __call__(self, model: nn.Module) -> torch.Tensor:
        check_module(model)
        return self.weight * sum(_current(model, n).abs().sum() for n in self._names(model))


class L2(_Elementwise):
    """``weight * sum w^2`` over Linear/Conv/Embedding weights (or the named ``params``)."""

    def __call__(self, model: nn.Module) -> torch.Tensor:
        check_module(model)
        return self.weight * sum(_current(model, n).square().sum() for n in self._names(model))


class BNGammaL1:
    """Network slimming's penalty (Liu et al. 2017): ``weight * sum |gamma|`` over every batch
    norm's scale; prune afterwards with ``sc.prune(model, x, ratio, criterion="bn_scale", scope="global")``."""

    def __init__(self, weight: float):
        self.weight = check_real(weight, "weight", "[0, inf)")

    def __call__(self, model: nn.Module) -> torch.Tensor:
        check_module(model)
        gammas = [_current(model, f"{n}.weight" if n else "weight") for n, m in model.named_modules()
                  if isinstance(m, _BatchNorm) and m.affine]
        if not gammas:
            raise ValueError(f"BNGammaL1: {type(model).__name__} has no affine batch norm to regularise")
        return self.weight * sum(g.abs().sum() for g in gammas)


def group_norms(model: nn.Module, graph: Graph, kind: str = "channel") -> dict[int, torch.Tensor]:
    """Per group of ``kind``: the Euclidean norm of each element over every coupled parameter slice
    (differentiable; the same quantity as the ``l2`` criterion's group scores)."""
    params = plain_parameters(model)
    ids = {g.id for g in graph.groups if g.kind == kind}
    squares = {g.id: None for g in graph.groups if g.id in ids}
    sizes = {g.id: g.size for g in graph.groups}
    for name, dims in graph.layouts.items():
        if name not in params:
            continue  # buffers carry no weight
        sq = _current(model, name).square()
        for dim, tree in dims.items():
            other = [d for d in range(sq.dim()) if d != dim]
            per_index = sq.sum(dim=other) if other else sq
            for gid, co in L.coords(tree).items():
                if gid not in ids:
                    continue
                keep = co >= 0
                add = torch.zeros(sizes[gid], dtype=sq.dtype, device=sq.device).index_add(0, co[keep].to(sq.device),
                                                                                          per_index[keep.to(sq.device)])
                squares[gid] = add if squares[gid] is None else squares[gid] + add
    return {gid: (s + 1e-12).sqrt() for gid, s in squares.items() if s is not None}


class GroupLasso:
    """``weight * sum over group elements of ||coupled slices||_2`` for the channel (or head)
    groups of ``sc.trace(model, example_inputs)``: the structured penalty whose zeros surgery removes."""

    def __init__(self, model: nn.Module, example_inputs: ExampleInputs, weight: float, *, kind: str = "channel",
                 ignore: Iterable[str] = ()):
        self.weight = check_real(weight, "weight", "[0, inf)")
        if kind not in ("channel", "head"):
            raise ValueError(f"kind must be 'channel' or 'head', got {kind!r}")
        self.kind = kind
        if any(parametrize.is_parametrized(m) for m in model.modules()):
            model = finalize(copy.deepcopy(model))  # trace under the plain parameter names
        self.graph = trace(model, example_inputs)
        skip = list(ignore)
        modules = {n for n, _ in model.named_modules()}
        for n in skip:
            if n not in modules:
                raise ValueError(f"ignore names module {n!r}, which the model does not have")
        self.ids = {g.id for g in self.graph.groups if g.kind == kind and not any(
            t.rpartition(".")[0] == ig or t.startswith(ig + ".") for t, _, _ in g.tensors for ig in skip)}
        if not self.ids:
            raise ValueError(f"GroupLasso: {type(model).__name__} has no prunable {kind} group")

    def __call__(self, model: nn.Module) -> torch.Tensor:
        check_module(model)
        norms = group_norms(model, self.graph, self.kind)
        return self.weight * sum(norms[g].sum() for g in sorted(self.ids))


def remove_groups_below(model: nn.Module, example_inputs: ExampleInputs, threshold: float, *,
                        kind: str = "channel", graph: Graph | None = None) -> nn.Module:
    """A new, physically smaller model without the group elements whose coupled-slice norm (as
    ``group_norms``) is below ``threshold``; every group keeps at least one element. The model given
    is not modified. Removing an element changes the output by no more than zeroing its slices."""
    check_module(model)
    threshold = check_real(threshold, "threshold", "[0, inf)")
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        model = finalize(copy.deepcopy(model))  # masks baked: plan on the weights as the model uses them
    graph = graph if graph is not None else trace(model, example_inputs)
    with torch.no_grad():
        norms = group_norms(model, graph, kind)
    ratios = {gid: int((n < threshold).sum()) / n.numel() for gid, n in norms.items() if bool((n < threshold).any())}
    ratios = {gid: min(r, (norms[gid].numel() - 1) / norms[gid].numel()) for gid, r in ratios.items()}
    p = plan(model, example_inputs, 0.0, granularity=kind, criterion="l2", group_ratios=ratios, graph=graph)
    return apply(model, p)
