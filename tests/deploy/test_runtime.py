"""measure(..., runtime="onnxruntime"): onnxruntime latency beside PyTorch's, on a real model."""
import pytest
import torch

import secateurs as sc
from secateurs.examples.models import mnist1d_cnn


def test_measure_reports_onnxruntime_latency(one_thread):
    model = mnist1d_cnn().eval()
    x = torch.randn(4, 1, 40)
    m = sc.measure(model, x, runtime="onnxruntime", threads=1, warmup=1, runs=5)
    assert m.latency is not None and m.onnx_latency is not None
    assert m.onnx_latency.runs == 5 and m.onnx_latency.batch_size == 4 and m.onnx_latency.threads == 1
    assert 0 < m.onnx_latency.p10_ms <= m.onnx_latency.median_ms <= m.onnx_latency.p90_ms
    assert "onnxruntime  median" in str(m)
    assert m.to_dict()["onnx_latency"]["runs"] == 5
    plain = sc.measure(model, x, latency=False)
    assert plain.onnx_latency is None and "onnxruntime" not in str(plain)
    assert (plain.params, plain.macs) == (m.params, m.macs)


def test_measure_runtime_errors():
    model, x = mnist1d_cnn(), torch.randn(2, 1, 40)
    with pytest.raises(ValueError, match=r"runtime must be one of \['torch', 'onnxruntime'\], got 'tvm'"):
        sc.measure(model, x, runtime="tvm")
    with pytest.raises(ValueError, match="needs latency=True"):
        sc.measure(model, x, runtime="onnxruntime", latency=False)
