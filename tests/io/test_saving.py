"""save/load: safetensors weights + JSON plan, rebuilt on a fresh model without unpickling anything."""
import pytest
import torch
from torchvision.models import mobilenet_v3_small, resnet18

import secateurs as sc

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
