"""Width snapping (``round_to="auto"``): keep a width the hardware runs fast, read off a latency table.

For each group the planner asks to keep ``k`` of ``size`` channels. The group's cost at width ``w``
is the summed measured time of the Conv/Linear/BatchNorm layers whose channels it sets, each at ``w`` along
that side (other sides as in the model). The kept width becomes the fastest measured width in
``[k, k * (1 + above)]`` (the largest one within ``margin`` of the fastest, to keep capacity at no
cost), or the largest width in ``[k * (1 - below), k)`` whose time is below the chosen one's by
more than its share of channels (a step of the staircase, beyond ``margin``, not the mere slope of
fewer channels): fewer channels than asked, so always within the ratio's budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from .._inputs import ExampleInputs, batch_size_of, iter_tensors
from ..graph import Graph, Group
from ..measure.staircase import LatencyTable, LayerSpec, layer_specs, staircase_widths

ABOVE = 0.25  # how far above the asked width a snapped width may go (fraction of it)
BELOW = 0.125  # how far below
MARGIN = 0.03  # times within this fraction of each other count as equal (measurement noise)


class Timer(Protocol):
    """What snapping needs from a latency table: measured milliseconds of a batch of layer specs."""

    def measure_all(self, specs: list[LayerSpec], desc: str = ...) -> list[float]: ...


def check_timer(table: object, name: str = "latency_table") -> None:
    """Refuse a ``table`` (not None) that has no ``measure_all``, before it fails deep inside snapping."""
    if table is not None and not callable(getattr(table, "measure_all", None)):
        raise TypeError(f"{name} must be a LatencyTable (or an object with measure_all(specs) -> milliseconds) "
                        f"or None, got {type(table).__name__}")


@dataclass
class Snap:
    """The width chosen for one group and what the table says it gains over the asked width."""

    asked: int
    kept: int
    ms_asked: float
    ms_kept: float
    curve: dict[int, float] = field(default_factory=dict)  # width -> group milliseconds, as measured
    layer: str = ""  # the group's first producer (a module name), to show the staircase by

    def record(self) -> dict[str, Any]:
        """The JSON form stored in ``plan.settings["latency"]["groups"]`` (the curve keyed by width as text)."""
        return {"asked": self.asked, "kept": self.kept, "ms_asked": round(self.ms_asked, 6),
                "ms_kept": round(self.ms_kept, 6), "gain_ms": round(self.ms_asked - self.ms_kept, 6),
                "layer": self.layer, "curve": {str(w): round(t, 6) for w, t in sorted(self.curve.items())}}


def timed_sides(graph: Graph, specs: dict[str, LayerSpec], g: Group) -> list[tuple[LayerSpec, str]]:
    """The timed layers whose channels ``g`` sets one to one, with the side it sets ("out" or "in")."""
    out = []
    for name, dim, _ in g.tensors:
        module, _, pname = name.rpartition(".")
        if pname != "weight" or module not in specs or dim not in (0, 1):
            continue
        if graph.layouts.get(name, {}).get(dim) != ["g", g.id, g.size]:
            continue  # channels reach this layer through a product or concatenation: not timed one to one
        spec, role = specs[module], "out" if dim == 0 else "in"
        if spec.per_channel and role == "in":
            continue
        if spec.widths(role) == g.size:
            out.append((spec, role))
    return out


def choose(curve: dict[int, float], asked: int, above: float = ABOVE, below: float = BELOW,
           margin: float = MARGIN) -> int:
    """The snapped width for a measured ``curve`` (width -> ms, ``asked`` among its points); see module doc."""
    if asked not in curve:
        raise ValueError(f"the measured curve must include the asked width {asked}, got widths {sorted(curve)}")
    hi = asked * (1 + above)
    up = {w: t for w, t in curve.items() if asked <= w <= hi}
    fastest = min(up.values())
    best = max(w for w, t in up.items() if t <= fastest * (1 + margin))
    lo, t_best = asked * (1 - below), curve[best]
    # below: only a step down the staircase, faster per channel kept, not just the slope of fewer channels
    down = [w for w, t in curve.items() if lo <= w < asked and t < t_best * (w / best) * (1 - margin)]
    return max(down) if down else best


def snap_widths(model: nn.Module, example_inputs: ExampleInputs, graph: Graph, asked: dict[int, int],
                table: Timer, above: float = ABOVE, below: float = BELOW,
                specs: dict[str, LayerSpec] | None = None) -> dict[int, Snap]:
    """Snap every group in ``asked`` (group id -> asked kept width) to a fast width; groups with no
    timed layer, or asked to keep everything, are left out of the result (their width stays)."""
    specs = specs if specs is not None else layer_specs(model, example_inputs)
    by_id = {g.id: g for g in graph.groups}
    jobs: list[tuple[Group, list[int], list[tuple[LayerSpec, str]]]] = []
    todo: list[LayerSpec] = []
    for gid, k in sorted(asked.items()):
        g = by_id[gid]
        sides = timed_sides(graph, specs, g)
        if not sides or k >= g.size:
            continue
        widths = [w for w in staircase_widths(g.size, k, above) if w >= math.floor(k * (1 - below))]
        jobs.append((g, widths, sides))
        todo += [s.at(role, w) for w in widths for s, role in sides]
    times = iter(table.measure_all(todo, desc="latency staircase"))
    out = {}
    for g, widths, sides in jobs:
        curve = {w: sum(next(times) for _ in sides) for w in widths}
        k = asked[g.id]
        kept = choose(curve, k, above, below)
        out[g.id] = Snap(k, kept, curve[k], curve[kept], curve, g.producers[0] if g.producers else f"group {g.id}")
    return out


def default_table(example_inputs: ExampleInputs, threads: int = 1) -> LatencyTable:
    """The cached table for this batch size on the inputs' device, ``threads`` CPU threads."""
    batch = batch_size_of(example_inputs) or 1
    device = next((t.device for t in iter_tensors(example_inputs)), "cpu")
    return LatencyTable(batch, threads=threads, device=device)
