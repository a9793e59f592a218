"""The Markdown version: the same sections and tables, figures as PNG files next to the .md."""
from __future__ import annotations

from secateurs.report import fmt, tables
from secateurs.report.data import Report
from secateurs.report.plots import Plot


def cell(text: str) -> str:
    """A table cell: pipes escaped, newlines flattened."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def table(t: tables.Table, tags: bool = False) -> str:
    header = t.header if any(t.header) else ["key", "value"]
    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---:" if n else "---" for n in t.numeric) + "|"]
    for i, row in enumerate(t.rows):
        kind = t.kinds[i] if i < len(t.kinds) else ""
        cells = [cell(c) for c in row]
        if tags and kind in ("baseline", "picked"):
            cells[0] = f"**{cells[0]}** ({kind})"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(report: Report, plots: list[Plot], files: dict[str, str]) -> str:
    """The document; ``files[plot.name]`` is the PNG's path relative to the .md file."""
    by_name = {p.name: p for p in plots}
    out = [f"# {report.title}", ""]
    line = f"{len(report.candidates)} candidates against baseline **{report.baseline.name}**; " \
           f"quality: **{report.quality_name}**"
    if report.constraint:
        line += f"; constraint: `{report.constraint}`"
    out += [line, "", "## Picked", ""]
    p = report.picked
    if p is None:
        out += ["**No candidate met the constraint.**", ""]
    else:
        out += [f"**{p.name}**" + (" (the baseline)" if p.name == report.baseline.name else "")
                + (f": {fmt.method(p.method)}" if p.method else ""), ""]
        out += [f"- {s.label}: **{s.value}** \u2014 {s.note}" for s in tables.summary(report)] + [""]
    pareto = [x for x in plots if x.name.startswith("pareto_")]
    if pareto:
        out += ["## Trade-offs", ""]
        for x in pareto:
            out += [f"![{x.title}]({files[x.name]})", ""]
        out += [("Grey: every candidate. Blue line: the Pareto front. Star: the baseline; red ring: the picked "
                 "candidate. Dashed line: the baseline's quality."), ""]
    out += ["## Candidates", "", table(tables.candidates(report), tags=True), "",
            ("drop = baseline quality \u2212 candidate quality (positive is worse). Pareto front: the cost axes on "
             "which the candidate is non-dominated."), ""]
    if "sensitivity" in by_name:
        out += ["## Sensitivity", "", f"![Sensitivity]({files['sensitivity']})", "",
                table(tables.sensitivity(report)), ""]
    if "widths" in by_name:
        name = p.name if p is not None else "the picked model"
        out += [f"## Layer widths of {name}", "", f"![Layer widths]({files['widths']})", "",
                table(tables.widths(report)), ""]
    out += ["## Machine", "", table(tables.key_values(report.machine)), "",
            "## Versions", "", table(tables.key_values(report.versions)), ""]
    return "\n".join(out)
