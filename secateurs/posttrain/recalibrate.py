"""Re-estimate BatchNorm statistics after pruning: one-shot pruning changes the activations every
batch norm normalises, so the dense model's running mean and variance go stale.

Only the batch norms run in training mode (dropout and the rest stay in eval); the statistics become
the exact average over the calibration batches (``momentum=None``); no gradient, no weight change.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .._inputs import call_model, check_module
from .calibration import as_list, check_finite


def tracked_norms(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics (what ``recalibrate`` re-estimates), by name."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats}


def recalibrate(model: nn.Module, batches: Iterable[Any], *, inplace: bool = False) -> nn.Module:
    """Reset and re-estimate every BatchNorm's running statistics on ``batches`` (model inputs).

    Returns the recalibrated model (a copy unless ``inplace``) in the train/eval mode it had.
    """
    check_module(model)
    batches = as_list(batches)
    if not tracked_norms(model):
        raise ValueError(f"{type(model).__name__} has no BatchNorm layer with running statistics to recalibrate")
    target = model if inplace else copy.deepcopy(model)
    saved = {name: b.clone() for name, b in target.named_buffers()}
    modes = {m: m.training for m in target.modules()}
    norms = tracked_norms(target)
    momenta = {n: m.momentum for n, m in norms.items()}
    try:
        target.eval()
        for m in norms.values():
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for i, batch in enumerate(batches):
                try:
                    call_model(target, batch)
                except Exception as exc:  # noqa: BLE001 - re-raised with the batch named
                    raise ValueError(f"recalibrate: forward failed on batch {i}: {type(exc).__name__}: "
                                     f"{str(exc)[:300]}") from exc
        for n, m in norms.items():
            check_finite(m.running_mean, f"BatchNorm {n!r} (running_mean)")
            check_finite(m.running_var, f"BatchNorm {n!r} (running_var)")
    except BaseException:
        with torch.no_grad():
            for name, b in target.named_buffers():
                b.copy_(saved[name])
        raise
    finally:
        for n, m in norms.items():
            m.momentum = momenta[n]
        for m, t in modes.items():
            m.training = t
    return target
