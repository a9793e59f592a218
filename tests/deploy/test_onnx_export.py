"""export_onnx: pruned, masked and Hugging Face models run in onnxruntime as they do in PyTorch."""
import os

import onnx
import pytest
import torch
import torchvision
import transformers as T
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
from tests.helpers import outputs

pytestmark = pytest.mark.usefixtures("one_thread")


def small_vit():
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                hidden_dim=64, mlp_dim=128)


ZOO = {  # low resolution: the exporter and onnxruntime do the same work at any size
    "resnet18": (lambda: torchvision.models.resnet18(), 64),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(), 64),
    "shufflenet_v2_x0_5": (lambda: torchvision.models.shufflenet_v2_x0_5(), 64),
    "vit": (small_vit, 32),
}


@pytest.mark.parametrize("name", ZOO)
def test_pruned_zoo_matches_pytorch(name, tmp_path):
    make, side = ZOO[name]
    model = make().eval()
    x = torch.randn(2, 3, side, side)
    small = sc.prune(model, x, ratio=0.3, granularity="head" if name == "vit" else "channel")
    path = tmp_path / "m.onnx"
    exported = sc.export_onnx(small, x, path)  # verifies at batch 2 and 6 inside
    assert path.is_file() and path.stat().st_size == exported.nbytes
    x5 = torch.randn(5, 3, side, side)  # dynamic batch: a size never seen at export
    torch.testing.assert_close(exported(x5), outputs(small, x5)[0], atol=1e-4, rtol=1e-4)
    assert [f.name for f in tmp_path.iterdir()] == ["m.onnx"]  # no temporary left behind


def test_masked_model_is_baked_and_left_untouched(tmp_path):
    model = torchvision.models.mobilenet_v3_small().eval()
    x = torch.randn(2, 3, 64, 64)
    masked = sc.prune(model, x, ratio=0.6, granularity="unstructured")
    before = {k: v.clone() for k, v in masked.state_dict().items()}
    exported = sc.export_onnx(masked, x, tmp_path / "m.onnx")
    torch.testing.assert_close(exported(x), outputs(masked, x)[0], atol=1e-4, rtol=1e-4)
    assert torch.nn.utils.parametrize.is_parametrized(masked.classifier[0])  # still masked: the copy was baked
    after = masked.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(tmp_path / "m.onnx").graph.initializer}
    zeros = sum(int((w == 0).sum()) for w in weights.values() if w.ndim >= 2)
    assert zeros >= 0.5 * sum(w.size for w in weights.values() if w.ndim >= 2)


def test_structured_masks_export_like_surgery(tmp_path):
    model = torchvision.models.mobilenet_v3_small().eval()
    x = torch.randn(2, 3, 64, 64)
    p = sc.plan(model, x, ratio=0.4)
    exported = sc.export_onnx(sc.apply(model, p, mode="mask"), x, tmp_path / "m.onnx")
    torch.testing.assert_close(exported(x), outputs(sc.apply(model, p), x)[0], atol=1e-4, rtol=1e-4)


def test_pruned_bert_keyword_inputs(tmp_path):
    model = T.BertForSequenceClassification(T.BertConfig(
        hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, vocab_size=120)).eval()
    x = {"input_ids": torch.randint(0, 120, (2, 9)), "attention_mask": torch.ones(2, 9, dtype=torch.long)}
    small = sc.prune(model, x, ratio=0.25, granularity="head")
    exported = sc.export_onnx(small, x, tmp_path / "bert.onnx")
    assert exported.input_names == ["input_ids", "attention_mask"]
    x3 = {"input_ids": torch.randint(0, 120, (3, 9)), "attention_mask": torch.ones(3, 9, dtype=torch.long)}
    with torch.no_grad():
        torch.testing.assert_close(exported(**x3), small(**x3).logits, atol=1e-4, rtol=1e-4)


def test_dynamo_exporter(tmp_path):
    model = nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 38, 4)).eval()
    x = torch.randn(2, 1, 40)
    exported = sc.export_onnx(sc.prune(model, x, ratio=0.5), x, tmp_path / "m.onnx", dynamo=True)
    assert exported(torch.randn(4, 1, 40)).shape == (4, 4)


class Inverse(nn.Module):
    def forward(self, x):
        return torch.linalg.inv(x)


def test_unsupported_op_names_module_and_op(tmp_path):
    model = nn.Sequential(nn.Identity(), nn.Sequential(nn.Identity(), Inverse()))
    with pytest.raises(ValueError, match=r"module '1\.1' \(Inverse\) runs aten::linalg_inv"):
        sc.export_onnx(model, torch.randn(2, 4, 4), tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


class Drift(nn.Module):
    """Different in onnxruntime than in PyTorch: reads a Python counter the export freezes."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * self.calls


def test_mismatch_is_an_error_and_nothing_is_written(tmp_path):
    with pytest.raises(ValueError, match="onnxruntime differs from PyTorch"):
        sc.export_onnx(Drift(), torch.ones(2, 3), tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("kwargs,match", [
    ({"opset": 9}, "opset must be an integer in 13..20"),
    ({"opset": 17, "dynamo": True}, r"opset \(with dynamo=True\) must be an integer in 18..20"),
    ({"dynamic_batch": "yes"}, "dynamic_batch must be True or False"),
])
def test_bad_arguments(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        sc.export_onnx(nn.Linear(3, 2), torch.randn(2, 3), tmp_path / "m.onnx", **kwargs)


def test_bad_inputs(tmp_path):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        sc.export_onnx("resnet", torch.randn(2, 3), tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="input 'mask' is a NoneType"):
        sc.export_onnx(nn.Linear(3, 2), {"x": torch.randn(2, 3), "mask": None}, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="is a directory"):
        sc.export_onnx(nn.Linear(3, 2), torch.randn(2, 3), tmp_path)


@settings(max_examples=8, deadline=None)
@given(hidden=st.integers(2, 24), ratio=st.sampled_from([0.0, 0.25, 0.5, 0.75]), batch=st.integers(1, 5),
       unstructured=st.booleans())
def test_any_pruned_mlp_exports_exactly(tmp_path_factory, hidden, ratio, batch, unstructured):
    torch.manual_seed(hidden)
    model = nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Linear(hidden, 3)).eval()
    x = torch.randn(batch, 6)
    pruned = sc.prune(model, x, ratio=ratio, granularity="unstructured" if unstructured else "channel")
    exported = sc.export_onnx(pruned, x, tmp_path_factory.mktemp("mlp") / "m.onnx")
    x7 = torch.randn(7, 6)
    torch.testing.assert_close(exported(x7), outputs(pruned, x7)[0], atol=1e-5, rtol=1e-5)
