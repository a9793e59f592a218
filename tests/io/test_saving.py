"""save/load: safetensors weights + JSON plan, rebuilt on a fresh model without unpickling anything."""
import copy
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.models import mobilenet_v3_small, resnet18, resnet34

import secateurs as sc
from tests.helpers import same_snapshot, snapshot

X = torch.randn(2, 3, 32, 32)


def test_structured_round_trip(tmp_path):
    model = resnet18().eval()
    p = sc.plan(model, X, ratio=0.5)
    small = sc.apply(model, p)
    with torch.no_grad():
        small.fc.weight.mul_(2)  # weights that differ from the base model's: they must come from the file
    sc.save(small, p, tmp_path)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model.safetensors", "plan.json"]
    loaded = sc.load(resnet18().eval(), tmp_path)
    torch.testing.assert_close(loaded.eval()(X), small(X))
    assert loaded.layer1[0].conv1.out_channels == 32


def test_masked_round_trip_keeps_zeros(tmp_path):
    model = resnet18().eval()
    p = sc.plan(model, X, ratio=0.8, granularity="unstructured")
    sparse = sc.apply(model, p, mode="mask")
    sc.save(sparse, p, tmp_path)
    loaded = sc.load(resnet18().eval(), tmp_path)
    torch.testing.assert_close(loaded.eval()(X), sparse(X))
    assert sc.sparsity(loaded).total == pytest.approx(sc.sparsity(sparse).total)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory written by secateurs.save"):
        sc.load(resnet18(), tmp_path)
    model = resnet18().eval()
    p = sc.plan(model, X, ratio=0.5)
    sc.save(sc.apply(model, p), p, tmp_path)
    with pytest.raises(ValueError, match="plan does not fit this model"):
        sc.load(mobilenet_v3_small(), tmp_path)


def _saved(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, groups=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 3, groups=4), nn.GroupNorm(4, 16), nn.Flatten(), nn.LazyLinear(4))
    model(X)
    model.eval()
    p = sc.plan(model, X, ratio=0.5)
    sc.save(sc.apply(model, p), p, tmp_path)
    return model, json.loads((tmp_path / "plan.json").read_text())


@pytest.mark.parametrize("attr", ["stride", "forward", "padding"])
def test_tampered_sync_rejected_on_load(tmp_path, attr):
    model, data = _saved(tmp_path)
    assert data["syncs"], "the plan should sync a size attribute (groups / num_groups)"
    data["syncs"][0]["attr"] = attr
    (tmp_path / "plan.json").write_text(json.dumps(data))
    fresh = copy.deepcopy(model)
    before = snapshot(fresh)
    with pytest.raises(ValueError, match=f"sets '{attr}'.*a plan may only set the size attributes"):
        sc.load(fresh, tmp_path)
    assert same_snapshot(before, snapshot(fresh))


def test_plan_for_resnet18_not_loaded_onto_resnet34(tmp_path):
    model = resnet18().eval()
    p = sc.plan(model, X, ratio=0.5)
    sc.save(sc.apply(model, p), p, tmp_path)
    with pytest.raises(ValueError, match="made for a ResNet with 68 modules.*this model is a ResNet with 116"):
        sc.load(resnet34().eval(), tmp_path)


def test_weights_checked_before_loading(tmp_path):
    model, _ = _saved(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    kept = state["0.weight"].shape[0]  # the saved (pruned) width
    state["0.weight"] = torch.zeros(kept + 1, 3, 3, 3)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=re.escape(f"wrong shapes ['0.weight [{kept + 1}, 3, 3, 3] "
                                                   f"(model: [{kept}, 3, 3, 3])']")):
        sc.load(copy.deepcopy(model), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        sc.load(copy.deepcopy(model), tmp_path)


@pytest.mark.parametrize("directory", [5, ["a"], torch.zeros(1)])
def test_directory_of_the_wrong_type_is_named(directory):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    small = sc.prune(model, torch.randn(1, 4), 0.5)
    with pytest.raises(TypeError, match=r"directory must be a path \(str or os.PathLike\), got"):
        sc.save(small, None, directory)
    with pytest.raises(TypeError, match=r"directory must be a path \(str or os.PathLike\), got"):
        sc.load(model, directory)
