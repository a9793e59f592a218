"""quantize: int8 models in onnxruntime that stay close to fp32, are smaller, and evaluate like modules."""
import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.examples.models import mnist1d_cnn
from secateurs.examples.text import text_classifier
from secateurs.examples.train import accuracy, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def _task(seed=0, n=512):
    """A learnable 1-D signal task: class = which quarter of the signal carries a bump."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.3 * torch.randn(n, 1, 40, generator=g)
    for i, c in enumerate(y.tolist()):
        x[i, 0, 10 * c:10 * c + 10] += 1.0
    return x, y


def test_static_int8_cnn_keeps_accuracy_and_shrinks(tmp_path):
    x, y = _task()
    model = fit(mnist1d_cnn(channels=32, num_classes=4), x[:384], y[:384], epochs=3, lr=3e-3)
    small = fit(sc.prune(model, x[:8], ratio=0.3), x[:384], y[:384], epochs=2, lr=3e-3)  # pruned, recovered
    q = sc.quantize(small, x[:8], calibration=x[:128])
    assert "int8 static" in q.description and q.unquantized == []
    fp32 = sc.export_onnx(small, x[:8], tmp_path / "fp32.onnx")
    assert q.nbytes < 0.5 * fp32.nbytes
    assert abs(accuracy(q, x[384:], y[384:]) - accuracy(small, x[384:], y[384:])) <= 0.02
    assert accuracy(small, x[384:], y[384:]) > 0.9  # the task was learnt: the comparison means something
    assert sc.export_onnx(q, x[:8], tmp_path / "int8.onnx") is q  # a quantised model exports as it is
    again = sc.OnnxModel.load(tmp_path / "int8.onnx")
    torch.testing.assert_close(again(x[:4]), q(x[:4]))
    assert (tmp_path / "int8.onnx").stat().st_size == q.nbytes


def test_dynamic_int8_text_model_quantises_embedding_and_linear():
    model = text_classifier().eval()
    ids = torch.randint(0, 2500, (64, 12))
    q = sc.quantize(model, ids)
    assert "int8 dynamic" in q.description and q.unquantized == []
    fp32_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert q.nbytes < 0.3 * fp32_bytes
    with torch.no_grad():
        ref = model(ids)
    centred = lambda t: (t - t.mean(0)).flatten()  # noqa: E731 - what varies between reviews
    assert torch.cosine_similarity(centred(q(ids)), centred(ref), dim=0) > 0.95


def test_calibration_batches_as_list_of_dicts():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 4), nn.Linear(6, 4)

        def forward(self, left, right):
            return self.a(left) + self.b(right)

    model = Two().eval()
    example = {"left": torch.randn(2, 6), "right": torch.randn(2, 6)}
    batches = [{"left": torch.randn(64, 6), "right": torch.randn(64, 6)} for _ in range(3)]
    q = sc.quantize(model, example, calibration=batches)
    assert "3 calibration batches" in q.description
    with torch.no_grad():
        ref = model(**batches[0])
    assert (q(**batches[0]) - ref).abs().max() < 0.05 * ref.abs().max()


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(32, 64, batch_first=True)

    def forward(self, x):
        return self.rnn(x)[0]


def test_float_weights_left_behind_are_named():
    x = torch.randn(2, 5, 32)  # onnxruntime has no int8 GRU kernel: its weights stay float
    with pytest.warns(UserWarning, match=r"left 1 weight tensors in float.*/rnn/GRU \(GRU\)"):
        q = sc.quantize(Recurrent().eval(), x, calibration=torch.randn(16, 5, 32))
    assert q.unquantized == ["/rnn/GRU (GRU)"]


def test_bad_arguments():
    model, x = nn.Linear(3, 2), torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"backend must be one of \['onnxruntime'\], got 'torchao'"):
        sc.quantize(model, x, backend="torchao")
    with pytest.raises(TypeError, match="calibration must be a tensor of inputs or an iterable"):
        sc.quantize(model, x, calibration=3)
    with pytest.raises(ValueError, match="calibration holds no batches"):
        sc.quantize(model, x, calibration=[])
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        sc.quantize(model, x, calibration=x, batch_size=0)


def test_onnx_model_is_inference_only():
    q = sc.quantize(nn.Linear(3, 2), torch.randn(2, 3))
    assert q.eval() is q
    with pytest.raises(ValueError, match="runs inference only"):
        q.train()
    with pytest.raises(ValueError, match="takes 1 input tensors"):
        q(torch.randn(2, 3), torch.randn(2, 3))


def test_runtime_errors_are_value_errors(tmp_path):
    q = sc.quantize(nn.Linear(3, 2), torch.randn(2, 3))
    with pytest.raises(ValueError, match="onnxruntime failed"):
        q(torch.ones(2, 3, dtype=torch.int64))  # the graph takes float
    with pytest.raises(ValueError, match="onnxruntime cannot load this model"):
        sc.OnnxModel(q.model_bytes[: q.nbytes // 2])
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        sc.OnnxModel(q.model_bytes, threads=0)


def test_compact_graph_shrinks_the_file_and_keeps_outputs():
    x, _ = _task(n=64)
    model = mnist1d_cnn(channels=16, num_classes=4).eval()
    named = sc.quantize(model, x[:1], calibration=x, compact=False)
    compact = sc.quantize(model, x[:1], calibration=x)
    assert compact.nbytes < 0.8 * named.nbytes  # names are a large share of a small model's file
    assert compact.input_names == named.input_names
    assert torch.equal(compact(x), named(x))
    with pytest.raises(ValueError, match="compact must be True or False"):
        sc.quantize(model, x[:1], compact="yes")
