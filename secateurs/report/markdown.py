"""The Markdown version: the same sections and tables, figures as PNG files next to the .md."""
from __future__ import annotations

from secateurs.report import fmt, tables
from secateurs.report.data import Report
from secateurs.report.plots import Plot

# Markdown syntax that data (module names, candidate names, quality names) could otherwise trigger:
# emphasis, code spans, links/images, table pipes, strikethrough. "<", ">" and "&" become entities so
# no raw HTML (a module named "<script>") ever reaches a Markdown renderer.
_SYNTAX = "\\`*_[]|~"
_ENTITIES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"))


def text(value: object) -> str:
    """``value`` as inert Markdown text: syntax characters backslash-escaped, HTML escaped, newlines flattened."""
    out = "".join("\\" + ch if ch in _SYNTAX else ch for ch in str(value))
    for raw, entity in _ENTITIES:
        out = out.replace(raw, entity)
    return " ".join(out.splitlines())


def table(t: tables.Table, tags: bool = False) -> str:
    header = t.header if any(t.header) else ["key", "value"]
    lines = ["| " + " | ".join(text(h) for h in header) + " |",
             "|" + "|".join("---:" if n else "---" for n in t.numeric) + "|"]
    for i, row in enumerate(t.rows):
        kind = t.kinds[i] if i < len(t.kinds) else ""
        cells = [text(c) for c in row]
        if tags and kind in ("baseline", "picked"):
            cells[0] = f"**{cells[0]}** ({kind})"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(report: Report, plots: list[Plot], files: dict[str, str]) -> str:
    """The document; ``files[plot.name]`` is the PNG's path relative to the .md file."""
    by_name = {p.name: p for p in plots}
    out = [f"# {text(report.title)}", ""]
    line = f"{len(report.candidates)} candidates against baseline **{text(report.baseline.name)}**; " \
           f"quality: **{text(report.quality_name)}**"
    if report.constraint:
        line += f"; constraint: {text(report.constraint)}"
    out += [line, "", "## Picked", ""]
    p = report.picked
    if p is None:
        out += ["**No candidate met the constraint.**", ""]
    else:
        out += [f"**{text(p.name)}**" + (" (the baseline)" if p.name == report.baseline.name else "")
                + (f": {text(fmt.method(p.method))}" if p.method else ""), ""]
        out += [f"- {text(s.label)}: **{text(s.value)}** \u2014 {text(s.note)}" for s in tables.summary(report)] + [""]
        if report.decision:
            out += [text(report.decision), ""]
        if report.load_code:  # an indented code block: shown verbatim, never parsed as Markdown or HTML
            out += ["Load it:", ""] + ["    " + line for line in report.load_code.splitlines()] + [""]
    pareto = [x for x in plots if x.name.startswith("pareto_")]
    if pareto:
        out += ["## Trade-offs", ""]
        for x in pareto:
            out += [f"![{text(x.title)}]({files[x.name]})", ""]
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
        out += [f"## Layer widths of {text(name)}", "", f"![Layer widths]({files['widths']})", "",
                table(tables.widths(report)), ""]
    if "staircase" in by_name:
        who = f" of {text(report.staircase_of)}" if report.staircase_of else ""
        out += [f"## Latency staircase{who}", "", f"![Latency staircase]({files['staircase']})", "",
                "| group | asked | kept | ms asked | ms kept |", "|---|---:|---:|---:|---:|"]
        out += [f"| {text(r['layer'])} | {r['asked']} | {r['kept']} | {r['curve'][r['asked']]:.3f} | "
                f"{r['curve'][r['kept']]:.3f} |" for r in report.staircase or []]
        out += ["", "Measured time of the layers each group sets, against its kept width (round_to=\"auto\"); "
                "dashed: the width asked for, red: the width kept.", ""]
    out += ["## Machine", "", table(tables.key_values(report.machine)), "",
            "## Versions", "", table(tables.key_values(report.versions)), ""]
    return "\n".join(out)
