"""Placement: every step keeps a model on the device and in the dtype it was given.

Run on the CPU in float64 (a tensor made with the default dtype shows up as float32, as one made with the
default device would show up on the CPU), and on CUDA in float32 where a GPU is present: on a GPU machine,
``pytest tests/test_placement.py`` is the device check of pruned, masked, trained, post-trained, saved and
quantised models.
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import secateurs as sc
from tests.helpers import train_with_pruner

SETTINGS = [("cpu", torch.float64)] + ([("cuda", torch.float32)] if torch.cuda.is_available() else [])
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.parametrize("device,dtype", SETTINGS, ids=[f"{d}-{str(t)[6:]}" for d, t in SETTINGS])]


def placed(model: nn.Module) -> set[tuple[str, torch.dtype]]:
    """The (device type, dtype) of every floating parameter and buffer."""
    ts = list(model.parameters()) + list(model.buffers())
    return {(t.device.type, t.dtype) for t in ts if t.is_floating_point()}


def masks_placed(model: nn.Module) -> set[tuple[str, torch.dtype]]:
    """The (device type, dtype) of the masks installed in ``model`` (empty when it has none)."""
    return {(b.device.type, b.dtype) for n, b in model.named_buffers() if n.endswith("mask")}


def resnet(device: str, dtype: torch.dtype, size: int = 32) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval().to(device=device, dtype=dtype)
    return model, torch.randn(2, 3, size, size, device=device, dtype=dtype)


def test_channel_plan_removed_and_masked(device, dtype):
    model, x = resnet(device, dtype)
    plan = sc.plan(model, x, 0.5)
    small = sc.apply(model, plan)
    masked = sc.apply(model, plan, mode="mask")
    assert placed(small) == placed(masked) == {(device, dtype)}
    assert masks_placed(masked) == {(device, torch.bool)}
    with torch.no_grad():
        y, ym = small(x), masked(x)
    assert (y.device.type, y.dtype) == (device, dtype)
    torch.testing.assert_close(ym, y, rtol=1e-4, atol=1e-4)
    assert placed(sc.finalize(masked)) == {(device, dtype)}


def test_pruner_training_steps(device, dtype):
    model, x = resnet(device, dtype, size=16)
    model.train()
    pr = sc.Pruner(model, x, sc.OneShot(step=2, sparsity=0.5))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    train_with_pruner(model, x, pr, opt, 3)
    assert pr.sparsity == pytest.approx(0.5, abs=0.01)
    assert placed(model) == {(device, dtype)}
    assert masks_placed(model) == {(device, torch.bool)}  # the installed masks (pr.masks: CPU copies)
    assert placed(pr.finalize()) == {(device, dtype)}


def test_posttrain_and_recalibrate(device, dtype):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    lm = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2,
                                                              n_positions=16)).eval().to(device=device, dtype=dtype)
    cal = [{"input_ids": torch.randint(0, 64, (4, 16), device=device)} for _ in range(2)]
    for method in ("wanda", "sparsegpt"):
        pruned, _ = sc.posttrain.prune(lm, cal, method, 0.5, progress=False)
        assert placed(pruned) == {(device, dtype)}, method
        with torch.no_grad():
            logits = pruned(**cal[0]).logits
        assert (logits.device.type, logits.dtype) == (device, dtype) and torch.isfinite(logits).all()
    model, x = resnet(device, dtype, size=16)
    small = sc.prune(model, x, 0.5)
    assert placed(sc.posttrain.recalibrate(small, [x, x])) == {(device, dtype)}


def test_save_and_load_onto_the_models_device(device, dtype, tmp_path):
    model, x = resnet(device, dtype)
    plan = sc.plan(model, x, 0.5)
    small = sc.apply(model, plan)
    sc.save(small, plan, tmp_path)
    base, _ = resnet(device, dtype)
    loaded = sc.load(base, tmp_path)
    assert placed(loaded) == {(device, dtype)}
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), small(x))


def test_measure_and_quantize(device, dtype):
    model, x = resnet(device, dtype)
    small = sc.prune(model, x, 0.5)
    m = sc.measure(small, x, runs=3, warmup=1)
    assert m.latency.median_ms > 0 and m.params < sc.measure(model, x, latency=False).params
    if dtype != torch.float32:
        return  # int8 calibration reads float32 activations (an ONNX model of the float32 network)
    q = sc.quantize(small, x, [x])  # an ONNX Runtime model: it runs on the CPU whatever the network's device
    assert q(x.cpu()).shape == (2, 10)
