"""A small deterministic CPU trainer, evaluation, and data helpers for data-driven criteria.

``fit`` trains with AdamW and a per-step cosine learning-rate schedule; with the same seed, data,
model and thread count it gives bit-identical weights. It works unchanged on models masked by
``sc.apply(..., mode="mask")`` (masks are parametrizations, so pruned weights stay exactly zero)
and on models pruned with ``torch.nn.utils.prune``.

``fit_cached`` memoises ``fit`` in ``~/.cache/secateurs/examples`` (``SECATEURS_CACHE`` overrides
the folder) as safetensors files, keyed by model name, seed and epochs plus a digest of everything
else that determines the result (initial weights, data, hyper-parameters).
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

Batch = tuple[torch.Tensor, torch.Tensor]


def xent_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of ``model`` on ``batch = (x, y)``: a ``loss_fn`` for ``sc.plan``."""
    x, y = batch
    return F.cross_entropy(model(x), y)


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int = 128, n: int = 4, seed: int = 0) -> list[Batch]:
    """``n`` batches of ``batch_size`` samples drawn without replacement (seeded): ``batches=`` for ``sc.plan``.

    A list, so a criterion may iterate it more than once. ``n * batch_size`` is capped at ``len(x)``
    (the last batch may then be smaller).
    """
    _check_xy(x, y)
    if batch_size < 1 or n < 1:
        raise ValueError(f"batch_size and n must be positive, got {batch_size} and {n}")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[: n * batch_size]
    return [(x[i], y[i]) for i in order.split(batch_size)]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (in eval mode; its mode is restored) on ``(x, y)``, in [0, 1]."""
    _check_xy(x, y)
    was_training = model.training
    model.eval()
    try:
        correct = sum(int((model(xb).argmax(-1) == yb).sum())
                      for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    finally:
        model.train(was_training)
    return correct / len(y)
def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 10, lr: float = 1e-3,
        batch_size: int = 128, seed: int = 0, weight_decay: float = 1e-2, progress: bool = False) -> nn.Module:
    """Train ``model`` in place on ``(x, y)`` with cross-entropy and return it (in eval mode).

    ``progress`` shows a tqdm bar over the epochs (with the last batch's loss).

    AdamW (``lr``, ``weight_decay``) with a cosine schedule from ``lr`` to 0 over all steps, updated
    every step; each epoch visits the data in a fresh permutation drawn from ``seed``, and the last
    partial batch is kept. Everything random (permutations, dropout) comes from ``seed``, and the
    global RNG state is restored afterwards.
    """
    _check_xy(x, y)
    if epochs < 0 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 0, batch_size >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
    params = [p for p in model.parameters() if p.requires_grad]
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = max(1, epochs * steps_per_epoch)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        bar = tqdm(range(epochs), desc="train", unit="epoch", disable=not progress)
        for _ in bar:
            for idx in torch.randperm(len(x), generator=g).split(batch_size):
                loss = xent_loss(model, (x[idx], y[idx]))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return model


def cache_dir() -> Path:
    """Where ``fit_cached`` keeps weights: ``$SECATEURS_CACHE`` or ``~/.cache/secateurs/examples``."""
    env = os.environ.get("SECATEURS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "secateurs" / "examples"


def fit_cached(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 10,
               lr: float = 1e-3, batch_size: int = 128, seed: int = 0, weight_decay: float = 1e-2,
               cache: bool = True, progress: bool = False) -> nn.Module:
    """``fit`` with the trained weights cached as ``<cache_dir>/<name>-seed<seed>-ep<epochs>-<digest>.safetensors``.

    The digest covers the initial state dict, the data and the other hyper-parameters, so any change
    trains afresh. A cached entry is loaded into ``model`` (strictly, in place) and no training runs.
    Files are written atomically; nothing is pickled.
    """
    from safetensors.torch import load_file, save_file

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    for t in (x, y):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(repr((type(model).__name__, lr, batch_size, weight_decay)).encode())
    path = cache_dir() / f"{name}-seed{seed}-ep{epochs}-{h.hexdigest()[:12]}.safetensors"
    if cache and path.is_file():
        model.load_state_dict(load_file(str(path)), strict=True)
        return model.eval()
    fit(model, x, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, weight_decay=weight_decay,
        progress=progress)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
        os.replace(tmp, path)
    return model


def _check_xy(x: Any, y: Any) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")
