"""compare: dense, pruned, int8 and pruned+int8 measured the same way, with the user's evaluate function."""
import pytest
import torch

import secateurs as sc
from secateurs.deploy import compare, table
from secateurs.examples.models import mnist1d_cnn
from secateurs.examples.train import accuracy, fit
from tests.deploy.test_quantize import _task


def test_four_variants_side_by_side(one_thread):
    x, y = _task()
    model = fit(mnist1d_cnn(channels=32, num_classes=4), x[:384], y[:384], epochs=3, lr=3e-3)
    pruned = fit(sc.prune(model, x[:8], ratio=0.5), x[:384], y[:384], epochs=2, lr=3e-3)
    variants = compare(model, pruned, x[:8], lambda m: accuracy(m, x[384:], y[384:]), calibration=x[:128],
                       warmup=1, runs=3)
    assert [v.name for v in variants] == ["dense fp32", "pruned fp32", "int8", "pruned+int8"]
    dense, small, q, small_q = variants
    assert dense.quality == accuracy(model, x[384:], y[384:]) and dense.quality > 0.9
    assert small_q.file_bytes < small.file_bytes < dense.file_bytes and q.file_bytes < dense.file_bytes
    assert abs(small_q.quality - small.quality) <= 0.03
    assert q.torch_latency is None and dense.torch_latency.runs == 3 and small_q.onnx_latency.batch_size == 8
    assert "int8 static" in small_q.description
    text = table(variants, quality="accuracy")
    assert text.count("\n") == 5 and "| pruned+int8 |" in text


def test_bad_evaluate():
    with pytest.raises(TypeError, match="evaluate must be a callable"):
        compare(mnist1d_cnn(), mnist1d_cnn(), torch.randn(2, 1, 40), evaluate="accuracy")
