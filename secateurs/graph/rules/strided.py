"""``as_strided``: overlapping windows over the rows of a tensor (Longformer's sliding chunks).

A view that restrides only the dims before the last, keeping the last dim whole with stride 1, reads
channel c of some position of its input for every output channel c: the last dim passes its
channels through. It keeps doing so once that dim is narrower only when each other stride is a
step along the input's own dims, so each must be a ``Stride`` read from the input itself
(``sizes.Stride``): k times a dim's stride, or a fraction of the stride of a dim a view split from
the next one (``stride(1) // 2`` of a (chunks, 2w) split is w rows). The positions stay within the
input's and are pinned, with every dim a step was scaled by; any other as_strided pins all its dims,
with the reason.
"""
from __future__ import annotations

from typing import Any

import torch

from ..sizes import Stride
from ..space import Space, block
from ..tracer import OpCall, Tracer, unhandled
from .base import arg, rule


def _runs(x: torch.Tensor) -> list[int]:
    """For each dim but the last, the first dim of its run: dims a view split from the next one
    (``stride(m) == shape(m + 1) * stride(m + 1)``) count positions together, row-major."""
    first = list(range(x.dim() - 1))
    for m in range(x.dim() - 3, -1, -1):
        if x.shape[m + 1] > 1 and x.stride(m) == x.shape[m + 1] * x.stride(m + 1):
            first[m + 1] = first[m]
    for m in range(1, x.dim() - 1):
        first[m] = first[first[m]]
    return first


def _walk(x: torch.Tensor, out: torch.Tensor, stride: list, offset: Any) -> str | None:
    """Why the view is not a walk over positions of ``x`` with whole rows of its last dim, or None."""
    if offset is not None:
        return "as_strided with a storage offset given in code"
    n = x.shape[-1]
    if out.shape[-1] != n or (n > 1 and (x.stride(-1) != 1 or out.stride(-1) != 1)) or len(stride) != out.dim():
        return "as_strided that does not keep the last dim whole with stride 1"
    first = _runs(x)
    inner = [1] * (x.dim() - 1)  # positions of a run's last dim per step along dim m
    for m in range(x.dim() - 3, -1, -1):
        if first[m + 1] == first[m]:
            inner[m] = inner[m + 1] * x.shape[m + 1]
    reach: dict[int, int] = {}
    for k in range(out.dim() - 1):
        v = stride[k]
        if out.shape[k] == 1:
            continue
        step = v.num * inner[v.dim] if isinstance(v, Stride) and v.src is x else 0
        if not step or step % v.den:
            return f"as_strided stride {int(v)} of dim {k} is not a step along its input's dims"
        run = first[v.dim]
        reach[run] = reach.get(run, 0) + (out.shape[k] - 1) * step // v.den
    for run, r in reach.items():
        size = 1
        for m in range(run, x.dim() - 1):
            if first[m] == run:
                size *= x.shape[m]
        if r >= size:
            return "as_strided reads outside its input"
    return None


@rule("as_strided")
def as_strided(tr: Tracer, call: OpCall) -> None:
    x, out = arg(call, 0, "input"), call.out
    size, stride, offset = arg(call, 1, "size"), arg(call, 2, "stride"), arg(call, 3, "storage_offset")
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) or x.dim() == 0 or out.dim() == 0:
        raise unhandled("as_strided of a scalar")
    why = _walk(x, out, list(stride), offset)
    if why is not None:
        raise unhandled(why)
    rx = tr.rec(x)
    where = call.module or "<model>"
    for s in rx.spaces[:-1]:
        block(s, f"positions restrided by as_strided in {where}")
    spaces = []
    for n, v, st in zip(out.shape[:-1], size, stride):
        for s in getattr(st, "spaces", ()):
            block(s, f"a step of as_strided scaled by this size in {where}")
        tr.pin_origin(v, call.module)
        s = Space(n)
        block(s, f"positions restrided by as_strided in {where}")
        spaces.append(s)
    c = rx.spaces[-1]
    if not tr.follow(size[-1], c):
        tr.literal(c, size[-1], call.module)
    tr.set(out, spaces + [c])
