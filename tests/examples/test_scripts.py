"""The scripts in examples/ run end to end (small settings), each in a fresh process as a user runs it."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.examples
def test_prune_my_cnn(tmp_path):
    out = _run("prune_my_cnn.py", "--small", "--workdir", str(tmp_path), "--max-drop", "0.6")
    assert "* on the Pareto front" in out and "\npicked channel/" in out
    assert "after recovery: accuracy" in out
    assert "loaded:" in out and "predictions:" in out and "latency" in out  # fresh process, then used
    assert (tmp_path / "picked" / "model.safetensors").exists() and (tmp_path / "trained.safetensors").exists()
    # the trained weights go back in with --weights: no training the second time
    again = _run("prune_my_cnn.py", "--small", "--workdir", str(tmp_path / "again"), "--max-drop", "0.6",
                 "--weights", str(tmp_path / "trained.safetensors"))
    dense = re.compile(r"^\*?\s+dense\s+([\d.]+)", re.M)
    assert dense.search(again).group(1) == dense.search(out).group(1)


@pytest.mark.examples
def test_prune_hf_model_tiny():
    out = _run("prune_hf_model.py", "--tiny")
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [r[0] for r in rows] == ["0%", "25%", "50%"]
    params = [float(r[2].rstrip("M")) for r in rows]
    assert params[0] > params[1] > params[2]
    assert float(rows[0][3]) == pytest.approx(1.0, abs=1e-6) and all(0.5 < float(r[3]) <= 1.0 for r in rows)


@pytest.mark.examples
def test_prune_during_training(tmp_path):
    out = _run("prune_during_training.py", "--small", "--workdir", str(tmp_path))
    assert "channels pruned 50% (schedule: 50%)" in out
    before, after, acc = re.search(r"params ([\d,]+) -> ([\d,]+), accuracy ([\d.]+)", out).groups()
    assert int(after.replace(",", "")) < 0.5 * int(before.replace(",", ""))
    assert f"loaded back: accuracy {acc}" in out  # the saved model is the trained one
    assert (tmp_path / "model" / "model.safetensors").exists()
