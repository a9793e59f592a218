"""`secateurs run --round-to`: kept widths a multiple of N or snapped to this machine's latency table."""
import json

import pytest
import yaml

from secateurs.cli import main


def _recipe(tmp_path, **fields):
    recipe = {"model": "tests.factories:Tiny", "model_kwargs": {"width": 20}, "input_shape": [4, 6],
              "methods": ["channel/l2/local"], "ratios": [0.5], "workdir": str(tmp_path / "run"),
              "constraint": {"max_drop": 1.0, "minimize": "macs"}, **fields}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _plan(tmp_path, name="channel/l2/local@0.5"):
    rows = {json.loads(line)["name"]: json.loads(line) for line in (tmp_path / "run" / "results.jsonl").open()}
    return json.loads((tmp_path / "run" / rows[name]["plan_path"]).read_text()), rows[name]


def test_round_to_overrides_the_recipe(tmp_path):
    assert main(["run", str(_recipe(tmp_path, round_to=4)), "--round-to", "16", "--quiet", "--threads", "1"]) == 0
    plan, row = _plan(tmp_path)
    assert plan["settings"]["round_to"] == 16 and row["extra"]["widths"]["0"] == 16


def test_round_to_auto_records_the_snaps(tmp_path, monkeypatch):
    monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path / "cache"))
    assert main(["run", str(_recipe(tmp_path)), "--round-to", "auto", "--quiet", "--threads", "1"]) == 0
    plan, row = _plan(tmp_path)
    assert plan["settings"]["round_to"] == "auto" and plan["settings"]["latency"]["groups"]
    assert row["extra"]["latency_snaps"] == plan["settings"]["latency"]


@pytest.mark.parametrize("value", ["0", "-3", "fast", "1.5"])
def test_bad_round_to_is_a_usage_error(tmp_path, value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", str(_recipe(tmp_path)), "--round-to", value])
    assert exc.value.code == 2
    assert f"--round-to: must be a positive integer or 'auto', got '{value}'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
