"""Outlier-weighted layer-wise sparsity (OWL, Yin et al. 2024): layers with more activation outliers
keep more weights, at the same mean sparsity.

A unit's outlier ratio is the fraction of its Wanda scores |W| * ||X|| above ``m`` times their
mean; ratios are mapped linearly onto a range 2 x lambda wide (most outliers -> least sparse) and
shifted so their mean is exactly the target (as the paper's code does).
"""
from __future__ import annotations

import torch


def outlier_ratio(scores: list[torch.Tensor], m: float) -> float:
    """Fraction of the scores (all layers of one unit together) above ``m`` x their mean."""
    flat = torch.cat([s.flatten().float() for s in scores])
    return float((flat > m * flat.mean()).float().mean())


def owl_sparsities(ratios: list[float], target: float, lam: float) -> list[float]:
    """Per-unit sparsities from outlier ratios: mean ``target``, range ``2 * lam``, clipped to [0, 0.99]."""
    d = torch.tensor(ratios, dtype=torch.float64)
    if len(ratios) < 2 or float(d.max() - d.min()) == 0.0:
        return [float(target)] * len(ratios)
    spread = (d - d.min()) / (d.max() - d.min()) * 2 * lam
    s = target - (spread - spread.mean())
    return [float(v) for v in s.clamp(0.0, 0.99)]
