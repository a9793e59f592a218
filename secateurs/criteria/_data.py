"""Shared plumbing for data-driven criteria: per-batch gradients that leave the model as it was.

``batch_gradients`` differentiates ``ctx.loss_fn(model, batch)`` with ``torch.autograd.grad`` (so no
``.grad`` attribute is written), switches ``requires_grad`` on for the scored parameters only while
it runs, and puts every buffer back afterwards (a model in train mode updates its batch-norm
running statistics in the forward; scoring must not).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from .registry import Context, Criterion, check_data


def require_data(crit: Criterion, ctx: Context) -> None:
    """The planner's clear error for a data criterion called without ``batches``/``loss_fn``."""
    if ctx is None:
        ctx = Context()
    check_data(crit, ctx)


def loss_of(crit: Criterion, model: nn.Module, batch, ctx: Context) -> torch.Tensor:
    """``ctx.loss_fn(model, batch)``, checked to be a scalar tensor."""
    loss = ctx.loss_fn(model, batch)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        got = type(loss).__name__ if not isinstance(loss, torch.Tensor) else f"a tensor of shape {tuple(loss.shape)}"
        raise ValueError(f"criterion {crit.name!r}: loss_fn(model, batch) must return a scalar tensor, got {got}")
    if not loss.requires_grad:
        raise ValueError(f"criterion {crit.name!r}: the loss returned by loss_fn does not depend on the model's "
                         "parameters (was it computed under torch.no_grad or detached?)")
    return loss.reshape(())


def grads_of(crit: Criterion, loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """d loss / d p for each p (zeros where the loss does not depend on p)."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]


def batch_gradients(crit: Criterion, model: nn.Module, names: list[str],
                    ctx: Context) -> Iterator[dict[str, torch.Tensor]]:
    """Yield ``{name: gradient}`` for the named parameters, one dict per batch of ``ctx.batches``.

    The model is left exactly as it was: parameters, buffers, ``requires_grad`` flags and ``.grad``.
    Raises ValueError when ``ctx`` has no data or ``batches`` is empty.
    """
    require_data(crit, ctx)
    named = dict(model.named_parameters())
    params = [named[n] for n in names]
    flags = [p.requires_grad for p in params]
    saved = {n: b.detach().clone() for n, b in model.named_buffers()}
    count = 0
    try:
        for p in params:
            p.requires_grad_(True)
        for batch in ctx.batches:
            with torch.enable_grad():
                loss = loss_of(crit, model, batch, ctx)
                grads = grads_of(crit, loss, params)
            count += 1
            yield dict(zip(names, grads))
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n in saved and b.shape == saved[n].shape:
                    b.copy_(saved[n])
    if count == 0:
        raise ValueError(f"criterion {crit.name!r} needs data, but batches yielded no batch")


def scored_names(model: nn.Module, names: list[str]) -> list[str]:
    """``names`` checked against the model's parameters (a clear KeyError otherwise)."""
    named = dict(model.named_parameters())
    missing = [n for n in names if n not in named]
    if missing:
        raise KeyError(f"the model has no parameter(s) {missing[:5]}")
    return list(names)
