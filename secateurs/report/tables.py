"""The report's tables as plain text cells, shared by the HTML and Markdown writers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from secateurs.report import fmt
from secateurs.report.data import Report
from secateurs.search.candidate import Candidate

_FRONT_NAMES = {"latency": "latency", "macs": "MACs", "size": "size"}


@dataclass
class Table:
    """``header`` and ``rows`` of text; ``numeric[i]`` right-aligns column i; ``kinds[r]`` tags row r
    (``"baseline"``, ``"picked"``, ``"front"`` or ``""``) for highlighting."""

    header: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    kinds: list[str] = field(default_factory=list)


@dataclass
class Stat:
    """One headline number of the picked model: ``label``, ``value`` and a comparison ``note``."""

    label: str
    value: str
    note: str


def _sparse(report: Report) -> bool:
    """Whether some candidate has zeros in its weights worth a "nonzero params" column."""
    for c in report.rows:
        nz = c.measurement.get("nonzero_params")
        if nz is not None and nz != c.measurement["params"]:
            return True
    return False


def candidates(report: Report) -> Table:
    """Baseline, then every candidate: method, quality, drop, costs, latency spread, fronts."""
    dec = fmt.quality_decimals(c.quality for c in report.rows)
    sparse = _sparse(report)
    header = ["candidate", "method", report.quality_name, "drop", "params"]
    header += ["nonzero params"] if sparse else []
    header += ["MACs", "size", "latency (ms)", "p10\u2013p90 (ms)", "Pareto front"]
    numeric = [False, False] + [True] * (len(header) - 3) + [False]
    rows, kinds = [], []
    for c in report.rows:
        m = c.measurement
        lat = fmt.latency(c)
        method = fmt.method(c.method) + (", BatchNorm recalibrated" if c.extra.get("bn_recalibrated") else "")
        row = [c.name, method or "\u2014", f"{c.quality:.{dec}f}", fmt.signed(report.drop(c), dec),
               fmt.count(m["params"])]
        if sparse:
            nz = m.get("nonzero_params")
            row.append("\u2014" if nz is None else fmt.count(nz))
        row += [fmt.macs(m["macs"]), fmt.nbytes(m["size_bytes"])]
        row += [fmt.ms(lat["median_ms"]), f"{fmt.ms(lat['p10_ms'])}\u2013{fmt.ms(lat['p90_ms'])}"] if lat \
            else ["\u2014"] * 2
        on = report.on_front(c)
        row.append(", ".join(_FRONT_NAMES[k] for k in on) if on else "\u2014")
        rows.append(row)
        kinds.append(_kind(report, c, on))
    return Table(header, rows, numeric, kinds)


def _kind(report: Report, c: Candidate, on: list[str]) -> str:
    if report.picked is not None and c.name == report.picked.name:
        return "picked"
    if c.name == report.baseline.name:
        return "baseline"
    return "front" if on else ""


def sensitivity(report: Report) -> Table:
    """Groups as rows, ratios as columns, quality in the cells."""
    ratios = sorted({r for points in report.sensitivity.values() for r, _ in points})
    dec = fmt.quality_decimals(q for points in report.sensitivity.values() for _, q in points)
    rows = []
    for label, points in report.sensitivity.items():
        at = dict(points)
        rows.append([label] + [f"{at[r]:.{dec}f}" if r in at else "\u2014" for r in ratios])
    return Table(["group"] + [f"{r:g}" for r in ratios], rows, [False] + [True] * len(ratios))


def widths(report: Report) -> Table:
    rows = []
    for w in report.widths:
        kept = f"{100 * w['after'] / w['before']:.0f}%" if w["before"] else "\u2014"
        rows.append([str(w["layer"]), str(w["before"]), str(w["after"]), kept])
    total_b = sum(w["before"] for w in report.widths)
    total_a = sum(w["after"] for w in report.widths)
    kinds = [""] * len(rows)
    if len(rows) > 1 and total_b:
        rows.append(["total", str(total_b), str(total_a), f"{100 * total_a / total_b:.0f}%"])
        kinds.append("total")
    return Table(["layer", "before", "after", "kept"], rows, [False, True, True, True], kinds)


def key_values(d: dict[str, Any]) -> Table:
    return Table(["", ""], [[str(k), fmt.plain(v)] for k, v in d.items()], [False, False])


def summary(report: Report) -> list[Stat]:
    """Headline numbers of the picked model against the baseline (empty when nothing was picked)."""
    p, b = report.picked, report.baseline
    if p is None:
        return []
    dec = fmt.quality_decimals(c.quality for c in report.rows)
    stats = [Stat(report.quality_name, f"{p.quality:.{dec}f}",
                  f"{fmt.signed(-report.drop(p), dec)} vs baseline ({b.quality:.{dec}f})")]
    pl, bl = fmt.latency(p), fmt.latency(b)
    if pl:
        note = fmt.times(bl["median_ms"], pl["median_ms"], "faster", "slower") if bl else None
        base = f" (baseline {fmt.ms(bl['median_ms'])} ms)" if bl else ""
        stats.append(Stat("latency", f"{fmt.ms(pl['median_ms'])} ms", (note or "no baseline latency") + base))
    pm, bm = p.measurement, b.measurement
    stats.append(Stat("MACs", fmt.macs(pm["macs"]), _note(fmt.fewer(bm["macs"], pm["macs"], "MACs"))))
    stats.append(Stat("size", fmt.nbytes(pm["size_bytes"]),
                      _note(fmt.fewer(bm["size_bytes"], pm["size_bytes"], "bytes"))))
    stats.append(Stat("params", fmt.count(pm["params"]), _note(fmt.fewer(bm["params"], pm["params"], "params"))))
    return stats


def _note(text: str | None) -> str:
    return text or "\u2014"
