"""Masks from scores, no weight update: magnitude (|W|, per layer) and Wanda (|W| * ||X||, per output row).

Wanda (Sun et al. 2023) scores each weight by its magnitude times the L2 norm of its input feature
over the calibration tokens, and compares weights only within the same output row.
"""
from __future__ import annotations

import torch

from ..prune.elements import keep_top, nm_masks
from .calibration import keep_count


def magnitude_scores(w: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
    """|W| (the inputs are not used)."""
    return w.abs().float()


def wanda_scores(w: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||X_j||_2 for an (out, in) weight and per-column input norms."""
    return w.abs().float() * norms.view(1, -1)


def select(scores: torch.Tensor, sparsity: float | None, nm: tuple[int, int] | None,
           per_row: bool) -> torch.Tensor:
    """Boolean keep-mask of an (out, in) score matrix: N:M along rows, else the lowest ``sparsity``
    fraction dropped per output row (``per_row``) or over the whole layer."""
    if nm is not None:
        masks, _ = nm_masks({"w": scores}, *nm)
        return masks["w"]
    if per_row:
        keep = keep_count(scores.shape[1], sparsity)
        order = torch.argsort(scores, dim=1, descending=True, stable=True)
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order[:, :keep], True)
    return keep_top(scores, keep_count(scores.numel(), sparsity))
