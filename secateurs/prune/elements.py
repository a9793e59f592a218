"""Element-wise sparsity: unstructured and N:M masks chosen from element scores.

Masks are chosen here and carried by a Plan as bit-packed data; ``apply`` installs them as
parametrizations, so a masked weight reads as exactly zero whatever an optimizer does to the
stored value.
"""
from __future__ import annotations

import base64
import math
import re

import numpy as np
import torch
from torch import nn

PRUNABLE = (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding, nn.EmbeddingBag)
NM = re.compile(r"^(\d+):(\d+)$")


def parse_nm(granularity: str) -> tuple[int, int] | None:
    """(N, M) for an "N:M" granularity, None for anything else; ValueError if N >= M or M < 2."""
    m = NM.match(granularity)
    if not m:
        return None
    n, mm = int(m.group(1)), int(m.group(2))
    if mm < 2 or not 0 < n < mm:
        raise ValueError(f"granularity {granularity!r}: N:M needs 0 < N < M (keep N of every M weights)")
    return n, mm


def default_targets(model: nn.Module) -> list[str]:
    """Weights of Linear, Conv*, Embedding modules: the usual targets of element sparsity."""
    return [f"{name}.weight" if name else "weight" for name, mod in model.named_modules()
            if isinstance(mod, PRUNABLE) and getattr(mod, "weight", None) is not None]


def local_masks(scores: dict[str, torch.Tensor], ratios: dict[str, float]) -> dict[str, torch.Tensor]:
    """Per tensor, drop the ``ratios[name]`` fraction of lowest-scored elements (ties by position)."""
    out = {}
    for name, s in scores.items():
        n_drop = int(math.floor(ratios[name] * s.numel() + 1e-9))
        out[name] = keep_top(s, s.numel() - n_drop)
    return out


def global_masks(scores: dict[str, torch.Tensor], ratio: float, floor: float) -> dict[str, torch.Tensor]:
    """One threshold over all tensors' scores; every tensor keeps at least ``floor`` of its elements."""
    flat = torch.cat([s.flatten().double() for s in scores.values()])
    n_drop = int(math.floor(ratio * flat.numel() + 1e-9))
    if n_drop == 0:
        return {k: torch.ones_like(s, dtype=torch.bool) for k, s in scores.items()}
    threshold = torch.kthvalue(flat, n_drop).values
    out = {}
    for name, s in scores.items():
        below = int((s.double() <= threshold).sum())
        keep = max(s.numel() - below, math.ceil(floor * s.numel()), 1)
        out[name] = keep_top(s, keep)
    return out


def nm_masks(scores: dict[str, torch.Tensor], n: int, m: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Keep the ``n`` best of every ``m`` consecutive weights along the input dimension (dim 1).

    Tensors whose input dimension is not a multiple of ``m`` are skipped, with the reason.
    """
    out, skipped = {}, {}
    for name, s in scores.items():
        if s.dim() < 2 or s.shape[1] % m:
            skipped[name] = f"input dimension {tuple(s.shape)[1:2]} is not a multiple of {m}"
            continue
        moved = s.movedim(1, -1)  # (..., in): blocks of m along the input dim
        blocks = moved.reshape(-1, m)
        order = torch.argsort(blocks, dim=1, descending=True, stable=True)
        keep = torch.zeros_like(blocks, dtype=torch.bool).scatter_(1, order[:, :n], True)
        out[name] = keep.reshape(moved.shape).movedim(-1, 1).contiguous()
    return out, skipped


def check_nm(mask: torch.Tensor, n: int, m: int) -> bool:
    """True when every block of ``m`` along dim 1 keeps at most ``n`` elements."""
    blocks = mask.movedim(1, -1).reshape(-1, m)
    return bool((blocks.sum(1) <= n).all())


def keep_top(s: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask (on ``s``'s device) of the ``keep`` highest scores of ``s``, ties by position (lower first).

    The elements a stable descending sort puts first, found by selection in linear time instead: the
    ``keep``-th largest value by ``kthvalue``, everything above it, and the first of its ties. NaN counts
    as larger than any number (as sorting puts it), tied with +inf.
    """
    flat = s.detach().flatten().double()
    n = flat.numel()
    if keep >= n:
        return torch.ones(s.shape, dtype=torch.bool, device=s.device)
    if keep <= 0:
        return torch.zeros(s.shape, dtype=torch.bool, device=s.device)
    flat = torch.where(flat.isnan(), math.inf, flat)
    t = torch.kthvalue(flat, n - keep + 1).values
    mask = flat > t
    ties = (flat == t).nonzero().squeeze(1)
    mask[ties[:keep - int(mask.sum())]] = True
    return mask.view(s.shape)


def pack(mask: torch.Tensor) -> str:
    """A boolean mask as base64 of its bits (row-major), for JSON plans."""
    return base64.b64encode(np.packbits(mask.flatten().cpu().numpy().astype(np.uint8)).tobytes()).decode()


def unpack(text: str, shape: list[int]) -> torch.Tensor:
    """Inverse of ``pack``."""
    n = math.prod(shape)
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n]
    if bits.size != n:
        raise ValueError(f"mask in plan has {bits.size} bits, shape {shape} needs {n}")
    return torch.from_numpy(bits.astype(bool)).view(shape)
