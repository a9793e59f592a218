"""The self-contained HTML page: inline CSS, figures as base64 PNG data URIs, no scripts, no links out."""
from __future__ import annotations

import base64
import struct
from html import escape

from secateurs.report import fmt, tables
from secateurs.report.data import Report
from secateurs.report.plots import DISPLAY_SCALE, Plot

CSS = """
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f6f7f9; --card:#fff;
        --blue:#2563eb; --red:#dc2626; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 14px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 28px 24px 40px; }
header h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -0.01em; }
.sub { color: var(--muted); margin: 0; }
.sub code, td code { background:#eef2f7; padding:1px 5px; border-radius:4px; font-size: 12.5px; }
h2 { font-size: 18px; margin: 0 0 12px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
          padding: 18px 20px; margin-top: 18px; box-shadow: 0 1px 2px rgba(0,0,0,.03); }
.pick-name { font-size: 17px; font-weight: 600; }
.pick-name .tag { margin-left: 6px; }
.pick-method { color: var(--muted); margin: 2px 0 14px; font-size: 13px; }
.stats { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; }
.stat { border: 1px solid var(--line); border-radius: 10px; padding: 10px 14px; background: #fbfcfd; }
.stat .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.stat .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.stat .note { color: var(--muted); font-size: 12.5px; }
.none { color: var(--red); font-weight: 600; }
.figs { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 16px; }
figure { margin: 0; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: var(--muted); font-size: 12.5px; text-align: center; margin-top: 4px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 9px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { font-weight: 600; color: #374151; background: #f9fafb; border-bottom: 2px solid var(--line); }
td.num, th.num { text-align: right; }
td.method { white-space: normal; color: #4b5563; min-width: 150px; width: 22%; font-size: 12px; }
tbody tr:hover { background: #f9fafb; }
tr.baseline td { background: #f3f4f6; }
tr.picked td { background: #fef2f2; }
tr.picked td:first-child { box-shadow: inset 3px 0 0 var(--red); }
tr.front td:last-child { color: var(--blue); font-weight: 500; }
tr.total td { font-weight: 600; border-top: 2px solid var(--line); }
.tag { display: inline-block; font-size: 11px; font-weight: 600; padding: 0 6px; border-radius: 999px;
       margin-left: 6px; vertical-align: 1px; }
.tag.baseline { background: #e5e7eb; color: #374151; }
.tag.picked { background: #fee2e2; color: var(--red); }
.legend { color: var(--muted); font-size: 12.5px; margin: 8px 0 0; }
.kv { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 20px; }
.kv h3 { font-size: 14px; margin: 0 0 6px; color: #374151; }
.kv td:first-child { color: var(--muted); width: 40%; }
.kv td { white-space: normal; word-break: break-word; }
details { margin-top: 12px; }
.split { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap: 24px; align-items: start; }
table.narrow th, table.narrow td { padding: 4px 10px; }
summary { cursor: pointer; color: var(--blue); font-size: 13px; }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 22px; }
"""


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) of a PNG from its IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", png[16:24])


def img(plot: Plot, scale: float = DISPLAY_SCALE) -> str:
    """An ``<img>`` with the PNG inline, shown at ``scale`` of its pixel size (96 px per figure inch)."""
    w, h = png_size(plot.png)
    data = base64.b64encode(plot.png).decode("ascii")
    return (f'<img src="data:image/png;base64,{data}" alt="{escape(plot.alt)}" '
            f'width="{round(w * scale)}" height="{round(h * scale)}">')


def figure(plot: Plot, caption: str | None = None) -> str:
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{img(plot)}{cap}</figure>"


def table(t: tables.Table, cls: str = "", tags: bool = False) -> str:
    """A table; with ``tags`` the first cell gets a baseline/picked pill and the row a class."""
    head = "".join(f'<th class="num">{escape(h)}</th>' if n else f"<th>{escape(h)}</th>"
                   for h, n in zip(t.header, t.numeric))
    body = []
    for i, row in enumerate(t.rows):
        kind = t.kinds[i] if i < len(t.kinds) else ""
        cells = []
        for j, (cell, n) in enumerate(zip(row, t.numeric)):
            text = escape(cell)
            if j == 0 and tags and kind in ("baseline", "picked"):
                text += f'<span class="tag {kind}">{kind}</span>'
            klass = "num" if n else ""
            if tags and t.header[j] in ("method", "Pareto front"):
                klass = "method" if t.header[j] == "method" else "fronts"
            cells.append(f'<td class="{klass}">{text}</td>' if klass else f"<td>{text}</td>")
        body.append(f'<tr class="{kind}">' + "".join(cells) + "</tr>" if kind else "<tr>" + "".join(cells) + "</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if any(t.header) else ""
    return f'<div class="scroll"><table class="{cls}">{thead}<tbody>{"".join(body)}</tbody></table></div>'


def render(report: Report, plots: list[Plot]) -> str:
    """The whole page as one string."""
    by_name = {p.name: p for p in plots}
    n = len(report.candidates)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(report.title)}</title>",
        f"<style>{CSS}</style></head><body><main>",
        "<header>",
        f"<h1>{escape(report.title)}</h1>",
        f'<p class="sub">{n} candidate{"" if n == 1 else "s"} against baseline <b>{escape(report.baseline.name)}</b>'
        f" \u00b7 quality: <b>{escape(report.quality_name)}</b>"
        + (f" \u00b7 constraint: <code>{escape(report.constraint)}</code>" if report.constraint else "")
        + "</p>",
        "</header>",
        _summary(report),
    ]
    pareto = [p for p in plots if p.name.startswith("pareto_")]
    if pareto:
        parts += [
            '<section id="tradeoffs"><h2>Trade-offs</h2>',
            '<div class="figs">' + "".join(figure(p) for p in pareto) + "</div>",
            ('<p class="legend">Grey: every candidate. Blue line: the Pareto front (no other candidate is both '
             "cheaper and better). Star: the baseline; red ring: the picked candidate. The dashed line is the "
             "baseline's quality.</p>"),
            "</section>",
        ]
    parts += [
        '<section id="candidates"><h2>Candidates</h2>',
        table(tables.candidates(report), "candidates", tags=True),
        ('<p class="legend">drop = baseline quality \u2212 candidate quality (positive is worse). Latency: median '
         "of timed runs, p10/p90 its spread. Pareto front: the cost axes on which the candidate is "
         "non-dominated.</p>"),
        "</section>",
    ]
    if "sensitivity" in by_name:
        parts += [
            '<section id="sensitivity"><h2>Sensitivity</h2>',
            figure(by_name["sensitivity"]),
            "<details><summary>Table</summary>", table(tables.sensitivity(report)), "</details>",
            "</section>",
        ]
    if "widths" in by_name:
        name = report.picked.name if report.picked is not None else "the picked model"
        long = len(report.widths) > 40
        widths = table(tables.widths(report), "narrow")
        parts += [
            f'<section id="widths"><h2>Layer widths of {escape(name)}</h2><div class="split">',
            figure(by_name["widths"]),
            f"<div><details><summary>Table ({len(report.widths)} layers)</summary>{widths}</details></div>"
            if long else f"<div>{widths}</div>",
            "</div></section>",
        ]
    if "staircase" in by_name:
        who = f" of {escape(report.staircase_of)}" if report.staircase_of else ""
        parts += [
            f'<section id="staircase"><h2>Latency staircase{who}</h2>',
            figure(by_name["staircase"]),
            ('<p class="legend">Measured forward time of the layers each group sets, against the group\'s kept '
             "width (round_to=\"auto\"), for the groups whose width moved most. Dashed: the width the ratio asked "
             "for; red: the width kept, the fastest within tolerance. A flat line means this machine has no "
             "step there.</p>"),
            "</section>",
        ]
    parts += [
        '<section id="machine"><h2>Machine and versions</h2><div class="kv">',
        "<div><h3>Machine</h3>" + table(tables.key_values(report.machine)) + "</div>",
        "<div><h3>Versions</h3>" + table(tables.key_values(report.versions)) + "</div>",
        "</div></section>",
        f"<footer>Written by secateurs{_version(report)}.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _version(report: Report) -> str:
    v = report.versions.get("secateurs")
    return f" {escape(str(v))}" if v else ""


def _summary(report: Report) -> str:
    p = report.picked
    if p is None:
        return ('<section id="picked"><h2>Picked</h2><p class="none">No candidate met the constraint'
                + (f" (<code>{escape(report.constraint)}</code>)" if report.constraint else "") + ".</p></section>")
    tag = ' <span class="tag baseline">baseline</span>' if p.name == report.baseline.name else ""
    stats = "".join(
        f'<div class="stat"><div class="label">{escape(s.label)}</div><div class="value">{escape(s.value)}</div>'
        f'<div class="note">{escape(s.note)}</div></div>'
        for s in tables.summary(report)
    )
    method = fmt.method(p.method)
    return (
        '<section id="picked"><h2>Picked</h2>'
        f'<div class="pick-name">{escape(p.name)}{tag}</div>'
        f'<div class="pick-method">{escape(method) if method else "&nbsp;"}</div>'
        f'<div class="stats">{stats}</div>'
        + (f'<p class="decision">{escape(report.decision)}</p>' if report.decision else "")
        + (f'<p>Load it:</p><pre><code>{escape(report.load_code)}</code></pre>' if report.load_code else "")
        + '</section>'
    )
