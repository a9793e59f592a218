"""Latency tables: layers found with their traced input shapes, timed, cached on disk, interpolated."""
import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from secateurs.measure.staircase import LatencyTable, LayerSpec, cache_dir, interpolate, layer_specs, staircase_widths


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, groups=16),
                         nn.Flatten(1), nn.Linear(16 * 6 * 6, 10))


def test_layer_specs_record_traced_shapes_and_leave_model_alone():
    model = _net().train()
    specs = layer_specs(model, torch.randn(2, 3, 8, 8))
    assert set(specs) == {"0", "1", "2", "4"}  # the ReLU too: activations are memory-bound work
    assert specs["0"].input_shape == (2, 3, 8, 8) and specs["0"].kernel == (3, 3) and specs["0"].padding == (1, 1)
    assert specs["2"].depthwise and specs["2"].input_shape == (2, 16, 8, 8)
    assert specs["4"].kind == "Linear" and specs["4"].input_shape == (2, 576)
    assert model.training and not model[0]._forward_pre_hooks


def test_depthwise_moves_both_sides_and_build_runs():
    spec = layer_specs(_net(), torch.randn(1, 3, 8, 8))["2"]
    narrow = spec.at("out", 8)
    assert (narrow.in_ch, narrow.out_ch, narrow.groups) == (8, 8, 8)
    layer, x = narrow.build(torch.device("cpu"))
    assert layer(x).shape == (1, 8, 6, 6)
    assert spec.at("in", 8).key() == narrow.key()


def test_table_caches_on_disk_by_machine_threads_batch_and_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path))
    spec = layer_specs(_net(), torch.randn(1, 3, 8, 8))["0"]
    table = LatencyTable(4, threads=1, samples=2, progress=False)
    curve = table.curve(spec, "out", [8, 16, 4])
    assert sorted(curve) == [4, 8, 16] and all(t > 0 for t in curve.values()) and table.measured == 3
    assert table.path.parent == cache_dir() == tmp_path / "latency"
    assert all(part in table.key for part in ("t1", "b4", torch.__version__))
    data = json.loads(table.path.read_text())
    assert len(data["ms"]) == 3 and all("x=4,3,8,8" in k for k in data["ms"])  # timed at the table's batch
    again = LatencyTable(4, threads=1, progress=False)
    assert again.curve(spec, "out", [4, 8, 16]) == curve and again.measured == 0
    assert LatencyTable(2, threads=1, progress=False).entries == {}  # another batch size: another table


def test_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path))
    table = LatencyTable(1, progress=False)
    table.path.parent.mkdir(parents=True)
    table.path.write_text("{not json")
    assert LatencyTable(1, progress=False).entries == {}


@pytest.mark.parametrize("kwargs", [dict(batch_size=0), dict(batch_size=1, threads=0), dict(batch_size=1, samples=0),
                                    dict(batch_size=True)])
def test_bad_table_arguments(kwargs):
    with pytest.raises(ValueError, match="must be an integer"):
        LatencyTable(**kwargs)


def test_bad_curve_arguments():
    spec = LayerSpec("Linear", 4, 4, (1, 4))
    table = LatencyTable(1, persist=False, progress=False)
    with pytest.raises(ValueError, match="role"):
        table.curve(spec, "side", [1])
    with pytest.raises(ValueError, match="widths"):
        table.curve(spec, "out", [0, 2])


def test_interpolate_is_exact_at_points_linear_between_clamped_outside():
    pts = {8: 1.0, 16: 3.0}
    assert interpolate(pts, 8) == 1.0 and interpolate(pts, 12) == 2.0
    assert interpolate(pts, 2) == 1.0 and interpolate(pts, 40) == 3.0
    with pytest.raises(ValueError):
        interpolate({}, 3)


@given(st.integers(1, 4096), st.integers(1, 4096))
def test_staircase_widths_near_the_asked_width(size, around):
    around = min(around, size)
    ws = staircase_widths(size, around)
    assert around in ws and all(1 <= w <= size for w in ws)
    assert all(w in (around, size) or w % 8 == 0 for w in ws)
    assert all(around * 0.75 - 1 <= w <= around * 1.25 + 1 for w in ws)
    sweep = staircase_widths(size)
    assert sweep[0] == 1 and sweep[-1] == size and len(sweep) <= 14


def test_batchnorm_is_timed_per_channel_in_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.BatchNorm2d(16, track_running_stats=False))
    specs = layer_specs(model, torch.randn(2, 3, 8, 8))
    assert set(specs) == {"0", "1"}  # a BatchNorm without running statistics normalises by the batch: not timed
    bn = specs["1"]
    assert bn.kind == "BatchNorm2d" and bn.per_channel and not bn.depthwise and bn.input_shape == (2, 16, 6, 6)
    narrow = bn.at("out", 8)
    assert (narrow.in_ch, narrow.out_ch) == (8, 8) and bn.at("in", 8).key() == narrow.key()
    layer, x = narrow.build(torch.device("cpu"))
    assert not layer.training and layer(x).shape == (2, 8, 6, 6)
    assert not specs["0"].per_channel


def test_predict_needs_a_timed_layer():
    with pytest.raises(ValueError, match="no Conv1d/Conv2d/Linear/BatchNorm layer, activation or pooling module"):
        LatencyTable(1, persist=False, progress=False).predict(nn.Sequential(nn.Flatten()), torch.randn(1, 4))


def test_activations_are_timed_out_of_place_on_their_traced_shape():
    """A ReLU6 or SiLU after a conv is memory-bound like a BatchNorm: timed per channel, never in place."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU6(inplace=True), nn.Flatten(1), nn.Linear(16 * 36, 8),
                          nn.SiLU(), nn.Identity())
    specs = layer_specs(model, torch.randn(2, 3, 8, 8))
    assert set(specs) == {"0", "1", "3", "4"}
    act = specs["1"]
    assert act.kind == "ReLU6" and act.per_channel and act.input_shape == (2, 16, 6, 6)
    assert specs["4"].kind == "SiLU" and specs["4"].input_shape == (2, 8)
    narrow = act.at("out", 8)
    layer, x = narrow.build(torch.device("cpu"))
    assert type(layer) is nn.ReLU6 and not layer.inplace
    assert layer(x).shape == (2, 8, 6, 6)
    assert layer_specs(nn.Sequential(nn.ReLU()), torch.randn(4)) == {}  # no batch and channel dims


def test_pools_are_timed_per_channel_with_their_own_options():
    """resnet's stem max-pool is memory-bound work on the stem's channels: timed like an activation, rebuilt
    with its kernel, stride and padding (and an adaptive pool with its output size)."""
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18().eval()
    specs = layer_specs(model, torch.randn(2, 3, 64, 64))
    pool, head = specs["maxpool"], specs["avgpool"]
    assert pool.kind == "MaxPool2d" and pool.per_channel and pool.input_shape == (2, 64, 32, 32)
    assert dict(pool.options) == {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": 1,
                                  "return_indices": False, "ceil_mode": False}
    layer, x = pool.at("out", 24).build(torch.device("cpu"))
    assert type(layer) is nn.MaxPool2d and layer(x).shape == (2, 24, 16, 16)
    assert dict(head.options) == {"output_size": (1, 1)}
    assert head.at("out", 100).build(torch.device("cpu"))[0](torch.randn(2, 100, 2, 2)).shape == (2, 100, 1, 1)
    # options are part of the key: pools of another kernel are other table entries
    assert pool.key() != layer_specs(nn.Sequential(nn.MaxPool2d(2)), torch.randn(2, 64, 32, 32))["0"].key()
    # a list option (kept as given by the module) is a tuple in the spec: hashable, the same key as the tuple form
    listed = layer_specs(nn.Sequential(nn.AdaptiveAvgPool2d([1, 1])), torch.randn(2, 512, 2, 2))["0"]
    assert hash(listed) == hash(head) and listed.key() == head.key()
    # an unbatched input has its channels at dim 0: not timed rather than timed wrong
    assert layer_specs(nn.Sequential(nn.MaxPool2d(2)), torch.randn(3, 8, 8)) == {}
    gelu = layer_specs(nn.Sequential(nn.Linear(4, 8), nn.GELU(approximate="tanh")), torch.randn(2, 4))["1"]
    assert gelu.build(torch.device("cpu"))[0].approximate == "tanh"


def test_predict_counts_the_pool():
    table = LatencyTable(1, persist=False, progress=False)
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1))
    pooled = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(3, 1, 1))
    x = torch.randn(1, 3, 32, 32)
    assert table.predict(pooled, x) > table.predict(conv, x)
    assert len(table.entries) == 2  # the conv once, the pool once
