"""Reports of a pruning sweep: one self-contained HTML page, the same as Markdown, and the data as JSON.

``write_report(data, path)`` writes

- ``path``: an HTML page with inline CSS and every figure embedded as a base64 PNG (no scripts, no
  external files: it can be mailed or attached as one file);
- ``path`` with suffix ``.md``: the same sections and tables in Markdown, the figures saved as PNG files
  next to it (``<stem>_pareto_latency.png``, ...) and linked by relative name;
- ``path`` with suffix ``.json``: ``data`` itself, so the report can be redrawn or compared later;

and returns ``{"html": ..., "md": ..., "json": ...}`` (the three paths as strings).

The page shows: the picked candidate against the baseline (quality, latency, MACs, size, params);
quality against latency, MACs and size (every candidate a point, the Pareto front of
``secateurs.search.candidate.pareto`` a line, baseline and pick marked); the candidate table
(method, quality, drop vs baseline, params, MACs, size, latency median/p10/p90, which fronts it is
on); the sensitivity curves; the picked model's per-layer widths (chart and table); the latency
staircase of a ``round_to="auto"`` candidate (when there is one); the machine and library versions.

``data`` is a plain, JSON-serialisable dict:

``"title"`` (str)
    Page heading.
``"quality_name"`` (str)
    What ``quality`` measures, e.g. ``"accuracy"``. Higher is better (as ``pareto`` assumes).
``"baseline"`` (dict)
    ``Candidate.to_dict()`` of the unpruned model. Keys ``name``, ``method`` (dict), ``quality``
    (number) and ``measurement``: ``Measurement.to_dict()``, at least ``params``, ``macs``,
    ``size_bytes`` and ``latency`` (``{"median_ms", "p10_ms", "p90_ms", "runs", "batch_size",
    "threads"}`` or None); ``nonzero_params`` and the other Measurement fields are optional (a
    "nonzero params" column appears when some model has zeros in its weights).
``"candidates"`` (list of dict)
    ``Candidate.to_dict()`` of every candidate, same keys as the baseline, unique names. A
    candidate named like the baseline is the baseline (listed once). Candidates without latency
    are left out of the latency plot and front only.
``"picked"`` (str or None)
    Name of the chosen candidate (or of the baseline); None when none met the constraint.
``"constraint"`` (str)
    How the pick was made, e.g. ``"max_drop=0.01, minimize=latency"`` (may be empty).
``"sensitivity"`` (optional dict)
    ``{group label: {ratio: quality}}``; ratios are strings or numbers (``"0.3"``); one curve per group.
``"widths"`` (optional list of dict)
    ``[{"layer": str, "before": int, "after": int}, ...]``: the picked model's widths, in layer order.
``"staircase"`` (optional list of dict) and ``"staircase_of"`` (optional str)
    ``[{"layer": str, "asked": int, "kept": int, "curve": {width: ms}}, ...]``: measured time of the
    layers a group sets against its kept width, for groups a ``round_to="auto"`` candidate (named by
    ``staircase_of``) snapped; ``asked`` and ``kept`` must be widths of the curve. Drawn as the
    "Latency staircase" figure.
``"machine"`` (dict)
    Where latency was measured, e.g. ``{"cpu": str, "threads": int, "batch_size": int, ...}``;
    shown as a key/value table (any keys).
``"versions"`` (dict)
    Library versions, e.g. ``{"torch": "2.4.1", "secateurs": "0.1.0"}``; any keys.

``pareto_figure(data, cost)`` returns one Pareto plot as a matplotlib ``Figure`` (for notebooks, or
``fig.savefig``), ``cost`` any of ``COSTS``.

A missing key or a wrong type raises ValueError naming it (``data['candidates'][2] is missing key
'quality'``) before any file is written. Drawing uses matplotlib's Agg canvas without pyplot, so the
caller's backend and rcParams are left alone.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from secateurs._files import atomic_write
from secateurs.report import html, markdown
from secateurs.report.data import REQUIRED, Report, load
from secateurs.report.plots import Plot, figures, pareto_figure

__all__ = ["REQUIRED", "Plot", "Report", "figures", "load", "pareto_figure", "write_report"]


def write_report(data: dict[str, Any], path: str | os.PathLike) -> dict[str, str]:
    """Write the HTML report at ``path`` and its ``.md`` and ``.json`` siblings; return the three paths.

    See the module docstring for ``data``. Parent folders are created; existing files are replaced, each
    atomically (a reader never sees half a file).
    """
    target = Path(path)
    md_path, json_path = target.with_suffix(".md"), target.with_suffix(".json")
    if target in (md_path, json_path):
        raise ValueError(f"path must not end in .md or .json (those are written next to the HTML), got {str(path)!r}")
    report = load(data)
    try:
        text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"report data must be JSON-serialisable (plain dicts, lists, str, numbers): {e}") from None
    plots = figures(report)
    target.parent.mkdir(parents=True, exist_ok=True)
    files = {}
    for plot in plots:
        png = target.with_name(f"{target.stem}_{plot.name}.png")
        atomic_write(png, plot.png)
        files[plot.name] = png.name
    atomic_write(target, html.render(report, plots))
    atomic_write(md_path, markdown.render(report, plots, files))
    atomic_write(json_path, text + "\n")
    return {"html": str(target), "md": str(md_path), "json": str(json_path)}
