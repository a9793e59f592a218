"""Compressed files (bitmask + nonzero values): exact round trips, sizes that match measure, bad files refused."""
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
from secateurs.examples.models import lenet_300_100, mnist1d_cnn
from secateurs.io import compressed as C
from tests.helpers import outputs

X = torch.rand(4, 784)


@pytest.fixture(scope="module")
def sparse():
    return sc.prune(lenet_300_100().eval(), X, ratio=0.8, granularity="unstructured")


def test_round_trip_is_exact_and_size_matches_measure(sparse, tmp_path):
    sc.save(sparse, tmp_path, compressed=True)  # the plan comes with the model sc.prune made
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model.compressed.safetensors", "plan.json"]
    loaded = sc.load(lenet_300_100().eval(), tmp_path)
    for a, b in zip(outputs(loaded, X), outputs(sparse, X)):
        assert torch.equal(a, b)
    sc.save(loaded, tmp_path / "again", compressed=True)  # a loaded model carries its plan too
    again, first = C.decode(tmp_path / "again" / C.FILE), C.decode(tmp_path / C.FILE)
    assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in first)
    expected = sc.measure(sparse, X, latency=False).compressed_bytes["bitmask+fp32"]
    on_disk = (tmp_path / "model.compressed.safetensors").stat().st_size
    assert abs(on_disk - expected) <= 0.01 * expected
    dense = sc.measure(sparse, X, latency=False).dense_bytes
    assert on_disk < 0.25 * dense  # 80% zeros: a fifth of the values plus 1 bit per weight


def test_conv_net_with_buffers_round_trips_exactly(tmp_path):
    x = torch.randn(3, 1, 40)
    model = mnist1d_cnn().eval()
    with torch.no_grad():
        model.bn2.running_mean.uniform_(-1, 1)  # buffers are stored too
    p = sc.plan(model, x, ratio=0.6, granularity="2:4")
    sparse = sc.apply(model, p, mode="mask")
    sc.save(sparse, p, tmp_path, compressed=True)
    loaded = sc.load(mnist1d_cnn().eval(), tmp_path)
    assert torch.equal(outputs(loaded, x)[0], outputs(sparse, x)[0])
    assert torch.equal(loaded.bn2.running_mean, model.bn2.running_mean)


def test_fp16_values(tmp_path):
    sparse = sc.prune(lenet_300_100().eval(), X, ratio=0.5, granularity="unstructured")  # header < 1% of payload
    sc.save(sparse, tmp_path, compressed="bitmask+fp16")
    loaded = sc.load(lenet_300_100().eval(), tmp_path)
    torch.testing.assert_close(outputs(loaded, X)[0], outputs(sparse, X)[0], atol=2e-2, rtol=2e-2)
    expected = sc.measure(sparse, X, latency=False).compressed_bytes["bitmask+fp16"]
    assert abs((tmp_path / C.FILE).stat().st_size - expected) <= 0.01 * expected
    assert sc.sparsity(loaded).total == pytest.approx(sc.sparsity(sparse).total)


def test_switching_format_leaves_one_weights_file(sparse, tmp_path):
    sc.save(sparse, tmp_path, compressed=True)
    sc.save(sparse, tmp_path)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model.safetensors", "plan.json"]


def _saved(sparse, tmp_path):
    sc.save(sparse, tmp_path, compressed=True)
    return tmp_path / C.FILE


def test_truncated_file_is_refused(sparse, tmp_path):
    path = _saved(sparse, tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        sc.load(lenet_300_100(), tmp_path)


def test_tampered_values_are_refused(sparse, tmp_path):
    path = _saved(sparse, tmp_path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # one byte of the last tensor's data
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="fails its checksum"):
        sc.load(lenet_300_100(), tmp_path)


def test_wrong_format_and_version_are_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "x"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not a secateurs compressed file"):
        C.decode(tmp_path / "x")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "y"), metadata={"format": C.FORMAT, "version": "99"})
    with pytest.raises(ValueError, match="version '99'; this secateurs reads version 1"):
        C.decode(tmp_path / "y")


def test_save_argument_errors(sparse, tmp_path):
    with pytest.raises(ValueError, match="compressed must be True, False or one of"):
        sc.save(sparse, tmp_path, compressed="zip")
    plain = lenet_300_100()
    with pytest.raises(ValueError, match="model carries no plan"):
        sc.save(plain, tmp_path)
    with pytest.raises(TypeError, match="save needs a directory"):
        sc.save(sparse)
    assert not os.listdir(tmp_path)


def test_pruned_twice_carries_no_plan():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(2, 8)
    once = sc.prune(model, x, ratio=0.5)
    assert once._secateurs_prune_plan is not None
    assert sc.prune(once, x, ratio=0.5)._secateurs_prune_plan is None


@settings(max_examples=25, deadline=None)
@given(values=st.lists(st.floats(-3, 3, width=32), min_size=1, max_size=40), zero_every=st.integers(0, 3))
def test_encode_decode_any_tensor(tmp_path_factory, values, zero_every):
    w = torch.tensor(values)
    if zero_every:
        w[::zero_every + 1] = 0
    model = nn.Linear(len(values), 1)
    with torch.no_grad():
        model.weight.copy_(w.view(1, -1))
    path = tmp_path_factory.mktemp("enc") / "m.safetensors"
    path.write_bytes(C.encode(model, "bitmask+fp32"))
    state = C.decode(path)
    assert torch.equal(state["weight"], model.weight.detach()) and torch.equal(state["bias"], model.bias.detach())


def test_failed_save_replaces_nothing(sparse, tmp_path, monkeypatch):
    sc.save(sparse, tmp_path, compressed=True)
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    real_open = open

    def full_disk(path, mode="r", *args, **kwargs):
        if "w" in mode and str(path).endswith(f"plan.json.tmp{os.getpid()}"):
            raise OSError(28, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk)
    with pytest.raises(OSError, match="No space left"):
        sc.save(sc.prune(lenet_300_100().eval(), X, ratio=0.3, granularity="unstructured"), tmp_path, compressed=True)
    monkeypatch.undo()
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before
