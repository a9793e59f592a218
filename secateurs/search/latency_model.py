"""Predict how many milliseconds pruning a group saves, from the machine's latency table.

``allocate(..., {"latency_ms": t})`` needs, per group, the forward time saved when the group loses
``n`` of its channels. ``group_staircases`` measures each group's timed layers (see
``secateurs.prune.snap.timed_sides``) on a coarse sweep of widths; ``ms_saved`` reads the saving off
that staircase (linear between measured points). Groups with no timed layer have no staircase and
fall back to MACs saved, scaled by the dense model's milliseconds per MAC.
"""
from __future__ import annotations

from torch import nn

from .._inputs import ExampleInputs
from ..graph import Graph
from ..measure.staircase import LayerSpec, interpolate, layer_specs, staircase_widths
from ..prune.snap import Timer, timed_sides


def group_staircases(model: nn.Module, example_inputs: ExampleInputs, graph: Graph, gids: list[int],
                     table: Timer) -> dict[int, dict[int, float]]:
    """Group id -> {width: measured milliseconds of the layers the group sets}, for groups with timed layers."""
    specs = layer_specs(model, example_inputs)
    by_id = {g.id: g for g in graph.groups}
    jobs: list[tuple[int, list[int], int]] = []
    todo: list[LayerSpec] = []
    for gid in gids:
        g = by_id[gid]
        sides = timed_sides(graph, specs, g)
        if not sides:
            continue
        widths = staircase_widths(g.size)
        jobs.append((gid, widths, len(sides)))
        todo += [s.at(role, w) for w in widths for s, role in sides]
    times = iter(table.measure_all(todo, desc="latency table"))
    return {gid: {w: sum(next(times) for _ in range(k)) for w in widths} for gid, widths, k in jobs}


def ms_saved(staircase: dict[int, float], size: int, n_removed: int) -> float:
    """Milliseconds saved when a group of ``size`` loses ``n_removed`` channels (never negative)."""
    return max(0.0, interpolate(staircase, size) - interpolate(staircase, size - n_removed))
