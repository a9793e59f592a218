"""Shared pieces of the channel rules: the registry, argument helpers, and the elementwise fallback.

A rule receives the tracer and the finished call (inputs and outputs are real tensors). It gives
every output tensor a space per dimension, ties spaces that must shrink together, and blocks
spaces whose exact indices the op depends on. Ops without a rule fall back to ``default``, which
accepts plain broadcasting elementwise ops and blocks everything else.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from ..sizes import Prod, Size, Sum
from ..space import Incompatible, Space, block
from ..tracer import OpCall, Tracer, tensors_in, tie, unhandled

RULES: dict[str, Callable[[Tracer, OpCall], None]] = {}

# Calls that produce no tensor, or metadata only.
IGNORE = {
    "size", "dim", "numel", "__len__", "stride", "is_contiguous", "data_ptr", "element_size",
    "_assert", "__bool__", "item", "tolist", "__format__", "__repr__", "__hash__", "get_device",
    "is_floating_point", "is_complex", "__index__", "__int__", "__float__", "__contains__",
    "storage_offset", "nelement", "ndimension", "__get__", "shape", "dtype", "device", "is_cuda", "ndim",
    "requires_grad", "grad_fn", "layout", "is_leaf", "names", "grad", "itemsize", "nbytes", "is_sparse",
    "__iter__", "__reversed__", "untyped_storage",
    "is_nonzero", "equal", "allclose", "__setstate__", "__reduce_ex__", "register_hook", "backward",
}


def rule(*names: str):
    def deco(fn):
        for n in names:
            RULES[n] = fn
        return fn
    return deco


def arg(call: OpCall, i: int, name: str, default: Any = None) -> Any:
    if len(call.args) > i:
        return call.args[i]
    return call.kwargs.get(name, default)


def _dim(d: int, n: int) -> int:
    return d + n if d < 0 else d


# -- elementwise -------------------------------------------------------------------------------
def broadcast(tr: Tracer, ins: list[torch.Tensor], out: torch.Tensor) -> list[Space]:
    """Tie the aligned dims of broadcasting inputs; returns the output's spaces."""
    shape, shapes = out.shape, [t.shape for t in ins]
    n = len(shape)
    recs: list[Any] = [None] * len(ins)  # each input's record, read when a dim of it is first tied
    spaces = []
    for i, size in enumerate(shape):
        tied: Space | None = None
        for k, ts in enumerate(shapes):
            j = len(ts) - n + i
            if j < 0 or ts[j] != size or ts[j] == 1 and size == 1 and tied:
                continue
            r = recs[k]
            if r is None:
                r = recs[k] = tr.rec(ins[k])
            s = r.spaces[j]
            try:
                tied = s if tied is None else tie(tied, s)
            except Incompatible:  # split differently in two inputs (positions of two streams): this dim stays
                for x in (tied, s):
                    block(x, f"inputs index dim {i} differently in {tr.where()}")
        spaces.append(tied if tied is not None else Space(size))
    return spaces


def broadcast_shape(shapes: list[torch.Size]) -> tuple[int, ...] | None:
    """The shape ``shapes`` broadcast to, or None when they do not broadcast (``torch.broadcast_shapes``
    without its symbolic-shape machinery, which costs more than most ops it is asked about)."""
    first = shapes[0]
    if all(s == first for s in shapes):  # most calls: no broadcasting at all
        return tuple(first)
    n = max(len(s) for s in shapes)
    out = [1] * n
    for s in shapes:
        for i, d in enumerate(s, n - len(s)):
            if d != 1:
                if out[i] == 1:
                    out[i] = d
                elif out[i] != d:
                    return None
    return tuple(out)


@rule("<default>")
def default(tr: Tracer, call: OpCall) -> None:
    outs = tensors_in(call.out)
    if not outs or call.name in IGNORE:
        return
    ins = tensors_in((call.args, call.kwargs))
    if not ins:  # a factory: torch.zeros(...), arange(...)
        _numbers(tr, tree_flatten((call.args, call.kwargs))[0] if call.name not in SIZED
                 else [arg(call, 1, "fill_value")] if call.name == "full" else [])
        for o in outs:
            created(tr, call, o, (call.args, call.kwargs.get("size")) if call.name in SIZED else ())
        return
    shape = broadcast_shape([t.shape for t in ins])
    if shape is not None and all(o.shape == shape for o in outs) and pointwise(call.name):
        _numbers(tr, list(call.args) + list(call.kwargs.values()))
        if len(ins) == 1:  # an activation: the input's spaces (what ``broadcast`` finds for one input)
            r = tr.rec(ins[0])
            spaces, from_param = r.spaces, r.from_param
        else:
            spaces, from_param = broadcast(tr, ins, outs[0]), False
        for o in outs:
            tr.set(o, list(spaces), from_param)
        return
    raise unhandled("no channel rule for this op")


def _numbers(tr: Tracer, values: list) -> None:
    """Tracked sizes among ``values`` are read as numbers (``x * self.dim``, ``torch.tensor(n)``), not sizes."""
    for v in values:
        if isinstance(v, (Size, Sum, Prod)):
            tr.number(v)


_POINTWISE_EXTRA = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
                   "relu6", "hardswish", "hardsigmoid", "hardtanh", "silu", "mish", "gelu", "elu", "selu", "celu",
                   "leaky_relu", "softplus", "softsign", "tanhshrink", "threshold", "logsigmoid", "masked_fill",
                   "where", "clamp", "clip", "type_as", "real", "imag", "data", "rrelu",
                   "greater", "greater_equal", "less", "less_equal", "not_equal", "copy"}  # aten does not tag these
_DUNDER = {"truediv": "div", "floordiv": "floor_divide", "and": "bitwise_and", "or": "bitwise_or",
           "xor": "bitwise_xor", "invert": "bitwise_not", "matmul": "", "getitem": ""}
_pointwise_cache: dict[str, bool] = {}


def pointwise(name: str) -> bool:
    """True for elementwise ops (PyTorch tags their aten kernels ``pointwise``)."""
    if name not in _pointwise_cache:
        base = name
        if base.startswith("__") and base.endswith("__"):
            base = base[2:-2]
            if base[:1] in ("i", "r") and base[1:] in ("add", "sub", "mul", "truediv", "floordiv", "pow",
                                                      "and", "or", "xor", "mod", "lshift", "rshift", "div"):
                base = base[1:]
            base = _DUNDER.get(base, base)
        base = base.rstrip("_")
        ok = base in _POINTWISE_EXTRA
        packet = getattr(torch.ops.aten, base, None) if base and not ok else None
        if packet is not None:
            try:
                ok = any(torch.Tag.pointwise in getattr(packet, o).tags for o in packet.overloads())
            except (AttributeError, RuntimeError):
                ok = False
        _pointwise_cache[name] = ok
    return _pointwise_cache[name]


# Factories whose int arguments are the output's sizes, in order.
SIZED = {"zeros", "ones", "empty", "full", "rand", "randn", "arange", "eye", "new_zeros", "new_ones", "new_full",
         "new_empty"}


def created(tr: Tracer, call: OpCall, out: torch.Tensor, sizes: Any) -> None:
    """A tensor made in code: a dim sized by an int read from a shape or an attribute follows it;
    any other dim has a size fixed in code. ``arange``'s values are its indices (per-head slopes,
    positions), so removing entries would renumber those kept: its dims and their origins are pinned."""
    ints = [v for v in tree_flatten(sizes)[0] if isinstance(v, int) and not isinstance(v, bool)]
    spaces, j = [], 0
    for n in out.shape:
        s = Space(n)
        while j < len(ints) and ints[j] != n:
            j += 1
        if j < len(ints):
            j += 1
            if call.name not in _VALUES and tr.follow(ints[j - 1], s):
                spaces.append(s)
                continue
            tr.pin_origin(ints[j - 1], call.module)
        block(s, f"size of a tensor created in code in {call.module or '<model>'}{_VALUES.get(call.name, '')}")
        spaces.append(s)
    tr.set(out, spaces)


# Why a factory's size matters beyond its shape: its values depend on the index.
_VALUES = {"arange": " (arange: values that depend on the index, such as positions or ALiBi slopes per head; "
                     "removing entries would change the values of those kept)"}


@rule("new_zeros", "new_ones", "new_full", "new_empty", "new_tensor")
def new_factory(tr: Tracer, call: OpCall) -> None:
    _numbers(tr, tree_flatten(call.args[1:])[0] if call.name == "new_tensor"
             else [arg(call, 2, "fill_value")] if call.name == "new_full" else [])
    for o in tensors_in(call.out):
        created(tr, call, o, (call.args[1:], call.kwargs.get("size")) if call.name in SIZED else ())


@rule("zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like")
def like(tr: Tracer, call: OpCall) -> None:
    """A new tensor shaped like its input: same spaces (it follows whatever the input becomes)."""
    x = arg(call, 0, "input")
    spaces = tr.rec(x).spaces
    for o in tensors_in(call.out):
        tr.set(o, list(spaces) if o.shape == x.shape else [Space(n) for n in o.shape])


@rule("__setitem__")
def setitem(tr: Tracer, call: OpCall) -> None:
    """``x[idx] = v``: dims the index selects in are pinned; dims it leaves whole take ``v``'s channels
    (``h[mask] = embed``, Wav2Vec2's masked time steps, ties ``h``'s width to ``embed``'s)."""
    x, idx, v = call.args[0], call.args[1], call.args[2] if len(call.args) > 2 else None
    where = f"indexed assignment in {call.module or '<model>'}"
    items = list(idx) if isinstance(idx, tuple) else [idx]
    spans = []  # how many leading dims of x each index item selects in
    for i in items:
        if isinstance(i, torch.Tensor) and i.dtype == torch.bool:
            spans.append(i.dim())
        elif isinstance(i, (int, slice, torch.Tensor)):
            spans.append(1)
        else:  # None, Ellipsis, lists: not modelled
            spans = None
            break
    rx = tr.rec(x)
    covered = sum(spans) if spans is not None else -1
    if covered < 0 or covered > x.dim():
        for t in tensors_in(call.args):
            for s in tr.rec(t).spaces:
                block(s, where)
        return
    d = 0
    for i, n in zip(items, spans):  # a whole slice keeps its dim free; anything else selects positions
        if not (isinstance(i, slice) and i == slice(None)):
            for s in rx.spaces[d:d + n]:
                block(s, where)
        d += n
    for t in tensors_in(items):
        for s in tr.rec(t).spaces:
            block(s, where)
    if isinstance(v, torch.Tensor):
        rv, kept = tr.rec(v), _assigned_dims(items, covered, x.dim())
        for j in range(v.dim()):
            k = j - v.dim()  # from the right
            if -k <= len(kept) and v.shape[j] == x.shape[kept[k]] and v.shape[j] > 1:
                tie(rx.spaces[kept[k]], rv.spaces[j])
            elif v.shape[j] > 1:
                block(rv.spaces[j], where)


def _assigned_dims(items: list, covered: int, n: int) -> list[int]:
    """The dims of ``x`` that ``x[items]`` keeps, in order, which the assigned value lines up with from the right:
    a slice keeps its dim and an int drops it (``state[:, :, layer] = h`` writes ``h`` along dims 0 and 1);
    with a tensor index, only the dims after every index item."""
    if any(isinstance(i, torch.Tensor) for i in items):
        return list(range(covered, n))
    return [d for d, i in enumerate(items) if isinstance(i, slice)] + list(range(covered, n))


def _kernel(spaces: list[Space]) -> None:
    """Kernel dims of a weight never change."""
    for s in spaces:
        block(s, "kernel")


def _spatial(shape) -> list[Space]:
    """Fresh spaces for spatial output dims: their size comes from the input, never prunable."""
    out = [Space(n) for n in shape]
    for s in out:
        block(s, "spatial")
    return out


@rule("copy_")
def copy_into(tr: Tracer, call: OpCall) -> None:
    """``dst.copy_(src)``: ``src`` broadcasts to ``dst`` element by element, so their aligned dims are the
    same channels (DeepSeek's multi-head latent attention writes each head's keys into slices of a new
    tensor); ``dst`` keeps its spaces."""
    dst, src = call.args[0], arg(call, 1, "src")
    if not isinstance(src, torch.Tensor):
        raise unhandled("copy_ from something that is not a tensor")
    tr.set(call.out, broadcast(tr, [dst, src], dst), tr.rec(dst).from_param)


def tie_index_dims(x: torch.Tensor, index: torch.Tensor, rx: Any, ri: Any, d: int, why: str) -> list[Space]:
    """For ``gather``/``scatter`` along ``d``: every other dim is the same channels in ``x`` and the index
    where their sizes agree, and is read (or written) only in part, so pinned with ``why``, where they do not.
    Returns the index's spaces, tied."""
    spaces = []
    for i, s in enumerate(ri.spaces):
        if i != d and x.shape[i] == index.shape[i]:
            s = tie(rx.spaces[i], s)
        elif i != d:
            block(rx.spaces[i], why)
        spaces.append(s)
    return spaces
