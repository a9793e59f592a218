"""Latency as the quality of an allocation: where a MACs budget buys the most measured milliseconds.

A pruned CNN's time is not proportional to its MACs: depthwise convs and eval-mode BatchNorm are
memory-bound (milliseconds per MAC far above a dense conv's), and a tensor's size decides how the
machine allocates it. ``latency_sensitivity`` prunes each group alone and scores the result by
minus the latency table's prediction (``LatencyTable.predict``: the summed measured milliseconds of its
Conv/Linear/BatchNorm layers, activations and pools at their new widths, deterministic once cached).
Given to ``allocate(model, x, sens, {"macs": f})``, the greedy then removes first the channels that save the
most predicted milliseconds per MAC removed: the fastest model the machine knows at that MACs budget.
It optimises speed only (capacity where it is cheap, not where it matters for accuracy): for a
trained model, allocate an accuracy sensitivity to a latency target instead.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from .._inputs import ExampleInputs
from ..measure.staircase import LatencyTable
from ..prune.snap import default_table
from .sensitivity import Sensitivity, sensitivity

RATIOS = (0.25, 0.5, 0.75, 0.9)


def latency_sensitivity(model: nn.Module, example_inputs: ExampleInputs, table: LatencyTable | None = None, *,
                        ratios: Iterable[float] = RATIOS, **kwargs: Any) -> Sensitivity:
    """Each group pruned alone at ``ratios``, scored by minus the predicted milliseconds of the result.

    ``table`` defaults to the machine's cached table at the inputs' batch size, 1 thread; a table of
    another batch size times the layers at its own batch (trace on a batch of 1, predict for 8).
    ``kwargs`` go to ``sensitivity`` (``graph``, ``criterion``, ``quiet``, plan arguments...).
    """
    if table is not None and not isinstance(table, LatencyTable):
        raise TypeError(f"latency_sensitivity: table must be a LatencyTable or None, got {type(table).__name__}")
    table = table or default_table(example_inputs)
    return sensitivity(model, example_inputs, lambda m: -table.predict(m, example_inputs), ratios=ratios, **kwargs)
