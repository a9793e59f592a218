"""Quantisation as an axis of the sweep: dense, pruned, int8 and pruned+int8 measured side by side in one Front."""
import os

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("mnist1d")

import secateurs as sc
from secateurs.deploy import OnnxModel
from secateurs.examples import accuracy, data, fit, mnist1d_cnn
from secateurs.search.explore import ONNX_FILE, parse_method


@pytest.fixture(scope="module")
def trained():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    x, y, xt, yt = data.mnist1d()
    dense = fit(mnist1d_cnn(), x, y, epochs=4, lr=3e-3, batch_size=128, seed=0)
    yield dense, x, y, xt[:500], yt[:500]
    torch.set_num_threads(before)


def test_parse_method_int8_suffix():
    assert parse_method("channel/l2/local+int8") == {"granularity": "channel", "criterion": "l2", "scope": "local",
                                                    "quantize": "int8"}
    assert parse_method("dense+int8") == {"granularity": "dense", "quantize": "int8"}
    assert parse_method({"granularity": "dense", "quantize": "int8"}) == {"granularity": "dense", "quantize": "int8"}
    with pytest.raises(ValueError, match="quantize must be one of"):
        parse_method({"granularity": "channel", "criterion": "l2", "scope": "local", "quantize": "int4"})
    with pytest.raises(ValueError, match="'dense\\+int8'"):
        parse_method("dense")  # the dense model is always a candidate; only its quantised twin is asked for
    with pytest.raises(ValueError, match="criterion must be one of"):
        parse_method("channel/nope/local+int8")


def test_four_kinds_side_by_side_and_resumable(trained, tmp_path):
    dense, x, y, xt, yt = trained

    def tune(model, steps):
        return fit(model, x, y, epochs=steps, lr=3e-3, batch_size=128, seed=0)

    kwargs = dict(methods=["channel/l2/local", "channel/l2/local+int8", "dense+int8"], ratios=[0.3], budget=2,
                  finetune=tune, workdir=tmp_path, runs=5, threads=1, quiet=True,
                  plan_kwargs={"batches": [x[i:i + 64] for i in range(0, 256, 64)]})
    front = sc.explore(dense, x[:1], lambda m: accuracy(m, xt, yt), **kwargs)
    by = {c.name: c for c in front.candidates}
    assert by["channel/l2/local@0.3"].quality > by["dense"].quality - 0.1  # fine-tuned back near dense
    assert set(by) == {"dense", "dense+int8", "channel/l2/local@0.3", "channel/l2/local+int8@0.3"}
    for name, fp32 in (("dense+int8", "dense"), ("channel/l2/local+int8@0.3", "channel/l2/local@0.3")):
        q, f = by[name], by[fp32]
        path = os.path.join(tmp_path, q.extra["onnx_path"])
        assert os.path.basename(path) == ONNX_FILE and q.measurement["size_bytes"] == os.path.getsize(path)
        assert q.measurement["runtime"] == "onnxruntime" and f.measurement["runtime"] == "pytorch"
        assert q.measurement["latency"]["median_ms"] > 0
        assert q.measurement["params"] == f.measurement["params"]  # same network, stored in int8
        # the int8 file is smaller than the fp32 weights alone, and quality holds
        assert q.measurement["size_bytes"] < f.measurement["params"] * 4
        assert abs(q.quality - f.quality) < 0.03, (name, q.quality, f.quality)
    assert by["channel/l2/local+int8@0.3"].measurement["size_bytes"] < by["dense+int8"].measurement["size_bytes"]
    table = front.table()
    assert "runtime" in table.splitlines()[0] and "onnxruntime" in table and "pytorch" in table
    assert "the int8 .onnx file for onnxruntime rows" in table
    # the quantised candidate rebuilds as the file it was scored on
    served, _ = front.rebuild(by["channel/l2/local+int8@0.3"])
    assert isinstance(served, OnnxModel) and accuracy(served, xt, yt) == pytest.approx(
        by["channel/l2/local+int8@0.3"].quality)
    # rerun: everything resumes from the workdir, nothing recomputed
    calls = []
    again = sc.explore(dense, x[:1], lambda m: calls.append(1) or accuracy(m, xt, yt), **kwargs)
    assert not calls and {c.name: c.quality for c in again.candidates} == {n: c.quality for n, c in by.items()}
    pick = again.pick(max_drop=1.0, minimize="size", rounds=0)  # any quality: the smallest file
    assert pick.candidate.name == "channel/l2/local+int8@0.3"
    assert "OnnxModel.load" in pick.load_code()
    # re-timing finalists side by side interleaves the onnxruntime files with the PyTorch models
    timed = again.pick(max_drop=1.0, minimize="latency", rounds=3).remeasured
    assert {"dense+int8", "channel/l2/local+int8@0.3"} <= set(timed)
