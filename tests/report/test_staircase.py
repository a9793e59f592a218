"""The report's latency staircase: time against width for the groups a round_to="auto" candidate snapped."""
from __future__ import annotations

import pytest
from matplotlib.lines import Line2D

from secateurs.report import load, write_report
from secateurs.report.html import png_size
from secateurs.report.plots import staircase_figure
from secateurs.search.candidate import Candidate
from secateurs.search.front import staircase_rows
from tests.report.sample import sample_data

# group layer -> (asked, kept, {width: ms}): a real-looking staircase, flat between multiples of 8
STAIRS = {
    "layer1.0.conv1": (30, 32, {28: 0.40, 30: 0.52, 32: 0.41, 36: 0.55}),
    "layer2.0.conv1": (61, 64, {56: 0.90, 61: 1.20, 64: 0.95, 72: 1.30}),
    "layer3.0.conv1": (122, 120, {112: 1.6, 120: 1.7, 122: 2.3, 128: 2.0}),
    "layer4.0.conv1": (256, 256, {224: 3.0, 256: 3.3, 264: 3.9}),
}


def _data() -> dict:
    data = sample_data()
    data["staircase"] = [{"layer": k, "asked": a, "kept": kept, "curve": {str(w): t for w, t in c.items()}}
                         for k, (a, kept, c) in STAIRS.items()]
    data["staircase_of"] = "l2-0.5+auto"
    return data


def test_report_draws_the_staircase_in_html_and_markdown(tmp_path):
    paths = write_report(_data(), tmp_path / "report.html")
    png = tmp_path / "report_staircase.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = png_size(png.read_bytes())
    assert w > 1000 and 400 < h < w  # two rows of panels, wider than tall
    html = (tmp_path / "report.html").read_text()
    assert 'id="staircase"' in html and "Latency staircase of l2-0.5+auto" in html
    md = (tmp_path / "report.md").read_text()
    assert "![Latency staircase](report_staircase.png)" in md
    assert "| layer2.0.conv1 | 61 | 64 | 1.200 | 0.950 |" in md  # asked, kept and their measured times
    assert paths["md"].endswith("report.md")


def test_staircase_panels_show_the_measured_curve_and_both_widths():
    fig = staircase_figure(load(_data()))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == len(STAIRS)
    for ax, (layer, (asked, kept, curve)) in zip(axes, STAIRS.items()):
        assert ax.get_title(loc="left").startswith(layer)
        lines = [ln for ln in ax.get_lines() if isinstance(ln, Line2D)]
        data = next(ln for ln in lines if len(ln.get_xdata()) == len(curve))
        assert list(data.get_xdata()) == sorted(curve) and list(data.get_ydata()) == [curve[w] for w in sorted(curve)]
        vertical = {ln.get_xdata()[0] for ln in lines if len(set(ln.get_xdata())) == 1 and len(ln.get_xdata()) == 2}
        assert vertical == {asked, kept}  # dashed at the asked width, red at the kept one (one line when equal)
        change = (curve[kept] - curve[asked]) / curve[asked]
        assert f"time {change:+.1%}" in ax.get_title(loc="left")


def test_no_staircase_no_section(tmp_path):
    write_report(sample_data(), tmp_path / "report.html")
    assert not (tmp_path / "report_staircase.png").exists()
    assert 'id="staircase"' not in (tmp_path / "report.html").read_text()
    with pytest.raises(ValueError, match="no staircase"):
        staircase_figure(load(sample_data()))


@pytest.mark.parametrize("edit,message", [
    (lambda s: s[0].pop("curve"), r"data\['staircase'\]\[0\] is missing key 'curve'"),
    (lambda s: s[1].update(kept=63), r"data\['staircase'\]\[1\]\['kept'\] is 63, which is not a width of its curve"),
    (lambda s: s[2].update(curve={}), r"data\['staircase'\]\[2\]\['curve'\] must be a non-empty dict"),
    (lambda s: s[0]["curve"].update({"wide": 1.0}), r"has width 'wide', which is not an integer"),
    (lambda s: s[0]["curve"].update({"30": "fast"}), r"\['curve'\]\['30'\] must be a number"),
    (lambda s: s.append(3), r"data\['staircase'\]\[4\] must be a dict"),
])
def test_bad_staircase_data_is_named(tmp_path, edit, message):
    data = _data()
    edit(data["staircase"])
    with pytest.raises(ValueError, match=message):
        write_report(data, tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()


def _snapped(name: str, gain: float, groups: dict) -> Candidate:
    m = {"params": 1, "macs": 1, "size_bytes": 1, "latency": None}
    return Candidate(name, {}, 0.9, m, extra={"latency_snaps": {"table": "t", "gain_ms": gain, "groups": groups}})


def _group(asked: int, kept: int, layer: str) -> dict:
    return {"asked": asked, "kept": kept, "gain_ms": 0.0, "layer": layer,
            "curve": {str(asked): 1.0, str(kept): 0.9}}


def test_staircase_rows_prefer_the_pick_then_the_largest_gain_and_sort_by_move():
    plain = Candidate("plain", {}, 0.9, {"params": 1, "macs": 1, "size_bytes": 1, "latency": None})
    a = _snapped("a", 0.5, {"1": _group(10, 10, "same"), "2": _group(20, 24, "up20%"), "3": _group(40, 36, "down10%")})
    b = _snapped("b", 2.0, {"1": _group(8, 16, "up100%")})
    rows, of = staircase_rows([plain, a, b], picked=a)
    assert of == "a" and [r["layer"] for r in rows] == ["up20%", "down10%", "same"]
    assert staircase_rows([plain, a, b], picked=plain)[1] == "b"  # the pick was not snapped: the largest gain
    assert [r["layer"] for r in staircase_rows([a], picked=None, limit=1)[0]] == ["up20%"]
    assert staircase_rows([plain], picked=plain) == ([], "")
