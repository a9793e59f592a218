"""Recipes: the whole recipe is validated before any work, and `module:function` targets are checked before a call."""
import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from secateurs.recipe import build_model, load_callable, load_recipe, run_recipe, validate
from tests import factories

BASE = {"model": "tests.factories:tiny", "input_shape": [4, 6], "methods": ["channel/l2/local"], "ratios": [0.5],
        "constraint": {"max_drop": 1.0, "minimize": "macs"}}


def _recipe(tmp_path, **fields):
    r = dict(BASE, workdir=str(tmp_path / "run"))
    r.update(fields)
    return {k: v for k, v in r.items() if v is not None}


@pytest.mark.parametrize("fields,message", [
    ({"constraint": {"max_drop": 0.1, "minimize": "speed"}},
     "'constraint': minimize must be one of ['latency', 'macs', 'size', 'params'], got 'speed'"),
    ({"constraint": {"max_drop": -1}}, "max_drop must be a non-negative number"),
    ({"constraint": {"max_drop": True}}, "max_drop must be a non-negative number"),
    ({"methods": ["channel/l3/local"]}, "criterion must be one of ["),
    ({"methods": ["rows/l2/local"]}, "granularity must be one of ['channel', 'head', 'unstructured', 'N:M', 'expert']"),
    ({"methods": ["channel/l2/everywhere"]}, "scope must be one of ['local', 'global', 'posttrain']"),
    ({"methods": ["channel/l2"]}, "'granularity/criterion/scope'"),
    ({"methods": ["channel/taylor/local"]}, "criterion 'taylor' needs gradient batches"),
    ({"methods": []}, "'methods' must be a list of strings"),
    ({"ratios": [0.5, 1.5]}, "'ratios' must be a list of numbers in (0, 1), got 1.5"),
    ({"ratios": [True]}, "'ratios' must be a list of numbers in (0, 1)"),
    ({"targets": [{"flops": 0.5}]}, "'targets': unknown target 'flops'"),
    ({"targets": [{"macs": 2}]},
     "'targets': target 'macs' (the fraction of the dense model's macs to keep) must be a number in (0, 1]"),
    ({"budget": 10}, "'budget' > 0 fine-tunes each candidate: it needs 'data'"),
    ({"budget": True}, "'budget' must be a non-negative integer"),
    ({"input_shape": [4, True]}, "'input_shape' must be a list of positive integers"),
    ({"evaluate": "accuracy"}, "'evaluate' must be 'fidelity'"),
    ({"model": "tests.factories"}, "'model' must be 'module:function'"),
    ({"model": "tests.factories:tiny; rm -rf /"}, "'model' must be 'module:function'"),
    ({"model_kwargs": [1]}, "'model_kwargs' must be a mapping"),
    ({"workdir": ""}, "'workdir' is required"),
    ({"round_to": 0}, "'round_to' must be a positive integer or 'auto'"),
    ({"round_to": "fast"}, "'round_to' must be a positive integer or 'auto'"),
    ({"round_to": True}, "'round_to' must be a positive integer or 'auto'"),
    ({"methods": ["channel/l2/local+fast"]}, "the suffix must be '+auto', '+round<N>'"),
    ({"methods": ["unstructured/l2/local+round8"]}, "round_to sets channel or head widths"),
])
def test_every_bad_field_fails_before_any_work(tmp_path, fields, message):
    with pytest.raises(ValueError) as exc:
        run_recipe(_recipe(tmp_path, **fields), quiet=True)
    assert message in str(exc.value)
    assert not (tmp_path / "run").exists()  # nothing ran, nothing written


def test_a_good_recipe_runs(tmp_path):
    front, best = run_recipe(_recipe(tmp_path, targets=[{"params": 0.7}], model="tests.factories:Tiny",
                                     model_kwargs={"width": 8}), quiet=True)
    assert [c.name for c in front.candidates] == ["dense", "channel/l2/local@0.5", "allocated/params=0.7"]
    assert best.model(torch.randn(3, 6)).shape == (3, 2)
    assert (tmp_path / "run" / "report.html").exists()


@pytest.mark.parametrize("ref,message", [
    ("os:system", "'os:system' is refused"),
    ("os.path:join", "refused: secateurs never calls into 'os'"),
    ("subprocess:run", "refused"),
    ("builtins:eval", "refused"),
    ("torch.hub:load", "refused: secateurs never calls into 'torch.hub'"),
    ("tests.factories:build", "is a builtin_function_or_method, not a class or a Python function"),
    ("tests.factories:wipe", "is shutil.rmtree, which secateurs never calls"),
    ("torch:randn", "not a class or a Python function"),
    ("tests.factories:CALLS", "is a list, not a class or a Python function"),
    ("tests.factories:NotAModule", "is a class but not an nn.Module subclass"),
    ("tests.factories:not_a_model", "returned int, not an nn.Module"),
    ("tests.factories:nope", "module 'tests.factories' has no attribute 'nope'"),
    ("tests.no_such_module:f", "cannot import module 'tests.no_such_module'"),
])
def test_model_targets_are_checked_before_they_are_called(ref, message):
    with pytest.raises(ValueError, match="model") as exc:
        build_model(ref, {})
    assert message in str(exc.value)


def test_os_system_in_a_recipe_is_never_called(tmp_path):
    marker = tmp_path / "pwned"
    recipe = _recipe(tmp_path, model="os:system", model_kwargs={"command": f"touch {marker}"})
    with pytest.raises(ValueError, match="refused"):
        run_recipe(recipe, quiet=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    with pytest.raises(ValueError, match="shutil.rmtree"):
        run_recipe(_recipe(tmp_path, model="tests.factories:wipe", model_kwargs={"path": str(victim)}), quiet=True)
    assert not marker.exists() and victim.is_dir()
    factories.CALLS.clear()
    with pytest.raises(ValueError, match="not an nn.Module subclass"):
        build_model("tests.factories:NotAModule", {"a": 1})
    assert factories.CALLS == []  # refused before the call


def test_load_callable_accepts_classes_and_functions():
    assert load_callable("tests.factories:tiny", "x") is factories.tiny
    assert load_callable("torchvision.models:resnet18", "x").__name__ == "resnet18"  # a decorated function
    assert isinstance(build_model("tests.factories:Tiny", {"width": 3}), torch.nn.Module)


def test_load_recipe_reads_and_validates(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(tmp_path, ratios=[2])))
    with pytest.raises(ValueError, match="'ratios'"):
        load_recipe(path)
    path.write_text("model: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_recipe(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
    path.write_text(yaml.safe_dump(_recipe(tmp_path)))
    assert validate(load_recipe(path))["model"] == "tests.factories:tiny"


def test_recipe_does_not_import_the_cli():
    import ast

    import secateurs.recipe
    tree = ast.parse(Path(secateurs.recipe.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names |= {f"{node.module or ''}.{a.name}" for a in node.names} | {node.module or ""}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    assert not [n for n in names if "cli" in n.split(".")]


def _trained_weights(path, width: int) -> str:
    from safetensors.torch import save_file

    from secateurs.examples import train
    x, y = factories.blobs()
    model = train.fit(factories.Tiny(width=width), x[:800], y[:800], epochs=30, lr=1e-2)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def test_trained_weights_and_data_module_give_a_pick_that_loads_and_scores_as_reported(tmp_path, capsys):
    from secateurs.cli import main
    weights = _trained_weights(tmp_path / "tiny.safetensors", width=32)
    recipe = {"model": "tests.factories:Tiny", "model_kwargs": {"width": 32}, "weights": weights,
              "data": "tests.factories:blobs_data", "methods": ["channel/l2/local"], "ratios": [0.25, 0.6],
              "budget": 10, "constraint": {"max_drop": 0.05, "minimize": "macs"}, "workdir": str(tmp_path / "run")}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rows = {json.loads(line)["name"]: json.loads(line) for line in (tmp_path / "run" / "results.jsonl").open()}
    assert rows["dense"]["quality"] > 0.9  # the trained weights were used (random weights score ~0.5)
    assert "* on the Pareto front" in out and "within 0.05 of dense quality, lowest macs" in out
    picked = re.search(r"^picked (\S+) \(quality ([\d.]+)\)", out, re.M)
    assert picked and picked.group(1) in rows
    code = out.split("load it with:\n")[1].strip()
    assert len(code.splitlines()) == 2
    scope: dict = {}
    exec(code, scope)  # the two printed lines, as a user would paste them
    quality = factories.blobs_data()["evaluate"](scope["model"])
    assert quality == pytest.approx(rows[picked.group(1)]["quality"], abs=1e-9)
    assert float(picked.group(2)) == pytest.approx(quality, abs=1e-4)


def test_data_may_give_calibration_inputs_for_batchnorm_recalibration(tmp_path, capsys):
    recipe = {"model": "secateurs.examples.models:mnist1d_cnn", "model_kwargs": {"channels": 8},
              "data": "tests.factories:calibrated_data", "methods": ["channel/l2/local"], "ratios": [0.5],
              "workdir": str(tmp_path / "run")}
    run_recipe(recipe, threads=1)
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").open()]
    assert [r["extra"].get("bn_recalibrated") for r in rows] == [None, 3]
    assert "BatchNorm statistics re-estimated on 3 calibration batches" in capsys.readouterr().out


def test_weights_are_checked_strictly_and_only_safetensors_are_read(tmp_path):
    small = _trained_weights(tmp_path / "small.safetensors", width=8)
    base = {"model": "tests.factories:Tiny", "input_shape": [2, 6], "workdir": str(tmp_path / "r")}
    with pytest.raises(ValueError, match=r"recipe field 'weights': .*small.safetensors does not fit the model "
                                         r"Tiny: wrong shape \['0.weight \(8, 6\) vs \(4, 6\)'"):
        run_recipe(dict(base, weights=small), quiet=True)
    (tmp_path / "model.pt").write_bytes(b"not read")
    with pytest.raises(ValueError, match=r"'weights' must be the path of a .safetensors file \(pickled"):
        validate(dict(base, weights=str(tmp_path / "model.pt")))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        validate(dict(base, weights=str(tmp_path / "none.safetensors")))
    assert not (tmp_path / "r").exists()


def test_run_help_documents_every_recipe_field(capsys):
    from secateurs.cli import main
    from secateurs.recipe import FIELDS
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert all(f"\n  {field}: " in out for field in FIELDS), [f for f in FIELDS if f"\n  {f}: " not in out]
    assert "--weights" in out and "sc.load" in out


def test_round_to_applies_to_every_candidate_and_a_suffix_to_one(tmp_path):
    front, _ = run_recipe(_recipe(tmp_path, model="tests.factories:Tiny", model_kwargs={"width": 20}, round_to=8,
                                  methods=["channel/l2/local", "channel/l2/local+round16"]), quiet=True)
    widths = {c.name: c.extra["widths"]["0"] for c in front.candidates}
    assert widths == {"dense": 20, "channel/l2/local@0.5": 16, "channel/l2/local+round16@0.5": 16}
    plans = {c.name: json.loads((tmp_path / "run" / c.plan_path).read_text())["settings"]["round_to"]
             for c in front.candidates if c.name != "dense"}
    assert plans == {"channel/l2/local@0.5": 8, "channel/l2/local+round16@0.5": 16}


def test_round_to_auto_snaps_with_the_measured_table(tmp_path, monkeypatch):
    monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path / "cache"))
    front, _ = run_recipe(_recipe(tmp_path, model="tests.factories:Tiny", model_kwargs={"width": 20}, round_to="auto"),
                          quiet=True, threads=1)
    cand = next(c for c in front.candidates if c.name == "channel/l2/local@0.5")
    snap = next(iter(cand.extra["latency_snaps"]["groups"].values()))
    assert set(snap["curve"]) == {"8", "10"}  # asked 10 of 20: timed at 10 and at 8, the multiple of 8 just below
    assert cand.extra["widths"]["0"] == snap["kept"] in (8, 10)
    assert list((tmp_path / "cache" / "latency").glob("*.json"))
