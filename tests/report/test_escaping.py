"""Names from models and sweeps are data: no matplotlib math text, no raw HTML or Markdown syntax in any format."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib import cbook
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from secateurs.report import markdown, pareto_figure, write_report
from tests.report.sample import sample_data

# math text matplotlib cannot parse (an unknown command), then TeX specials, then markup
NASTY = [r"$\notacommand$", "cost $5 and $6", r"a_b^c\d{e}", "<script>alert(1)</script>",
         "[click](javascript:alert(1))", "**bold** `code` | pipe & amp"]


def _nasty_data() -> dict:
    data = sample_data()
    data["title"] = "sweep " + NASTY[3]
    data["quality_name"] = r"acc $\notacommand$ <b>"
    data["constraint"] = "max_drop=0.005, minimize=latency " + NASTY[4]
    for c, name in zip(data["candidates"], NASTY):
        c["name"] = name
    data["picked"] = NASTY[0]
    data["sensitivity"] = {name: curve for name, curve in zip(NASTY, data["sensitivity"].values())}
    for row, name in zip(data["widths"], NASTY):
        row["layer"] = name
    data["machine"]["cpu"] = NASTY[3]
    return data


def test_every_format_renders_names_with_math_and_markup_characters(tmp_path):
    data = _nasty_data()
    paths = write_report(data, tmp_path / "report.html")  # matplotlib raised on "$\notacommand$" before
    page = Path(paths["html"]).read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    md = Path(paths["md"]).read_text(encoding="utf-8")
    assert "<script" not in md and "<b>" not in md and "&lt;script&gt;" in md
    assert not re.search(r"(?<!\\)\]\(javascript:", md) and r"\[click\](javascript:alert(1))" in md  # no link
    assert r"\*\*bold\*\* \`code\` \| pipe &amp; amp" in md  # no emphasis, code span or extra column
    assert json.loads(Path(paths["json"]).read_text(encoding="utf-8")) == data  # the data as given
    for png in tmp_path.glob("report_*.png"):
        assert png.stat().st_size > 5000


@pytest.mark.parametrize("cost", ["latency", "macs", "size"])
def test_figures_draw_every_name_as_plain_text(cost):
    fig = pareto_figure(_nasty_data(), cost)
    FigureCanvasAgg(fig).draw()  # renders every text: raises on math text it cannot parse
    texts = [t.get_text() for t in fig.findobj(Text) if t.get_text()]
    # each name appears as a label (escaped), and nothing matplotlib draws would be parsed as math
    assert not [t for t in texts if cbook.is_math_text(t)]
    assert any("notacommand" in t for t in texts)


@pytest.mark.parametrize("raw,expected", [
    ("layer1.0", "layer1.0"),
    ("a_b*c", r"a\_b\*c"),
    ("<img src=x onerror=alert(1)>", "&lt;img src=x onerror=alert(1)&gt;"),
    ("two\nlines", "two lines"),
    ("back\\slash", "back\\\\slash"),
])
def test_markdown_text_is_inert(raw, expected):
    assert markdown.text(raw) == expected
    assert not re.search(r"<[a-z/]", markdown.text(raw))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("$\\_^{}<>&*`[]|~\n"), max_size=40))
def test_escaping_is_inert_and_lossless(raw):
    from secateurs.report.plots import _plain
    drawn = _plain(raw)
    assert not cbook.is_math_text(drawn)
    assert drawn.replace(r"\$", "$") == raw  # what matplotlib shows for non-math text is the name itself
    md = markdown.text(raw)
    assert not set("<>\n") & set(md)
    unescaped = re.sub(r"\\(.)", "", md)  # drop every backslash escape: no live Markdown syntax may remain
    assert not set("`*_[]|~\\") & set(unescaped)
