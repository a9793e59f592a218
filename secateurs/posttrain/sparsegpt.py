"""SparseGPT (Frantar & Alistarh 2023): prune a layer and update its remaining weights to reconstruct
its outputs, using the inverse Hessian of its inputs (optimal brain surgeon, column by column).

Columns are processed in blocks of ``blocksize``: the mask of a block is chosen from
w^2 / [H^-1]_jj^2 (unstructured: the lowest ``sparsity`` fraction of the block; N:M: per group of M
columns), each pruned column's error is spread over the later columns of the block, and the block's
accumulated error updates the rest of the matrix at once (lazy batched updates).
"""
from __future__ import annotations

import warnings

import torch

from .calibration import all_finite, keep_count

MAX_DAMP = 1e3  # relative to the mean diagonal: beyond this the "Hessian" carries no information


def inverse_cholesky(h: torch.Tensor, damp: float, layer: str) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, written over ``h`` (float32, returned);
    more dampening while it fails.

    In float64 for safety, in one n x n buffer: each step overwrites it (``out=``), through its transpose
    (``.mT``, the column-major layout LAPACK works in, so torch makes no temporary copy; H is symmetric):
    H = U^T U with U = L^T; (U^T U)^-1; its lower factor, whose transpose is the upper one wanted."""
    mean_diag = float(torch.diag(h).mean()) or 1.0
    d = damp
    hd = torch.empty(h.shape, dtype=torch.float64, device=h.device)
    info = torch.empty((), dtype=torch.int32, device=h.device)
    while d <= MAX_DAMP:
        hd.copy_(h)
        hd.diagonal().add_(d * mean_diag)
        torch.linalg.cholesky_ex(hd.mT, upper=True, out=(hd.mT, info))
        if int(info) == 0:
            torch.cholesky_inverse(hd.mT, upper=True, out=hd.mT)
            torch.linalg.cholesky_ex(hd.mT, upper=False, out=(hd.mT, info))
            if int(info) == 0 and all_finite(hd):
                if d != damp:
                    warnings.warn(f"SparseGPT: the input Hessian of layer {layer!r} is ill-conditioned; "
                                  f"dampening raised from {damp:g} to {d:g} of its mean diagonal", stacklevel=3)
                return h.copy_(hd)
        d = d * 10 if d > 0 else 1e-8
    raise ValueError(f"SparseGPT: the input Hessian of layer {layer!r} is not positive definite even with "
                     f"dampening {MAX_DAMP:g}; its calibration inputs are degenerate")


def sparsegpt(w: torch.Tensor, h: torch.Tensor, sparsity: float | None, nm: tuple[int, int] | None, *,
              blocksize: int = 128, damp: float = 0.01, layer: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """Prune an (out, in) float32 weight in place given its input Hessian ``h``: (``w``, boolean keep-mask).

    ``w`` and ``h`` are both overwritten (no copy of either is made: pass copies to keep them).
    ``sparsity`` is the fraction pruned in every block of columns (unstructured) or ``nm`` = (N, M)
    keeps N of every M consecutive inputs. Inputs that are (nearly) always zero get zero weight.
    """
    if w.dtype != torch.float32 or h.dtype != torch.float32:
        raise TypeError(f"sparsegpt needs float32 weight and Hessian, got {w.dtype} and {h.dtype}")
    rows, cols = w.shape
    dead = torch.diag(h) <= 1e-10 * float(torch.diag(h).max().clamp_min(1e-30))
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    hinv = inverse_cholesky(h, damp, layer)  # in h's memory: no second n x n float32 matrix
    keep = torch.ones(rows, cols, dtype=torch.bool, device=w.device)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        w1 = w[:, i1:i2]  # a view: the block's columns are updated in place
        err1 = torch.zeros(rows, count, device=w.device)
        hinv1 = hinv[i1:i2, i1:i2]
        d = torch.diag(hinv1)
        gone = torch.zeros(rows, count, dtype=torch.bool, device=w.device)
        if nm is None:
            score = w1 ** 2 / d.view(1, -1) ** 2
            n_drop = count * rows - keep_count(count * rows, sparsity)
            if n_drop:
                order = torch.argsort(score.flatten(), stable=True)
                gone.view(-1)[order[:n_drop]] = True
        n, m = nm if nm is not None else (0, 0)
        for i in range(count):
            col = w1[:, i]
            if nm is not None and i % m == 0:
                score = w1[:, i:i + m] ** 2 / d[i:i + m].view(1, -1) ** 2
                low = torch.topk(score, m - n, dim=1, largest=False).indices
                gone.scatter_(1, i + low, True)
            e = torch.where(gone[:, i], col, 0.0) / d[i]  # (w - q) / [H^-1]_ii, q = w with the pruned entries zeroed
            col.masked_fill_(gone[:, i], 0.0)
            w1[:, i + 1:].addr_(e, hinv1[i, i + 1:], alpha=-1)
            err1[:, i] = e
        keep[:, i1:i2] = ~gone
        w[:, i2:].addmm_(err1, hinv[i1:i2, i2:], alpha=-1)
    if not all_finite(w):
        raise ValueError(f"SparseGPT produced non-finite weights for layer {layer!r}")
    return w, keep
