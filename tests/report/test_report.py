"""write_report: the three files, their contents, and the checks on its input."""
from __future__ import annotations

import base64
import copy
import json
import re
import sys
from pathlib import Path

import matplotlib
import pytest

from secateurs.report import pareto_figure, write_report
from secateurs.report.data import REQUIRED
from secateurs.search.candidate import Candidate, pareto
from tests.report.sample import sample_data

IMG = '<img src="data:image/png;base64,'
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_writes_html_md_json(tmp_path):
    data = sample_data()
    paths = write_report(data, tmp_path / "out" / "report.html")
    assert set(paths) == {"html", "md", "json"}
    assert paths["html"] == str(tmp_path / "out" / "report.html")
    assert paths["md"].endswith("report.md") and paths["json"].endswith("report.json")
    for p in paths.values():
        assert (tmp_path / "out" / p.rsplit("/", 1)[-1]).stat().st_size > 0

    # JSON is the data, unchanged.
    assert json.loads(Path(paths["json"]).read_text(encoding="utf-8")) == data
    assert data == sample_data()  # and write_report did not modify its input

    # HTML: 3 Pareto plots + sensitivity + widths, all inline PNGs, nothing fetched from elsewhere.
    html = Path(paths["html"]).read_text(encoding="utf-8")
    assert html.count(IMG) == 5
    pngs = _images(html)
    assert len(pngs) == 5 and all(p.startswith(PNG_MAGIC) for p in pngs)
    assert "<script" not in html and "<link" not in html
    assert "http://" not in html and "https://" not in html
    assert "<style>" in html
    for c in data["candidates"]:
        assert c["name"] in html
    for label in ("accuracy vs latency", "accuracy vs MACs", "accuracy vs size", "Sensitivity", "Layer widths",
                  "AMD EPYC 7B13", "2.14.1", "max_drop=0.005, minimize=latency"):
        assert label in html, label

    # Markdown: the candidate table with one row per model, figures as PNG files next to it.
    md = Path(paths["md"]).read_text(encoding="utf-8")
    header = ("| candidate | method | accuracy | drop | params | MACs | size | latency (ms) | p10–p90 (ms) "
              "| Pareto front |")
    assert header in md
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    for c in data["candidates"]:
        assert any(r.startswith((f"| {c['name']} |", f"| **{c['name']}** (picked)")) for r in rows)
    assert "| **baseline** (baseline) |" in md
    assert "| **taylor-0.3** (picked) |" in md
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert links == ["report_pareto_latency.png", "report_pareto_macs.png", "report_pareto_size.png",
                     "report_sensitivity.png", "report_widths.png"]
    for name in links:
        assert (tmp_path / "out" / name).read_bytes().startswith(PNG_MAGIC)
    assert "| layer | before | after | kept |" in md
    assert "| layer4.0.conv1 | 512 | 352 | 69% |" in md
    assert "| group | 0.1 | 0.2 |" in md


def test_table_values_and_fronts(tmp_path):
    data = sample_data()
    md = Path(write_report(data, tmp_path / "r.html")["md"]).read_text(encoding="utf-8")
    cands = [Candidate.from_dict(c) for c in data["candidates"]]
    on = {cost: {c.name for c in pareto(cands, cost)} for cost in ("latency", "macs", "size")}
    row = {line.split(" | ")[0].strip("|* ").split("*")[0]: line.split(" | ") for line in md.splitlines()
           if line.startswith("| ") and " | criterion=" in line}
    for c in cands:
        cells = row[c.name]
        expect = [n for cost, n in (("latency", "latency"), ("macs", "MACs"), ("size", "size")) if c.name in on[cost]]
        assert cells[-1].rstrip(" |") == (", ".join(expect) or "\u2014")
    taylor = row["taylor-0.3"]
    assert taylor[2:9] == ["0.6938", "+0.0038", "5.81 M", "921.00 MMACs", "23.3 MB", "27.9", "27.1\u201329.6"]
    assert "fpgm-0.5" not in on["latency"]  # dominated: the table says so
    assert row["fpgm-0.5"][-1].rstrip(" |") == "\u2014"


def test_optional_sections_and_missing_latency(tmp_path):
    data = sample_data()
    del data["sensitivity"], data["widths"]
    for c in data["candidates"][:2]:
        c["measurement"]["latency"] = None
    html = Path(write_report(data, tmp_path / "a.html")["html"]).read_text(encoding="utf-8")
    assert html.count(IMG) == 3
    assert "2 candidate(s) without a latency measurement" not in html  # said inside the figure, not the page
    assert 'id="sensitivity"' not in html and 'id="widths"' not in html

    for c in data["candidates"]:
        c["measurement"]["latency"] = None
    data["baseline"]["measurement"]["latency"] = None
    paths = write_report(data, tmp_path / "b.html")
    html = Path(paths["html"]).read_text(encoding="utf-8")
    assert html.count(IMG) == 2  # MACs and size only
    assert "accuracy vs latency" not in html
    assert not (tmp_path / "b_pareto_latency.png").exists()


def test_nothing_picked_and_baseline_among_candidates(tmp_path):
    data = sample_data()
    data["picked"] = None
    data["candidates"].insert(0, copy.deepcopy(data["baseline"]))
    paths = write_report(data, tmp_path / "r.html")
    html = Path(paths["html"]).read_text(encoding="utf-8")
    assert "No candidate met the constraint" in html
    md = Path(paths["md"]).read_text(encoding="utf-8")
    assert md.count("| **baseline** (baseline) |") == 1  # listed once
    assert "**No candidate met the constraint.**" in md


def test_sparse_column_and_escaping(tmp_path):
    data = sample_data()
    data["title"] = "<script>alert(1)</script> & co"
    data["candidates"][0]["measurement"]["nonzero_params"] = 1_000_000
    data["candidates"][0]["method"]["note"] = "a|b"
    paths = write_report(data, tmp_path / "r.html")
    html = Path(paths["html"]).read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    md = Path(paths["md"]).read_text(encoding="utf-8")
    assert "| nonzero params |" in md and "1.00 M" in md
    assert "a\\|b" in md


def test_leaves_matplotlib_state_alone(tmp_path, monkeypatch):
    backend, rc = matplotlib.get_backend(), dict(matplotlib.rcParams)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # importing pyplot would now fail
    write_report(sample_data(), tmp_path / "r.html")
    assert matplotlib.get_backend() == backend
    assert dict(matplotlib.rcParams) == rc


def test_pareto_figure(tmp_path):
    """One plot as a matplotlib Figure (what ``Front.plot`` returns), from the data dict, for any cost."""
    from matplotlib.figure import Figure

    data = sample_data()
    for cost in ("latency", "macs", "size", "params"):
        fig = pareto_figure(data, cost)
        assert isinstance(fig, Figure)
        ax = fig.axes[0]
        assert ax.get_ylabel().startswith("accuracy") and ax.get_xlabel()
        fig.savefig(tmp_path / f"{cost}.png")
        assert (tmp_path / f"{cost}.png").read_bytes().startswith(PNG_MAGIC)
    assert "GMACs" in pareto_figure(data, "macs").axes[0].get_xlabel()
    assert "MB" in pareto_figure(data, "size").axes[0].get_xlabel()
    assert "ms" in pareto_figure(data, "latency").axes[0].get_xlabel()
    with pytest.raises(ValueError, match="cost must be one of"):
        pareto_figure(data, "energy")
    for c in data["candidates"]:
        c["measurement"]["latency"] = None
    with pytest.raises(ValueError, match="no candidate has a latency measurement"):
        pareto_figure(data, "latency")


@pytest.mark.parametrize("key", REQUIRED)
def test_missing_key_is_named(tmp_path, key):
    data = sample_data()
    del data[key]
    with pytest.raises(ValueError, match=rf"missing key '{key}'"):
        write_report(data, tmp_path / "r.html")
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["candidates"][2].pop("quality"), r"data\['candidates'\]\[2\] is missing key 'quality'"),
        (lambda d: d["candidates"][1]["measurement"].pop("macs"),
         r"data\['candidates'\]\[1\]\['measurement'\] is missing key 'macs'"),
        (lambda d: d["baseline"]["measurement"]["latency"].pop("p90_ms"),
         r"data\['baseline'\]\['measurement'\]\['latency'\] is missing key 'p90_ms'"),
        (lambda d: d["candidates"][0].update(quality="high"),
         r"data\['candidates'\]\[0\]\['quality'\] must be a number"),
        (lambda d: d.update(picked="nope"), r"data\['picked'\] is 'nope', which names no candidate"),
        (lambda d: d["candidates"].append(copy.deepcopy(d["candidates"][0])), r"two candidates named 'l2-0.2'"),
        (lambda d: d.update(candidates={}), r"data\['candidates'\] must be a list"),
        (lambda d: d["widths"][3].pop("after"), r"data\['widths'\]\[3\] is missing key 'after'"),
        (lambda d: d["sensitivity"]["layer1.0"].update(big=0.5), r"ratio 'big', which is not a number"),
        (lambda d: d.update(machine="x86"), r"data\['machine'\] must be a dict"),
        (lambda d: d["machine"].update(when=object()), r"must be JSON-serialisable"),
        (lambda d: d.update(title=""), r"data\['title'\] must be a non-empty string"),
    ],
)
def test_bad_data_is_explained(tmp_path, edit, message):
    data = sample_data()
    edit(data)
    with pytest.raises(ValueError, match=message):
        write_report(data, tmp_path / "r.html")
    assert list(tmp_path.iterdir()) == []


def test_path_must_not_collide_with_siblings(tmp_path):
    with pytest.raises(ValueError, match="must not end in .md or .json"):
        write_report(sample_data(), tmp_path / "r.json")
    with pytest.raises(ValueError, match="report data must be a dict"):
        write_report([], tmp_path / "r.html")
