"""Ops that act along dimensions: softmax-like normalisations, orderings, reductions, pooling, padding."""
from __future__ import annotations

import re

import torch

from ..space import Space, block, find, prod_space, regroup
from ..tracer import OpCall, Tracer, tensors_in, unhandled
from .base import _dim, _spatial, arg, default, rule


@rule("softmax", "log_softmax", "softmin", "normalize")
def along_dim_norm(tr: Tracer, call: OpCall) -> None:
    x = arg(call, 0, "input")
    dim = arg(call, 2 if call.name == "normalize" else 1, "dim", 1 if call.name == "normalize" else None)
    spaces = list(tr.rec(x).spaces)
    if dim is None:
        raise unhandled("softmax without dim")
    spaces[_dim(dim, x.dim())].tags.add("norm")
    find(spaces[_dim(dim, x.dim())]).tags.add("norm")
    tr.set(call.out, spaces)


@rule("cumsum", "cumprod", "flip", "roll", "sort", "argsort", "fliplr", "flipud", "cummax", "cummin")
def along_dim_order(tr: Tracer, call: OpCall) -> None:
    x = arg(call, 0, "input")
    spaces = list(tr.rec(x).spaces)
    if call.name == "roll":
        dims = arg(call, 2, "dims")
    elif call.name in ("fliplr", "flipud"):
        dims = [1 if call.name == "fliplr" else 0]
    else:
        dims = arg(call, 1, "dims" if call.name == "flip" else "dim", -1)
    if dims is None:
        dims = list(range(x.dim()))
    for d in [dims] if isinstance(dims, int) else dims:
        block(spaces[_dim(d, x.dim())], f"{call.name} reorders a dimension in {call.module or '<model>'}")
    for o in tensors_in(call.out):
        tr.set(o, list(spaces))


REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "logsumexp", "prod", "all",
              "any", "argmax", "argmin", "nansum", "nanmean", "median", "norm", "count_nonzero", "linalg_vector_norm"}


@rule(*sorted(REDUCTIONS))  # sorted: the registry is filled in the same order in every process
def reduction(tr: Tracer, call: OpCall) -> None:
    x = arg(call, 0, "input")
    ins = tensors_in(call.args)
    if len(ins) > 1 or not isinstance(x, torch.Tensor):  # torch.max(a, b) is elementwise
        return default(tr, call)
    pos = 2 if call.name in ("norm", "linalg_vector_norm") else 1
    dim = arg(call, pos, "dim")
    keepdim = bool(arg(call, pos + 1, "keepdim", False))
    spaces = tr.rec(x).spaces
    outs = tensors_in(call.out)
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0 and call.name != "norm"):
        for s in spaces:
            find(s).tags.add("norm")
        for o in outs:
            tr.fresh(o)
        return
    dims = {_dim(d, x.dim()) for d in ([dim] if isinstance(dim, int) else dim)}
    new = []
    for i, s in enumerate(spaces):
        if i in dims:
            find(s).tags.add("norm")
            if keepdim:
                new.append(Space(1))
        else:
            new.append(s)
    for o in outs:
        if o.dim() != len(new):
            raise unhandled("unexpected reduction output")
        tr.set(o, list(new))


# -- pooling and resampling: batch and channel pass, spatial dims are new ------------------------
POOL = re.compile(r"^(adaptive_)?(avg|max|lp)_pool[123]d(_with_indices)?$|^fn$|^interpolate$|^upsample.*")

def spatial(tr: Tracer, call: OpCall) -> None:
    x = arg(call, 0, "input")
    spaces = tr.rec(x).spaces
    for o in tensors_in(call.out):
        if o.dim() != x.dim() or o.dim() < 3 or tuple(o.shape[:2]) != tuple(x.shape[:2]):
            raise unhandled("pooling with an unexpected shape")
        tr.set(o, spaces[:2] + _spatial(o.shape[2:]))


@rule("pad")
def pad(tr: Tracer, call: OpCall) -> None:
    x = arg(call, 0, "input")
    p = arg(call, 1, "pad")
    spaces = list(tr.rec(x).spaces)
    npad = len(p) // 2
    for k in range(npad):
        d = x.dim() - 1 - k
        if p[2 * k] or p[2 * k + 1]:
            block(spaces[d], f"pad along a dimension in {call.module or '<model>'}")
            spaces[d] = Space(call.out.shape[d])
    tr.set(call.out, spaces)


@rule("pixel_shuffle")
def pixel_shuffle(tr: Tracer, call: OpCall) -> None:
    """(C*r*r, H, W) -> (C, H*r, W*r): the input channels are C x r x r, and output row h*r + i is input
    row h read at factor i (the same for columns); the r factors are fixed."""
    x, r = arg(call, 0, "input"), int(arg(call, 1, "upscale_factor"))
    spaces = tr.rec(x).spaces
    parts = regroup([spaces[-3]], [x.shape[-3] // (r * r), r, r])
    if parts is None:
        raise unhandled("pixel_shuffle of channels split another way")
    c, ri, rj = parts
    block(ri, "pixel_shuffle factor")
    block(rj, "pixel_shuffle factor")
    tr.set(call.out, spaces[:-3] + [c, prod_space([spaces[-2], ri]), prod_space([spaces[-1], rj])])


@rule("pixel_unshuffle")
def pixel_unshuffle(tr: Tracer, call: OpCall) -> None:
    """(C, H*r, W*r) -> (C*r*r, H, W): input row h*r + i lands in channel factor i, so the output
    channels are C x r x r (the r factors fixed) and the output rows are the input's H factor."""
    x, r = arg(call, 0, "input"), int(arg(call, 1, "downscale_factor"))
    spaces, out = tr.rec(x).spaces, call.out
    rows, cols = regroup([spaces[-2]], [out.shape[-2], r]), regroup([spaces[-1]], [out.shape[-1], r])
    if rows is None or cols is None:
        raise unhandled("pixel_unshuffle of rows or columns split another way")
    block(rows[1], "pixel_unshuffle factor")
    block(cols[1], "pixel_unshuffle factor")
    tr.set(out, spaces[:-3] + [prod_space([spaces[-3], rows[1], cols[1]]), rows[0], cols[0]])


@rule("unfold")
def unfold(tr: Tracer, call: OpCall) -> None:
    """``Tensor.unfold(dim, size, step)`` (windows along a dim) or ``F.unfold`` (im2col: C x kernel)."""
    x, out = arg(call, 0, "input"), call.out
    spaces = list(tr.rec(x).spaces)
    if out.dim() == x.dim() + 1:  # Tensor.unfold: dim d becomes the window count, a window dim is added
        d = _dim(arg(call, 1, "dimension"), x.dim())
        block(spaces[d], f"unfold into windows in {call.module or '<model>'}")
        spaces[d] = Space(out.shape[d])
        block(spaces[d], "spatial")
        window = Space(out.shape[-1])
        block(window, "spatial")
        tr.set(out, spaces + [window])
        return
    if x.dim() != 4 or out.dim() != 3:
        raise unhandled("unfold of an unexpected shape")
    for s in spaces[2:]:  # overlapping windows: positions cannot change
        block(s, f"unfold's spatial input in {call.module or '<model>'}")
    k = out.shape[1] // x.shape[1]
    kernel = Space(k)
    block(kernel, "kernel")
    tr.set(out, [spaces[0], prod_space([spaces[1], kernel]), _spatial(out.shape[2:])[0]])


@rule("fold")
def fold(tr: Tracer, call: OpCall) -> None:
    """``F.fold`` (col2im): input channels C x kernel positions become C output channels."""
    x, out = arg(call, 0, "input"), call.out
    if x.dim() != 3 or out.dim() != 4:
        raise unhandled("fold of an unexpected shape")
    spaces = tr.rec(x).spaces
    parts = regroup([spaces[1]], [out.shape[1], x.shape[1] // out.shape[1]])
    if parts is None:
        raise unhandled("fold of channels split another way")
    c, kernel = parts
    block(kernel, "kernel")
    block(spaces[2], f"fold's window positions in {call.module or '<model>'}")
    tr.set(out, [spaces[0], c] + _spatial(out.shape[2:]))
