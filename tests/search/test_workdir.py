"""Sweep workdirs as untrusted, crash-prone state: torn lines, truncated files, bad records, a second process."""
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import secateurs as sc
from secateurs._files import atomic_write
from secateurs.search import read_workdir
from secateurs.search import workdir as workdir_module
from secateurs.search.workdir import WorkdirBusy, append_line, locked
from tests.search.test_explore import KW, X, small_cnn


def _explore(workdir, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        front = sc.explore(small_cnn(), X, "fidelity", workdir=workdir, **dict(KW, **kw))
    return front, [str(w.message) for w in caught]


def _names(workdir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c.name for c in read_workdir(workdir)[0]]


def test_a_torn_last_line_never_corrupts_the_next_record(tmp_path):
    _explore(tmp_path, ratios=[0.25])
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"name": "channel/l2/local@0.5", "quality": 0.9, "meas')  # a run killed mid-write
    _, messages = _explore(tmp_path)
    assert any("results.jsonl:3: skipping a corrupt or truncated line" in m for m in messages)
    # the record appended after the torn line is intact: the sweep is complete on disk
    assert _names(tmp_path) == ["dense", "channel/l2/local@0.25", "channel/l2/local@0.5"]
    _, messages = _explore(tmp_path)
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 4  # nothing recomputed the third time


@pytest.mark.parametrize("damage,why", [
    (lambda r: r["measurement"].pop("macs"), "is missing key 'macs'"),
    (lambda r: r.update(quality="high"), "['quality'] must be a number"),
    (lambda r: r["measurement"].update(latency={"median_ms": None, "p10_ms": 1, "p90_ms": 2}), "['median_ms']"),
    (lambda r: r.update(plan_path="../../etc/passwd"), "relative path inside the workdir"),
])
def test_an_ill_formed_record_is_reported_skipped_and_recomputed(tmp_path, damage, why):
    _explore(tmp_path)
    results = tmp_path / "results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    damage(rows[2])
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    front, messages = _explore(tmp_path)
    assert any("results.jsonl:3" in m and why in m for m in messages), messages
    assert [c.name for c in front.candidates] == ["dense", "channel/l2/local@0.25", "channel/l2/local@0.5"]
    assert front.pick(max_drop=1.0, minimize="macs").candidate.name == "channel/l2/local@0.5"
    assert json.loads(results.read_text().splitlines()[-1])["name"] == "channel/l2/local@0.5"  # recomputed


@pytest.mark.parametrize("cut", [0, 1, 40])
def test_a_truncated_sensitivity_file_is_reported_and_recomputed(tmp_path, cut):
    kw = dict(ratios=[0.5], targets=[{"params": 0.6}])
    _explore(tmp_path, **kw)
    path = tmp_path / "sensitivity.json"
    good = json.loads(path.read_text())
    path.write_text(path.read_text()[:cut])
    front, messages = _explore(tmp_path, **kw)
    assert any("sensitivity.json is corrupt or truncated" in m for m in messages)
    assert json.loads(path.read_text())["curves"] == good["curves"]  # rewritten whole
    assert front.sensitivity["curves"] == good["curves"]
    _, messages = _explore(tmp_path, **kw)  # and the next resume is clean
    assert not any("corrupt" in m for m in messages)


# The other process loads workdir.py (and the _files.py it uses) alone: they need only the standard library,
# so empty parent packages stand in for secateurs and secateurs.search (no torch import to wait for).
_HOLDER = """
import importlib, os, sys, types
search = os.path.dirname(sys.argv[2])
for name, path in (("secateurs", os.path.dirname(search)), ("secateurs.search", search)):
    package = types.ModuleType(name)
    package.__path__ = [path]
    sys.modules[name] = package
workdir = importlib.import_module("secateurs.search.workdir")
assert "torch" not in sys.modules
with workdir.locked(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_process_on_the_same_workdir_stops_with_one_clear_error(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path), workdir_module.__file__],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirBusy, match=rf"workdir {tmp_path} is in use by another process \(pid {holder.pid}\)"):
            sc.explore(small_cnn(), X, "fidelity", workdir=tmp_path, **KW)
        assert not (tmp_path / "results.jsonl").exists()  # refused before any candidate ran
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    front = sc.explore(small_cnn(), X, "fidelity", workdir=tmp_path, **KW)  # released: the sweep runs
    assert len(front.candidates) == 3
    with locked(tmp_path):  # and explore released it again
        pass


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "plan.json"
    atomic_write(path, "old")

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["plan.json"]  # no temporary left behind


def test_append_line_ends_a_torn_line_first(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"b":')
    append_line(path, '{"c": 3}')
    append_line(path, '{"d": 4}')
    assert path.read_text().splitlines() == ['{"a": 1}', '{"b":', '{"c": 3}', '{"d": 4}']
    with pytest.raises(ValueError, match="newline"):
        append_line(path, "x\ny")


def test_finetuned_candidates_are_written_as_whole_folders(tmp_path):
    def finetune(model, steps):
        return model

    front = sc.explore(small_cnn(), X, "fidelity", workdir=tmp_path, finetune=finetune, budget=1, **KW)
    folder = tmp_path / "candidates" / "channel_l2_local@0.5"
    assert sorted(os.listdir(folder)) == ["model.safetensors", "plan.json"]
    assert not [n for n in os.listdir(folder.parent) if n.endswith(".tmp")]
    model, _ = front.rebuild(front.candidates[2])
    assert model(X).shape == (2, 5) and torch.isfinite(model(X)).all()


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


@settings(max_examples=60, deadline=None)
@given(record=JSON, damage=st.sampled_from(["name", "method", "quality", "measurement", "extra", "seconds", None]),
       sens=JSON | st.text(max_size=30))
def test_read_workdir_never_crashes_on_hand_edited_files(tmp_path_factory, record, damage, sens):
    path = tmp_path_factory.mktemp("w")
    good = {"name": "a", "method": {}, "quality": 1.0, "measurement": {"params": 1, "macs": 2, "size_bytes": 3}}
    bad = dict(good, **{damage: record}) if damage else record
    (path / "results.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    (path / "sensitivity.json").write_text(sens if isinstance(sens, str) else json.dumps(sens))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        candidates, sensitivity = read_workdir(path)
    assert candidates[0].name == "a" and all(isinstance(c.quality, float | int) for c in candidates)
    assert all(isinstance(c.measurement["macs"], int | float) for c in candidates)
    assert sensitivity is None or isinstance(sensitivity.get("curves"), dict)
