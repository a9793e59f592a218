"""A plain training loop with a Pruner and regularisers in it, short enough to read in one go."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ..._inputs import call_model, check_int, check_module
from ..pruner import Pruner
from ..recovery import LossFn, _cycle, _split, _task_loss, _to


def fit(model: nn.Module, batches: Iterable[Any], optimizer: torch.optim.Optimizer, *, steps: int,
        pruner: Pruner | None = None, loss_fn: LossFn | None = None,
        regularizers: Sequence[Callable[[nn.Module], torch.Tensor]] = (),
        scheduler: Any = None) -> list[float]:
    """Train ``model`` in place for ``steps`` optimizer steps; returns the loss of every step.

    Each step: ``loss = task(model(inputs), targets) + sum(reg(model) for reg in regularizers)``,
    backward, ``optimizer.step()``, ``scheduler.step()`` (if given), then ``pruner.step()``.
    ``batches`` yields ``(inputs, targets)`` and is cycled like ``recover``'s; the task loss is
    ``loss_fn(output, targets)`` or cross-entropy on the logits.
    """
    check_module(model)
    steps = check_int(steps, "steps", minimum=1)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if pruner is not None and (not isinstance(pruner, Pruner) or pruner.model is not model):
        raise ValueError("pruner must be a secateurs Pruner built on this model")
    for i, reg in enumerate(regularizers):
        if not callable(reg):
            raise TypeError(f"regularizers[{i}] must be callable as reg(model) -> scalar tensor, "
                            f"got {type(reg).__name__}")
    device = next(model.parameters()).device
    stream = _cycle(batches, steps)
    losses = []
    model.train()
    for step in range(steps):
        inputs, targets = _split(next(stream), step)
        loss = _task_loss(call_model(model, _to(inputs, device)), _to(targets, device), loss_fn)
        for reg in regularizers:
            loss = loss + reg(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if pruner is not None:
            pruner.step()
        losses.append(float(loss.detach()))
    return losses
