"""The report's figures as PNG bytes, drawn with matplotlib's Agg canvas.

Figures are built with ``matplotlib.figure.Figure`` and rendered by ``FigureCanvasAgg`` directly, so
writing a report neither imports pyplot nor changes the caller's matplotlib backend or state.
"""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import matplotlib
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from secateurs.report import fmt
from secateurs.report.data import PLOTTED, Report, has_cost, load
from secateurs.search.candidate import COSTS, Candidate, pareto

# Rendered at 2x: the HTML shows each PNG at 96 px per inch (DISPLAY_SCALE), crisp on high-DPI screens.
DPI = 192
DISPLAY_SCALE = 96 / DPI
# Colours: the candidate cloud muted, the front blue, the baseline near-black, the pick red.
POINT = "#94a3b8"
FRONT = "#2563eb"
BASELINE = "#111827"
PICKED = "#dc2626"
GRID = "#e5e7eb"
TEXT = "#1f2937"

_RC = {
    "font.size": 9.5,
    "axes.titlesize": 11,
    "axes.labelsize": 9.5,
    "axes.edgecolor": "#9ca3af",
    "axes.labelcolor": TEXT,
    "xtick.color": "#4b5563",
    "ytick.color": "#4b5563",
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "text.usetex": False,  # names are drawn as plain text (see _plain); a caller's LaTeX setting must not apply
}


@dataclass(frozen=True)
class Plot:
    """One figure: ``name`` (file stem, e.g. ``pareto_latency``), ``title``, ``alt`` text and ``png`` bytes."""

    name: str
    title: str
    alt: str
    png: bytes


def figures(report: Report) -> list[Plot]:
    """Every figure the report has data for, in reading order."""
    out = [pareto_plot(report, cost) for cost in PLOTTED if cost in report.fronts]
    if report.sensitivity:
        out.append(sensitivity_plot(report))
    if report.widths:
        out.append(widths_plot(report))
    if report.staircase:
        out.append(staircase_plot(report))
    return out


def _styled(fn):
    """Run a plot function under the report's rcParams (restored afterwards)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_RC):
            return fn(*args, **kwargs)

    return wrapper


def _plain(text: str) -> str:
    """``text`` escaped for matplotlib so it is drawn as written: a ``$`` would start math text."""
    return str(text).replace("$", r"\$")


def _figure(width: float, height: float) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(True, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    return fig, ax


def pareto_png(report: Report, cost: str) -> bytes:
    """``pareto_figure`` as PNG bytes (for inline display)."""
    return _png(pareto_figure(report, cost))


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf, metadata={"Software": None})
    return buf.getvalue()


def _axis(report: Report, cost: str) -> tuple[float, str, str]:
    """Divisor, axis label and short name for a cost."""
    values = [c.cost(cost) for c in report.candidates + [report.baseline] if has_cost(c, cost)]
    top = max(values, default=1.0)
    if cost == "latency":
        lat = fmt.latency(report.baseline) or next(fmt.latency(c) for c in report.candidates if fmt.latency(c))
        where = []
        if lat.get("batch_size") is not None:
            where.append(f"batch {lat['batch_size']}")
        if lat.get("threads") is not None:
            where.append(f"{lat['threads']} thread" + ("" if lat["threads"] == 1 else "s"))
        suffix = f"  ({', '.join(where)}; bars p10\u2013p90)" if where else "  (bars p10\u2013p90)"
        return 1.0, "latency, median (ms)" + suffix, "latency"
    div, prefix = fmt.scale(top)
    if cost == "macs":
        return div, f"MACs per forward ({prefix}MACs)" if prefix else "MACs per forward", "MACs"
    if cost == "size":
        return div, f"size on disk ({prefix}B, safetensors)" if prefix else "size on disk (bytes)", "size"
    return div, f"parameters ({prefix})" if prefix else "parameters", "params"


def pareto_plot(report: Report, cost: str) -> Plot:
    """Quality against one cost: every candidate, the Pareto front as a line, baseline and pick marked."""
    fig = pareto_figure(report, cost)
    short = _axis(report, cost)[2]
    shown = sum(has_cost(c, cost) for c in report.candidates)
    return Plot(
        name=f"pareto_{cost}",
        title=f"{report.quality_name} vs {short}",
        alt=f"{report.quality_name} vs {short}: every candidate ({shown}) as a point, the Pareto front as a line",
        png=_png(fig),
    )


@_styled
def pareto_figure(report: Report | dict, cost: str) -> Figure:
    """The Pareto plot for ``cost`` (one of ``COSTS``) as a matplotlib ``Figure`` (no pyplot involved).

    ``report`` is a ``Report`` or the report's data dict (see ``secateurs.report``); save the figure with
    ``fig.savefig(path)``.
    """
    if not isinstance(report, Report):
        report = load(report)
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {list(COSTS)}, got {cost!r}")
    shown = [c for c in report.candidates if has_cost(c, cost)]
    if not shown:
        raise ValueError(f"no candidate has a {cost} measurement to plot")
    div, xlabel, short = _axis(report, cost)
    fig, ax = _figure(5.6, 4.0)
    x = [c.cost(cost) / div for c in shown]
    y = [c.quality for c in shown]
    if cost == "latency":
        lo = [(c.cost(cost) - c.measurement["latency"]["p10_ms"]) for c in shown]
        hi = [(c.measurement["latency"]["p90_ms"] - c.cost(cost)) for c in shown]
        ax.errorbar(x, y, xerr=[[max(v, 0) for v in lo], [max(v, 0) for v in hi]], fmt="none",
                    ecolor=POINT, elinewidth=0.9, alpha=0.7, zorder=2)
    ax.scatter(x, y, s=30, color=POINT, edgecolor="white", linewidth=0.5, zorder=3, label=f"candidates ({len(shown)})")
    front = report.fronts.get(cost) or pareto(shown, cost)
    ax.plot([c.cost(cost) / div for c in front], [c.quality for c in front], "-o", color=FRONT, lw=2, ms=5,
            zorder=4, label=f"Pareto front ({len(front)})")
    base = report.baseline
    ax.axhline(base.quality, color="#6b7280", lw=0.8, ls=(0, (4, 3)), zorder=1)
    labelled: dict[str, Candidate] = {c.name: c for c in front}
    if has_cost(base, cost):
        ax.scatter([base.cost(cost) / div], [base.quality], marker="*", s=190, color=BASELINE, edgecolor="white",
                   linewidth=0.6, zorder=6,
                   label="baseline" if base.name == "baseline" else f"baseline ({_plain(base.name)})")
        labelled[base.name] = base
    pick = report.picked
    if pick is not None and has_cost(pick, cost):
        ax.scatter([pick.cost(cost) / div], [pick.quality], s=230, facecolor="none", edgecolor=PICKED, linewidth=2.2,
                   zorder=7, label=f"picked ({_plain(pick.name)})")
        labelled[pick.name] = pick
    def _style(c: Candidate) -> tuple[str, float]:
        if pick is not None and c.name == pick.name:
            return PICKED, 8.5
        return (BASELINE, 6.5) if c.name == base.name else (FRONT, 3.5)

    if len(labelled) <= 30:
        first = [c for c in (pick, base) if c is not None and c.name in labelled]
        first = list({c.name: c for c in first}.values())
        rest = [c for c in labelled.values() if all(c.name != f.name for f in first)]
        _label(fig, ax, [(c.name, c.cost(cost) / div, c.quality, *_style(c)) for c in first + rest], keep=len(first),
               others=list(zip(x, y)))
    missing = len(report.candidates) - len(shown)
    if missing:
        xlabel += f"\n{missing} candidate(s) without a {short} measurement not shown"
    ax.set_xlabel(_plain(xlabel))
    ax.set_ylabel(f"{_plain(report.quality_name)}  (higher is better)")
    ax.set_title(f"{_plain(report.quality_name)} vs {short}", loc="left", color=TEXT, fontweight="bold")
    ax.legend(loc="lower right")
    ax.margins(x=0.1, y=0.1)
    return fig


def _label(fig: Figure, ax, points: list[tuple[str, float, float, str, float]], keep: int = 0,
           others: list[tuple[float, float]] = (), size: float = 7.5) -> None:
    """Name points (name, x, y, colour, marker radius in pt), each label at the first spot around its point
    whose box (estimated from the text length) overlaps no marker and no earlier label. The first
    ``keep`` points are labelled first and always; a later one with no free spot goes unlabelled.
    ``others`` are unlabelled points (x, y) that labels avoid too."""
    ax.autoscale_view()
    to_px = ax.transData.transform
    pt = fig.dpi / 72
    w_char, h = 0.62 * size * pt, 1.25 * size * pt
    frame = ax.bbox.extents
    taken = []
    for x, y, r in [(x, y, r) for _, x, y, _, r in points] + [(x, y, 3.0) for x, y in others]:
        px, py = to_px((x, y))
        taken.append((px - r * pt, py - r * pt, px + r * pt, py + r * pt))

    def box(px, py, dx, dy, ha, va, w):
        x0 = px + dx * pt - {"left": 0, "right": w, "center": w / 2}[ha]
        y0 = py + dy * pt - {"bottom": 0, "top": h, "center": h / 2}[va]
        return (x0, y0, x0 + w, y0 + h)

    order = points[:keep] + sorted(points[keep:], key=lambda p: (-p[2], p[1]))
    for i, (name, x, y, color, r) in enumerate(order):
        px, py = to_px((x, y))
        w = w_char * len(name)
        d = r + 1.5
        spots = [(d, 0, "left", "center"), (d, d, "left", "bottom"), (d, -d, "left", "top"),
                 (-d, 0, "right", "center"), (-d, d, "right", "bottom"), (-d, -d, "right", "top"),
                 (0, d, "center", "bottom"), (0, -d, "center", "top")]
        inside = [sp for sp in spots if _within(box(px, py, *sp, w), frame)]
        free = [sp for sp in inside if not any(_overlap(box(px, py, *sp, w), t) for t in taken)]
        choice = free[0] if free else (inside or spots)[0] if i < keep else None
        if choice is None:
            continue
        taken.append(box(px, py, *choice, w))
        dx, dy, ha, va = choice
        ax.annotate(_plain(name), (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=size,
                    color=color, zorder=8)


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _within(a: tuple, frame: tuple) -> bool:
    return a[0] >= frame[0] and a[1] >= frame[1] and a[2] <= frame[2] and a[3] <= frame[3]


def _colors(n: int) -> list:
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["viridis"](i / (n - 1)) for i in range(n)]


@_styled
def sensitivity_plot(report: Report) -> Plot:
    """One line per group: quality after pruning only that group, against the ratio."""
    groups = report.sensitivity
    fig, ax = _figure(7.4 if len(groups) <= 24 else 8.6, 4.2)
    for (label, points), color in zip(groups.items(), _colors(len(groups))):
        ax.plot([r for r, _ in points], [q for _, q in points], "-o", ms=3.5, lw=1.6, color=color, label=_plain(label))
    ax.axhline(report.baseline.quality, color="#6b7280", lw=0.8, ls=(0, (4, 3)), label="baseline")
    ax.set_xlabel("pruning ratio (fraction of the group removed)")
    ax.set_ylabel(_plain(report.quality_name))
    ax.set_title(f"Sensitivity: {_plain(report.quality_name)} when one group is pruned", loc="left", color=TEXT,
                 fontweight="bold")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5 if len(groups) > 12 else 8.5,
              ncols=1 if len(groups) <= 24 else 2)
    return Plot(
        name="sensitivity",
        title="Sensitivity",
        alt=f"Sensitivity: {report.quality_name} against pruning ratio, one line per group ({len(groups)} groups)",
        png=_png(fig),
    )


@_styled
def widths_plot(report: Report) -> Plot:
    """Horizontal bars per layer: the width before (light) and after (solid) pruning."""
    rows = report.widths
    n = len(rows)
    fig, ax = _figure(6.0, max(2.2, 0.22 * n + 1.1))
    ys = list(range(n))
    before = [r["before"] for r in rows]
    after = [r["after"] for r in rows]
    ax.barh(ys, before, height=0.75, color="#e2e8f0", edgecolor="#cbd5e1", linewidth=0.6, label="before")
    ax.barh(ys, after, height=0.5, color=FRONT, label="after")
    top = max(before + after + [1])
    for y, b, a in zip(ys, before, after):
        ax.text(max(b, a) + top * 0.01, y, f"{a}/{b}", va="center", fontsize=7, color="#4b5563")
    ax.set_yticks(ys, [_plain(r["layer"]) for r in rows], fontsize=7.5 if n > 30 else 8.5)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.12)
    ax.grid(False, axis="y")
    ax.set_xlabel("width (output channels / features / heads)")
    ax.set_title("Layer widths", loc="left", color=TEXT, fontweight="bold")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, borderaxespad=0.2)
    return Plot(
        name="widths",
        title="Layer widths",
        alt=f"Layer widths: {n} layers before and after pruning",
        png=_png(fig),
    )


def staircase_plot(report: Report) -> Plot:
    """``staircase_figure`` as the report's PNG."""
    n = len(report.staircase or [])
    return Plot(
        name="staircase",
        title="Latency staircase",
        alt=f"Latency staircase: measured milliseconds against kept width for {n} snapped groups, "
            "asked width dashed, kept width red",
        png=_png(staircase_figure(report)),
    )


@_styled
def staircase_figure(report: Report) -> Figure:
    """One panel per snapped group: measured time against kept width, the asked and the kept width marked."""
    rows = report.staircase or []
    if not rows:
        raise ValueError("the report has no staircase to draw (no candidate was planned with round_to='auto')")
    n = len(rows)
    cols = min(3, n)
    nrows = -(-n // cols)
    fig = Figure(figsize=(3.3 * cols, 2.5 * nrows + 0.5), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, row in zip(axes, rows):
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.grid(True, color=GRID, linewidth=0.8)
        ax.set_axisbelow(True)
        ws, ms = list(row["curve"]), list(row["curve"].values())
        ax.plot(ws, ms, "-o", color=FRONT, lw=1.6, ms=3.5)
        asked, kept = row["asked"], row["kept"]
        ax.axvline(asked, color="#6b7280", lw=1.1, ls=(0, (4, 3)), label=f"asked {asked}")
        ax.axvline(kept, color=PICKED, lw=1.6, label=f"kept {kept}")
        ax.scatter([kept], [row["curve"][kept]], s=60, facecolor="none", edgecolor=PICKED, linewidth=1.6, zorder=5)
        change = (row["curve"][kept] - row["curve"][asked]) / row["curve"][asked] if row["curve"][asked] > 0 else 0.0
        ax.set_title(f"{_plain(row['layer'])}\n{asked} \u2192 {kept} channels, time {change:+.1%}", fontsize=8.5,
                     loc="left", color=TEXT)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("kept width", fontsize=8)
        ax.set_ylabel("ms (layers it sets)", fontsize=8)
        ax.tick_params(labelsize=7.5)
        ax.legend(loc="best", fontsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    who = f" of {_plain(report.staircase_of)}" if report.staircase_of else ""
    fig.suptitle(f"Latency staircase{who}: measured time against width", x=0.01, ha="left", fontsize=11,
                 fontweight="bold", color=TEXT)
    return fig
