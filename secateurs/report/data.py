"""Checking the report's input dict and turning it into the objects the writers read."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from secateurs._inputs import check_real, is_int
from secateurs.search.candidate import COSTS, Candidate, pareto

# Keys every report needs; "sensitivity", "widths", "decision" (how the pick was made, one line),
# "load_code" (the Python that loads the picked model), "staircase" and "staircase_of" (measured time
# against width for the groups a round_to="auto" candidate snapped, and that candidate's name) are optional.
REQUIRED = ("title", "quality_name", "baseline", "candidates", "picked", "constraint", "machine", "versions")
# The costs plotted against quality, in the order they appear.
PLOTTED = ("latency", "macs", "size")



@dataclass
class Report:
    """The validated report: candidates as ``Candidate`` objects, the fronts already computed.

    ``rows`` is what the candidate table lists: the baseline first, then the candidates in the given
    order (a candidate named like the baseline is the baseline and is listed once). ``fronts[cost]``
    holds the names on ``pareto(candidates, cost)`` over the candidates that have that cost; a cost
    no candidate has (latency never measured) is absent.
    """

    title: str
    quality_name: str
    baseline: Candidate
    candidates: list[Candidate]
    picked: Candidate | None
    constraint: str
    sensitivity: dict[str, list[tuple[float, float]]]
    widths: list[dict[str, Any]]
    machine: dict[str, Any]
    versions: dict[str, Any]
    fronts: dict[str, list[Candidate]]
    decision: str = ""
    load_code: str = ""
    staircase: list[dict[str, Any]] | None = None  # round_to="auto": the groups whose width moved most
    staircase_of: str = ""  # the candidate whose snaps these are

    @property
    def rows(self) -> list[Candidate]:
        return [self.baseline] + [c for c in self.candidates if c.name != self.baseline.name]

    def on_front(self, c: Candidate) -> list[str]:
        """The plotted costs whose Pareto front ``c`` is on."""
        return [cost for cost, front in self.fronts.items() if any(f.name == c.name for f in front)]

    def drop(self, c: Candidate) -> float:
        """Quality lost against the baseline (positive = worse)."""
        return self.baseline.quality - c.quality


def has_cost(c: Candidate, cost: str) -> bool:
    return cost != "latency" or bool(c.measurement.get("latency"))


def load(data: Any) -> Report:
    """Validate ``data`` (see ``secateurs.report``) and build the ``Report``; ValueError says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"report data must be a dict, got {type(data).__name__}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ValueError(f"report data is missing key {missing[0]!r} (required: {', '.join(REQUIRED)})")
    title = _text(data["title"], "title")
    quality_name = _text(data["quality_name"], "quality_name")
    constraint = _text(data["constraint"], "constraint", allow_empty=True)
    baseline = Candidate.from_dict(data["baseline"], "data['baseline']")
    if not isinstance(data["candidates"], list):
        raise ValueError("data['candidates'] must be a list of Candidate dicts, "
                         f"got {type(data['candidates']).__name__}")
    candidates = [Candidate.from_dict(c, f"data['candidates'][{i}]") for i, c in enumerate(data["candidates"])]
    seen: set[str] = set()
    for c in candidates:
        if c.name in seen:
            raise ValueError(f"data['candidates'] has two candidates named {c.name!r}")
        seen.add(c.name)
    picked = None
    if data["picked"] is not None:
        by_name = {c.name: c for c in candidates}
        by_name.setdefault(baseline.name, baseline)
        if data["picked"] not in by_name:
            raise ValueError(
                f"data['picked'] is {data['picked']!r}, which names no candidate "
                f"(candidates: {', '.join(repr(n) for n in by_name) or 'none'})"
            )
        picked = by_name[data["picked"]]
    fronts = {}
    for cost in PLOTTED:
        having = [c for c in candidates if has_cost(c, cost)]
        if having:
            fronts[cost] = pareto(having, cost)
    return Report(
        title=title,
        quality_name=quality_name,
        baseline=baseline,
        candidates=candidates,
        picked=picked,
        constraint=constraint,
        sensitivity=_sensitivity(data.get("sensitivity")),
        widths=_widths(data.get("widths")),
        machine=_mapping(data["machine"], "machine"),
        versions=_mapping(data["versions"], "versions"),
        fronts=fronts,
        decision=_text(data.get("decision", ""), "decision", allow_empty=True),
        load_code=_text(data.get("load_code", ""), "load_code", allow_empty=True),
        staircase=_staircase(data.get("staircase")),
        staircase_of=_text(data.get("staircase_of", ""), "staircase_of", allow_empty=True),
    )


def _text(value: Any, key: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ValueError(f"data[{key!r}] must be a{'' if allow_empty else ' non-empty'} string, got {value!r}")
    return value


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"data[{key!r}] must be a dict, got {type(value).__name__}")
    return value


def _sensitivity(value: Any) -> dict[str, list[tuple[float, float]]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("data['sensitivity'] must be a dict {group: {ratio: quality}}, "
                         f"got {type(value).__name__}")
    out = {}
    for group, curve in value.items():
        where = f"data['sensitivity'][{group!r}]"
        if not isinstance(curve, dict):
            raise ValueError(f"{where} must be a dict {{ratio: quality}}, got {type(curve).__name__}")
        points = []
        for ratio, quality in curve.items():
            try:
                r = float(ratio)
            except (TypeError, ValueError):
                raise ValueError(f"{where} has ratio {ratio!r}, which is not a number") from None
            points.append((r, check_real(quality, f"{where}[{ratio!r}]", "[-inf, inf]")))
        out[str(group)] = sorted(points)
    return out


def _widths(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"data['widths'] must be a list of {{layer, before, after}} dicts, got {type(value).__name__}")
    for i, row in enumerate(value):
        where = f"data['widths'][{i}]"
        if not isinstance(row, dict):
            raise ValueError(f"{where} must be a dict with keys layer, before, after, got {type(row).__name__}")
        for key in ("layer", "before", "after"):
            if key not in row:
                raise ValueError(f"{where} is missing key {key!r}")
        for key in ("before", "after"):
            if not is_int(row[key], 0):
                raise ValueError(f"{where}[{key!r}] must be a non-negative int, got {row[key]!r}")
    return value


def _staircase(value: Any) -> list[dict[str, Any]] | None:
    """``[{"layer", "asked", "kept", "curve": {width: ms}}, ...]`` checked; widths become ints, sorted."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError(f"data['staircase'] must be a list of {{layer, asked, kept, curve}} dicts, "
                         f"got {type(value).__name__}")
    out = []
    for i, row in enumerate(value):
        where = f"data['staircase'][{i}]"
        if not isinstance(row, dict):
            raise ValueError(f"{where} must be a dict with keys layer, asked, kept, curve, got {type(row).__name__}")
        for key in ("layer", "asked", "kept", "curve"):
            if key not in row:
                raise ValueError(f"{where} is missing key {key!r}")
        if not isinstance(row["curve"], dict) or not row["curve"]:
            raise ValueError(f"{where}['curve'] must be a non-empty dict {{width: ms}}, got {row['curve']!r}")
        curve = {}
        for w, ms in row["curve"].items():
            try:
                width = int(w)
            except (TypeError, ValueError):
                raise ValueError(f"{where}['curve'] has width {w!r}, which is not an integer") from None
            t = check_real(ms, f"{where}['curve'][{w!r}]", "[-inf, inf]")
            if width < 1 or t < 0:
                raise ValueError(f"{where}['curve'][{w!r}] must map a positive width to milliseconds >= 0, got {t!r}")
            curve[width] = t
        for key in ("asked", "kept"):
            if row[key] not in curve:
                raise ValueError(f"{where}[{key!r}] is {row[key]!r}, which is not a width of its curve "
                                 f"{sorted(curve)}")
        out.append({"layer": str(row["layer"]), "asked": int(row["asked"]), "kept": int(row["kept"]),
                    "curve": dict(sorted(curve.items()))})
    return out


__all__ = ["COSTS", "PLOTTED", "REQUIRED", "Report", "has_cost", "load"]
