"""Gradient criteria: first-order Taylor, SNIP connection sensitivity, diagonal-Fisher OBD.

All three need data: ``ctx.batches`` and ``ctx.loss_fn(model, batch) -> scalar loss``. Gradients
are taken with ``torch.autograd.grad`` on the model as given (its train/eval mode is kept), and the
model is left exactly as it was (no ``.grad`` written, buffers restored). Scores come back on the
CPU, in float64.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..graph import Graph
from ._data import batch_gradients, require_data, scored_names
from .registry import Context, Criterion, aggregate, register


def _weights(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    named = dict(model.named_parameters())
    return {n: named[n].detach() for n in names}


@register("taylor")
class Taylor(Criterion):
    """First-order Taylor importance (Molchanov et al. 2019, "Importance Estimation for Neural
    Network Pruning", CVPR).

    Removing parameters S changes the loss by about ``-sum_{s in S} g_s w_s``.

    - ``elements``: ``mean over batches of |w * g_b|`` (``g_b`` the gradient on batch b), so a
      weight whose gradient is zero on every batch scores 0.
    - ``groups`` (the paper's group form): for each group element, the products ``w * g_b`` of
      *every* weight removed with it (producing and consuming layers, batch-norm affine
      parameters: all coupled slices) are summed with their signs, and the absolute value of that
      sum is averaged over batches: ``mean_b |sum_{s in element} w_s g_{b,s}|``. The paper
      squares instead of taking the absolute value; the ranking of one batch is the same.
    """

    needs_data = True

    def elements(self, model: nn.Module, names: list[str], ctx: Context) -> dict[str, torch.Tensor]:
        names = scored_names(model, names)
        return _batch_mean(self, model, names, ctx, lambda w, g: (w * g).abs())

    def groups(self, model: nn.Module, graph: Graph, ctx: Context) -> dict[int, torch.Tensor]:
        require_data(self, ctx)
        params = dict(model.named_parameters())
        names = [n for n in graph.layouts if n in params]
        w = _weights(model, names)
        total = {g.id: torch.zeros(g.size, dtype=torch.float64) for g in graph.groups}
        count = 0
        for grads in batch_gradients(self, model, names, ctx):
            signed = aggregate(graph, {n: (w[n].double() * grads[n].double()).cpu() for n in names})
            for gid, s in signed.items():
                total[gid] += s.abs()
            count += 1
        return {gid: s / count for gid, s in total.items()}


@register("snip")
class Snip(Criterion):
    """Connection sensitivity (Lee et al. 2019, "SNIP: Single-shot Network Pruning based on
    Connection Sensitivity", ICLR).

    ``s = |g * w| / sum over all scored weights of |g * w|``, where ``g`` is the gradient of the
    loss averaged over the given batches (the paper uses one batch, at initialisation: pass a
    freshly initialised model and one batch to follow it exactly). The scores of the scored
    weights sum to 1 (all zeros if every ``g * w`` is zero). A group element gets the sum of the
    scores of the weights removed with it (over all coupled layers).
    """

    needs_data = True

    def elements(self, model: nn.Module, names: list[str], ctx: Context) -> dict[str, torch.Tensor]:
        names = scored_names(model, names)
        w = _weights(model, names)
        mean = _batch_mean(self, model, names, ctx, lambda w, g: g)
        sens = {n: (w[n].double().cpu() * mean[n]).abs() for n in names}
        total = sum(float(s.sum()) for s in sens.values())
        if total > 0:
            sens = {n: s / total for n, s in sens.items()}
        return sens


@register("hessian")
class Hessian(Criterion):
    """Optimal Brain Damage saliency with the diagonal Fisher as the Hessian (LeCun et al. 1990,
    "Optimal Brain Damage"; Theis et al. 2018, "Faster gaze prediction with dense networks and
    Fisher pruning").

    ``s = 0.5 * F_ii * w_i^2`` with ``F = mean over batches of g_b^2`` (``g_b`` the gradient of the
    loss on batch b): the second-order estimate of the loss increase when ``w_i`` is set to zero at
    a minimum. Under the diagonal approximation the saliency of removing several weights is the
    sum of theirs, so a group element gets the sum over all coupled slices (``aggregate``).
    """

    needs_data = True

    def elements(self, model: nn.Module, names: list[str], ctx: Context) -> dict[str, torch.Tensor]:
        names = scored_names(model, names)
        w = _weights(model, names)
        fisher = _batch_mean(self, model, names, ctx, lambda w, g: g.square())
        return {n: 0.5 * fisher[n] * w[n].double().cpu().square() for n in names}


def _batch_mean(crit: Criterion, model: nn.Module, names: list[str], ctx: Context,
                fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mean over the given batches of ``fn(w, grad)`` per weight (float64, on the CPU)."""
    require_data(crit, ctx)
    w = _weights(model, names)
    total = {n: torch.zeros(w[n].shape, dtype=torch.float64) for n in names}
    count = 0
    for grads in batch_gradients(crit, model, names, ctx):
        for n in names:
            total[n] += fn(w[n].double(), grads[n].double()).cpu()
        count += 1
    return {n: t / count for n, t in total.items()}
