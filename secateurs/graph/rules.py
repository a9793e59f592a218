"""Per-op channel rules: how each torch call ties the index spaces of its inputs and outputs.

A rule receives the tracer and the finished call (inputs and outputs are real tensors). It gives
every output tensor a space per dimension, ties spaces that must shrink together, and blocks
spaces whose exact indices the op depends on. Ops without a rule fall back to ``default``, which
accepts plain broadcasting elementwise ops and blocks everything else.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import torch
from torch import nn

from .space import Space, block, cat_space, find, leaf_factors, prod_space, refine, regroup
from .tracer import OpCall, Tracer, tensors_in, tie, unhandled

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
    n = out.dim()
    spaces = []
    for i in range(n):
        tied: Space | None = None
        for t in ins:
            j = t.dim() - n + i
            if j < 0 or t.shape[j] != out.shape[i] or t.shape[j] == 1 and out.shape[i] == 1 and tied:
                continue
            s = tr.rec(t).spaces[j]
            tied = s if tied is None else tie(tied, s)
        spaces.append(tied if tied is not None else Space(out.shape[i]))
    return spaces


@rule("<default>")
def default(tr: Tracer, call: OpCall) -> None:
    outs = tensors_in(call.out)
    if not outs or call.name in IGNORE:
        return
    ins = tensors_in((call.args, call.kwargs))
    if not ins:  # a factory: torch.zeros(...), arange(...)
        for o in outs:
            tr.fresh(o)
        return
    try:
        shape = torch.broadcast_shapes(*[t.shape for t in ins])
    except RuntimeError:
        shape = None
    if shape is not None and all(o.shape == shape for o in outs) and pointwise(call.name):
        spaces = broadcast(tr, ins, outs[0])
        from_param = len(ins) == 1 and tr.rec(ins[0]).from_param
        for o in outs:
            tr.set(o, list(spaces), from_param)
        return
    raise unhandled("no channel rule for this op")


_POINTWISE_EXTRA = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
                   "relu6", "hardswish", "hardsigmoid", "hardtanh", "silu", "mish", "gelu", "elu", "selu", "celu",
                   "leaky_relu", "softplus", "softsign", "tanhshrink", "threshold", "logsigmoid", "masked_fill",
                   "where", "clamp", "clip", "type_as", "real", "imag", "data", "rrelu"}
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


@rule("new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "zeros_like", "ones_like",
      "empty_like", "full_like", "rand_like", "randn_like", "randint_like")
def factory(tr: Tracer, call: OpCall) -> None:
    for o in tensors_in(call.out):
        tr.fresh(o)


@rule("multi_head_attention_forward")
def multi_head_attention(tr: Tracer, call: OpCall) -> None:
    """nn.MultiheadAttention with packed q/k/v: heads couple q, k, v rows and out_proj columns."""
    q, k, v, _, heads, w, b, bias_k, _, zero_attn, _, wo, bo = call.args[:13]
    mod = tr.modules.get(call.module)
    plain = (w is not None and bias_k is None and not zero_attn and isinstance(mod, nn.MultiheadAttention)
             and not call.kwargs.get("use_separate_proj_weight", False))
    if not plain:
        raise unhandled("attention with separate projections, bias_k/bias_v or zero attention")
    rq, rk, rv, rw, rwo = (tr.rec(t) for t in (q, k, v, w, wo))
    for r in (rq, rk, rv):
        tie(r.spaces[-1], rw.spaces[1])
    tie(rk.spaces[0], rv.spaces[0])
    inner = w.shape[0] // 3
    proj = _pieces(rw.spaces[0], [inner] * 3)
    if b is not None:
        tie(rw.spaces[0], tr.rec(b).spaces[0])
        role(tr, b, 0, "out")
    (qh, qd), (kh, kd), (vh, vd) = (refine(p, "prod", [heads, inner // heads]) if heads > 1 else (Space(1), p)
                                    for p in proj)
    for h in (kh, vh):
        tie(qh, h)
    for d in (kd, vd):
        tie(qd, d)
    find(qh).tags.add("head")
    find(qd).tags.add("qk")
    tie(rwo.spaces[1], prod_space([qh, qd]))
    if bo is not None:
        tie(rwo.spaces[0], tr.rec(bo).spaces[0])
        role(tr, bo, 0, "out")
    for t, d, r in ((w, 0, "out"), (w, 1, "in"), (wo, 0, "out"), (wo, 1, "in")):
        role(tr, t, d, r)
    if heads > 1:
        tr.state.syncs.append((call.module, "num_heads", [qh]))
    out = call.out[0]
    tr.set(out, rq.spaces[:-1] + [rwo.spaces[0]])
    if isinstance(call.out[1], torch.Tensor):
        tr.fresh(call.out[1])


@rule("__setitem__")
def setitem(tr: Tracer, call: OpCall) -> None:
    for t in tensors_in(call.args):
        for s in tr.rec(t).spaces:
            block(s, f"indexed assignment in {call.module or '<model>'}")


@rule("softmax", "log_softmax", "softmin", "normalize")
def along_dim_norm(tr: Tracer, call: OpCall) -> None:
    x = call.args[0]
    dim = arg(call, 2 if call.name == "normalize" else 1, "dim", 1 if call.name == "normalize" else None)
    spaces = list(tr.rec(x).spaces)
    if dim is None:
        raise unhandled("softmax without dim")
    spaces[_dim(dim, x.dim())].tags.add("norm")
    find(spaces[_dim(dim, x.dim())]).tags.add("norm")
    tr.set(call.out, spaces)


@rule("cumsum", "cumprod", "flip", "roll", "sort", "argsort", "fliplr", "flipud", "cummax", "cummin")
def along_dim_order(tr: Tracer, call: OpCall) -> None:
    x = call.args[0]
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
              "any", "argmax", "argmin", "nansum", "nanmean", "median", "norm", "count_nonzero"}


@rule(*REDUCTIONS)
def reduction(tr: Tracer, call: OpCall) -> None:
    x = call.args[0]
    ins = tensors_in(call.args)
    if len(ins) > 1 or not isinstance(x, torch.Tensor):  # torch.max(a, b) is elementwise
        return default(tr, call)
    pos = 2 if call.name == "norm" else 1
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


def lookup(name: str) -> Callable[[Tracer, OpCall], None]:
    """The rule for an op name (pooling/resampling ops are matched by pattern)."""
    found = RULES.get(name)
    if found is not None:
        return found
    return spatial if POOL.match(name) else default


def spatial(tr: Tracer, call: OpCall) -> None:
    x = call.args[0]
    spaces = tr.rec(x).spaces
    for o in tensors_in(call.out):
        if o.dim() != x.dim() or o.dim() < 3 or tuple(o.shape[:2]) != tuple(x.shape[:2]):
            raise unhandled("pooling with an unexpected shape")
        tr.set(o, spaces[:2] + _spatial(o.shape[2:]))


@rule("pad")
def pad(tr: Tracer, call: OpCall) -> None:
    x = call.args[0]
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
    x, r = call.args[0], int(arg(call, 1, "upscale_factor"))
    spaces = tr.rec(x).spaces
    c, _, _ = refine(spaces[-3], "prod", [x.shape[-3] // (r * r), r, r])
    block(_, "pixel_shuffle factor")
    tr.set(call.out, spaces[:-3] + [c, Space(call.out.shape[-2]), Space(call.out.shape[-1])])


# -- shape ops -----------------------------------------------------------------------------------
def _sizes(call: OpCall, start: int = 1) -> list:
    rest = call.args[start:]
    if len(rest) == 1 and isinstance(rest[0], (tuple, list, torch.Size)):
        return list(rest[0])
    if not rest:
        key = "shape" if "shape" in call.kwargs else "size"
        return list(call.kwargs.get(key, ()))
    return list(rest)


def reshape_to(tr: Tracer, call: OpCall, x: torch.Tensor, out: torch.Tensor, target: list | None) -> None:
    """Reshape spaces of ``x`` into ``out``'s shape; ``target`` holds the literal sizes, if any."""
    rx = tr.rec(x)
    new = regroup(rx.spaces, list(out.shape))
    if new is None:
        raise unhandled(f"reshape {tuple(x.shape)} -> {tuple(out.shape)} mixes channel indices")
    tr.set(out, new, rx.from_param)
    if target is None:
        return
    has_free = any(isinstance(v, int) and v == -1 for v in target)
    in_keys = [_key(s) for s in rx.spaces]
    for v, s in zip(target, new):
        if isinstance(v, int) and v != -1 and v > 1:
            # A size passed through unchanged, with no -1 beside it, fails loudly if it goes stale.
            tr.literal(s, v, call.module, loose=not has_free and _key(s) in in_keys)


def _key(s: Space) -> tuple:
    return tuple(id(f) for f in leaf_factors(s))


@rule("view", "reshape", "_unsafe_view", "view_as", "reshape_as")
def view(tr: Tracer, call: OpCall) -> None:
    x, out = call.args[0], call.out
    if not isinstance(out, torch.Tensor):
        return
    if call.name in ("view_as", "reshape_as"):
        return reshape_to(tr, call, x, out, None)
    target = _sizes(call)
    if target and not isinstance(target[0], int):  # view(dtype)
        if out.shape != x.shape:
            raise unhandled("view as a different dtype changes the shape")
        tr.set(out, list(tr.rec(x).spaces))
        return
    reshape_to(tr, call, x, out, target)


@rule("flatten")
def flatten(tr: Tracer, call: OpCall) -> None:
    reshape_to(tr, call, call.args[0], call.out, None)


@rule("unflatten")
def unflatten(tr: Tracer, call: OpCall) -> None:
    x = call.args[0]
    d = _dim(arg(call, 1, "dim"), x.dim())
    sizes = list(arg(call, 2, "sizes"))
    target = [-1] * d + sizes + [-1] * (x.dim() - d - 1)
    reshape_to(tr, call, x, call.out, target)


@rule("permute")
def permute(tr: Tracer, call: OpCall) -> None:
    x = call.args[0]
    dims = _sizes(call) if "dims" not in call.kwargs else list(call.kwargs["dims"])
    rx = tr.rec(x)
    tr.set(call.out, [rx.spaces[_dim(d, x.dim())] for d in dims], rx.from_param)


@rule("transpose", "swapaxes", "swapdims", "t", "movedim", "moveaxis", "T", "mT")
def transpose(tr: Tracer, call: OpCall) -> None:
    x = call.args[0]
    rx = tr.rec(x)
    spaces = list(rx.spaces)
    if call.name in ("t", "T"):
        spaces = spaces[::-1]
    elif call.name == "mT":
        spaces[-1], spaces[-2] = spaces[-2], spaces[-1]
    elif call.name in ("movedim", "moveaxis"):
        src, dst = arg(call, 1, "source"), arg(call, 2, "destination")
        src = [src] if isinstance(src, int) else list(src)
        dst = [dst] if isinstance(dst, int) else list(dst)
        order = [i for i in range(x.dim()) if i not in {_dim(s, x.dim()) for s in src}]
        for s, d in sorted(zip((_dim(s, x.dim()) for s in src), (_dim(d, x.dim()) for d in dst)),
                           key=lambda p: p[1]):
            order.insert(d, s)
        spaces = [rx.spaces[i] for i in order]
    else:
        a, b = _dim(arg(call, 1, "dim0"), x.dim()), _dim(arg(call, 2, "dim1"), x.dim())
        spaces[a], spaces[b] = spaces[b], spaces[a]
    tr.set(call.out, spaces, rx.from_param)


@rule("squeeze", "unsqueeze")
def squeeze(tr: Tracer, call: OpCall) -> None:
    reshape_to(tr, call, call.args[0], call.out, None)


@rule("contiguous", "clone", "detach", "to", "float", "half", "double", "bfloat16", "type", "cpu",
      "cuda", "requires_grad_", "type_as", "detach_", "__deepcopy__", "as_subclass", "alias")
def identity(tr: Tracer, call: OpCall) -> None:
    x = call.args[0]
    if isinstance(call.out, torch.Tensor) and isinstance(x, torch.Tensor) and call.out.shape == x.shape:
        rx = tr.rec(x)
        tr.set(call.out, list(rx.spaces), rx.from_param)


@rule("expand", "expand_as")
def expand(tr: Tracer, call: OpCall) -> None:
    x, out = call.args[0], call.out
    rx = tr.rec(x)
    target = _sizes(call) if call.name == "expand" else None
    lead = out.dim() - x.dim()
    spaces = [Space(n) for n in out.shape[:lead]]
    for i, s in enumerate(rx.spaces):
        if x.shape[i] == out.shape[lead + i]:
            spaces.append(s)
        else:
            new = Space(out.shape[lead + i])
            spaces.append(new)
            if target is not None and isinstance(target[lead + i], int):
                tr.literal(new, target[lead + i], call.module)
    tr.set(out, spaces, rx.from_param)


@rule("repeat")
def repeat(tr: Tracer, call: OpCall) -> None:
    x, out = call.args[0], call.out
    reps = _sizes(call)
    lead = len(reps) - x.dim()
    spaces = [Space(n) for n in out.shape[:lead]]
    for i, s in enumerate(tr.rec(x).spaces):
        r = reps[lead + i]
        if r == 1:
            spaces.append(s)
        else:
            tile = Space(r)
            block(tile, "repeat count")
            spaces.append(prod_space([tile, s]))
    tr.set(out, spaces)


@rule("__getitem__")
def getitem(tr: Tracer, call: OpCall) -> None:
    x, idx, out = call.args[0], call.args[1], call.out
    rx = tr.rec(x)
    where = call.module or "<model>"
    if isinstance(idx, torch.Tensor) and idx.dtype != torch.bool:  # table[index]: gathers rows
        block(rx.spaces[0], f"rows gathered by an index tensor in {where}")
        tr.set(out, [Space(n) for n in idx.shape] + rx.spaces[1:])
        return
    items = list(idx) if isinstance(idx, tuple) else [idx]
    if any(isinstance(i, (torch.Tensor, list)) for i in items):
        raise unhandled("advanced (tensor) indexing")
    n_real = sum(1 for i in items if i is not None and i is not Ellipsis)
    if Ellipsis in items:
        e = items.index(Ellipsis)
        items = items[:e] + [slice(None)] * (x.dim() - n_real) + items[e + 1:]
    items += [slice(None)] * (x.dim() - sum(1 for i in items if i is not None))
    spaces, d = [], 0
    for i in items:
        if i is None:
            spaces.append(Space(1))
            continue
        s = rx.spaces[d]
        if isinstance(i, int):
            block(s, f"indexing a single position in {where}")
        elif isinstance(i, slice):
            if i == slice(None) or (i.start in (None, 0) and i.step in (None, 1) and i.stop is not None
                                    and i.stop >= x.shape[d]):
                spaces.append(s)
            else:
                block(s, f"slicing part of a dimension in {where}")
                spaces.append(Space(len(range(*i.indices(x.shape[d])))))
        else:
            raise unhandled(f"index of type {type(i).__name__}")
        d += 1
    tr.set(out, spaces, rx.from_param)


@rule("chunk", "split", "split_with_sizes", "tensor_split", "unsafe_split", "unsafe_chunk")
def split(tr: Tracer, call: OpCall) -> None:
    x = call.args[0]
    outs = list(call.out)
    if call.name == "tensor_split":
        raise unhandled("tensor_split")
    default_dim = 0
    d = _dim(arg(call, 2, "dim", default_dim), x.dim())
    sizes = [o.shape[d] for o in outs]
    rx = tr.rec(x)
    pieces = _pieces(rx.spaces[d], sizes)
    if call.name in ("chunk", "unsafe_chunk"):
        equal = [p for p, n in zip(pieces, sizes) if n == sizes[0]]
        for p in pieces[len(equal):]:
            block(p, f"uneven chunk in {call.module or '<model>'}")
        _tie_all(equal)
    else:
        spec = arg(call, 1, "split_size_or_sections", arg(call, 1, "split_size", None))
        if isinstance(spec, int):
            full = [p for p, n in zip(pieces, sizes) if n == spec]
            for p in pieces[len(full):]:
                block(p, f"uneven split in {call.module or '<model>'}")
            _tie_all(full)
            if full:
                tr.literal(full[0], spec, call.module)
        else:
            for p, n in zip(pieces, sizes):
                tr.literal(p, n, call.module)
    for o, p in zip(outs, pieces):
        sp = list(rx.spaces)
        sp[d] = p
        tr.set(o, sp, rx.from_param)


def _pieces(s: Space, sizes: list[int]) -> list[Space]:
    r = find(s)
    if r.kind == "prod":
        f = leaf_factors(r)
        inner = 1
        for g in f[1:]:
            inner *= g.size
        if any(n % inner for n in sizes):
            raise unhandled("split across a product dimension")
        heads = _pieces(f[0], [n // inner for n in sizes])
        return [prod_space([h] + f[1:]) for h in heads]
    if r.kind == "cat":
        children, out, acc, cur = [find(c) for c in r.children], [], [], 0
        for n in sizes:
            while cur < n and children:
                c = children.pop(0)
                acc.append(c)
                cur += c.size
            if cur != n:
                raise unhandled("split does not follow the concatenation it splits")
            out.append(cat_space(acc))
            acc, cur = [], 0
        return out
    return refine(r, "cat", sizes)


def _tie_all(spaces: list[Space]) -> None:
    for p in spaces[1:]:
        tie(spaces[0], p)


@rule("unbind")
def unbind(tr: Tracer, call: OpCall) -> None:
    x = call.args[0]
    d = _dim(arg(call, 1, "dim", 0), x.dim())
    rx = tr.rec(x)
    block(rx.spaces[d], f"unbind in {call.module or '<model>'}")
    for o in call.out:
        tr.set(o, rx.spaces[:d] + rx.spaces[d + 1:], rx.from_param)


@rule("select", "narrow")
def select(tr: Tracer, call: OpCall) -> None:
    x = call.args[0]
    d = _dim(arg(call, 1, "dim"), x.dim())
    rx = tr.rec(x)
    block(rx.spaces[d], f"{call.name} in {call.module or '<model>'}")
    if call.name == "select":
        tr.set(call.out, rx.spaces[:d] + rx.spaces[d + 1:])
    else:
        tr.set(call.out, rx.spaces[:d] + [Space(call.out.shape[d])] + rx.spaces[d + 1:])


@rule("cat", "concat", "concatenate")
def cat(tr: Tracer, call: OpCall) -> None:
    xs = [t for t in arg(call, 0, "tensors") if not (t.dim() == 1 and t.shape[0] == 0)]
    out = call.out
    d = _dim(arg(call, 1, "dim", 0), out.dim())
    recs = [tr.rec(t) for t in xs]
    spaces = []
    for i in range(out.dim()):
        if i == d:
            spaces.append(cat_space([r.spaces[i] for r in recs]))
        else:
            s = recs[0].spaces[i]
            for r in recs[1:]:
                s = tie(s, r.spaces[i])
            spaces.append(s)
    tr.set(out, spaces)


@rule("stack")
def stack(tr: Tracer, call: OpCall) -> None:
    xs = list(arg(call, 0, "tensors"))
    out = call.out
    d = _dim(arg(call, 1, "dim", 0), out.dim())
    recs = [tr.rec(t) for t in xs]
    spaces = []
    for i in range(xs[0].dim()):
        s = recs[0].spaces[i]
        for r in recs[1:]:
            s = tie(s, r.spaces[i])
        spaces.append(s)
    piece = Space(len(xs))
    block(piece, "stack index")
    spaces.insert(d, piece)
    tr.set(out, spaces)


# -- layers with parameters ----------------------------------------------------------------------
def role(tr: Tracer, t: torch.Tensor | None, dim: int, r: str) -> None:
    if t is not None and tr.rec(t).param is not None:
        tr.state.roles[(tr.rec(t).param, dim)] = r


@rule("linear")
def linear(tr: Tracer, call: OpCall) -> None:
    x, w, b = call.args[0], arg(call, 1, "weight"), arg(call, 2, "bias")
    rx, rw = tr.rec(x), tr.rec(w)
    tie(rx.spaces[-1], rw.spaces[-1])
    outs = rx.spaces[:-1] + [rw.spaces[0]] if w.dim() == 2 else rx.spaces[:-1]
    if b is not None:
        tie(rw.spaces[0], tr.rec(b).spaces[0])
        role(tr, b, 0, "out")
    role(tr, w, 0, "out")
    role(tr, w, 1, "in")
    tr.set(call.out, outs)


@rule("bilinear")
def bilinear(tr: Tracer, call: OpCall) -> None:
    x1, x2, w, b = call.args[:3] + (arg(call, 3, "bias"),)
    rw = tr.rec(w)
    tie(tr.rec(x1).spaces[-1], rw.spaces[1])
    tie(tr.rec(x2).spaces[-1], rw.spaces[2])
    if b is not None:
        tie(rw.spaces[0], tr.rec(b).spaces[0])
    tr.set(call.out, tr.rec(x1).spaces[:-1] + [rw.spaces[0]])


def _grouped(s: Space, g: int, n: int) -> tuple[Space, Space]:
    """Split an ``n``-wide channel space into (groups, per-group) spaces."""
    if g == 1:
        return Space(1), s
    if n == g:
        return s, Space(1)
    group, per = refine(s, "prod", [g, n // g])
    return group, per


@rule("conv1d", "conv2d", "conv3d")
def conv(tr: Tracer, call: OpCall) -> None:
    x, w, b = call.args[0], arg(call, 1, "weight"), arg(call, 2, "bias")
    g = int(arg(call, 6, "groups", 1))
    rx, rw = tr.rec(x), tr.rec(w)
    c = 1 if x.dim() == w.dim() else 0
    cin, cout = x.shape[c], w.shape[0]
    g_in, per_in = _grouped(rx.spaces[c], g, cin)
    tie(per_in, rw.spaces[1])
    if g > 1:
        g_out, _ = _grouped(rw.spaces[0], g, cout)
        tie(g_in, g_out)
        _sync_groups(tr, call, g_in)
    if b is not None:
        tie(rw.spaces[0], tr.rec(b).spaces[0])
        role(tr, b, 0, "out")
    role(tr, w, 0, "out")
    role(tr, w, 1, "in")
    out = call.out
    _kernel(rw.spaces[2:])
    tr.set(out, rx.spaces[:c] + [rw.spaces[0]] + _spatial(out.shape[c + 1:]))


def _kernel(spaces: list[Space]) -> None:
    for s in spaces:
        block(s, "kernel")


def _spatial(shape) -> list[Space]:
    out = [Space(n) for n in shape]
    for s in out:
        block(s, "spatial")
    return out


def _sync_groups(tr: Tracer, call: OpCall, group: Space) -> None:
    mod = tr.modules.get(call.module)
    if mod is not None and getattr(mod, "groups", None) == group.size:
        tr.state.syncs.append((call.module, "groups", [group]))
    else:
        block(group, f"groups fixed in code in {call.module or '<model>'}")


@rule("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def conv_transpose(tr: Tracer, call: OpCall) -> None:
    x, w, b = call.args[0], arg(call, 1, "weight"), arg(call, 2, "bias")
    g = int(arg(call, 6, "groups", 1))
    rx, rw = tr.rec(x), tr.rec(w)
    c = 1 if x.dim() == w.dim() else 0
    tie(rx.spaces[c], rw.spaces[0])
    if g > 1:
        g_in, _ = _grouped(rw.spaces[0], g, w.shape[0])
        _sync_groups(tr, call, g_in)
        out_c = prod_space([g_in, rw.spaces[1]]) if w.shape[1] > 1 else g_in
    else:
        out_c = rw.spaces[1]
    if b is not None:
        tie(out_c, tr.rec(b).spaces[0])
        role(tr, b, 0, "out")
    role(tr, w, 0, "in")
    role(tr, w, 1, "out")
    out = call.out
    _kernel(rw.spaces[2:])
    tr.set(out, rx.spaces[:c] + [out_c] + _spatial(out.shape[c + 1:]))


@rule("prelu")
def prelu(tr: Tracer, call: OpCall) -> None:
    x, w = call.args[0], arg(call, 1, "weight")
    rx = tr.rec(x)
    if w.numel() > 1:
        tie(rx.spaces[1 if x.dim() > 1 else 0], tr.rec(w).spaces[0])
        role(tr, w, 0, "out")
    tr.set(call.out, list(rx.spaces))


@rule("batch_norm", "instance_norm")
def batch_norm(tr: Tracer, call: OpCall) -> None:
    x = call.args[0]
    rx = tr.rec(x)
    c = rx.spaces[1] if x.dim() > 1 else rx.spaces[0]
    for i, key in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")):
        t = arg(call, i, key)
        if isinstance(t, torch.Tensor):
            tie(c, tr.rec(t).spaces[0])
            role(tr, t, 0, "out")
    tr.set(call.out, list(rx.spaces))


@rule("layer_norm", "rms_norm")
def layer_norm(tr: Tracer, call: OpCall) -> None:
    x = call.args[0]
    shape = list(arg(call, 1, "normalized_shape"))
    rx = tr.rec(x)
    norm = rx.spaces[x.dim() - len(shape):]
    for key, i in (("weight", 2), ("bias", 3)):
        if call.name == "rms_norm" and key == "bias":
            continue
        t = arg(call, i, key)
        if isinstance(t, torch.Tensor):
            for s, ws in zip(norm, tr.rec(t).spaces):
                tie(s, ws)
            for d in range(t.dim()):
                role(tr, t, d, "out")
    for s in norm:
        find(s).tags.add("norm")
    mod = tr.modules.get(call.module)
    if mod is not None and tuple(getattr(mod, "normalized_shape", ())) == tuple(shape):
        tr.state.syncs.append((call.module, "normalized_shape", list(norm)))
    else:
        for s in norm:
            block(s, f"{call.name} with a fixed shape in {call.module or '<model>'}")
    tr.set(call.out, list(rx.spaces))


@rule("group_norm")
def group_norm(tr: Tracer, call: OpCall) -> None:
    x, g = call.args[0], int(arg(call, 1, "num_groups"))
    rx = tr.rec(x)
    c = rx.spaces[1]
    for key, i in (("weight", 2), ("bias", 3)):
        t = arg(call, i, key)
        if isinstance(t, torch.Tensor):
            tie(c, tr.rec(t).spaces[0])
            role(tr, t, 0, "out")
    group, per = _grouped(c, g, x.shape[1])
    find(per).tags.add("norm")
    if g > 1:
        mod = tr.modules.get(call.module)
        if mod is not None and getattr(mod, "num_groups", None) == g:
            tr.state.syncs.append((call.module, "num_groups", [group]))
        else:
            block(group, f"group_norm groups fixed in code in {call.module or '<model>'}")
    tr.set(call.out, list(rx.spaces))


@rule("embedding")
def embedding(tr: Tracer, call: OpCall) -> None:
    idx, w = call.args[0], arg(call, 1, "weight")
    rw = tr.rec(w)
    block(rw.spaces[0], "embedding rows are token ids")
    role(tr, w, 1, "out")
    tr.set(call.out, list(tr.rec(idx).spaces) + [rw.spaces[1]])


@rule("embedding_bag")
def embedding_bag(tr: Tracer, call: OpCall) -> None:
    w = arg(call, 1, "weight")
    rw = tr.rec(w)
    block(rw.spaces[0], "embedding rows are token ids")
    role(tr, w, 1, "out")
    out = call.out[0] if isinstance(call.out, tuple) else call.out
    tr.set(out, [Space(out.shape[0]), rw.spaces[1]])


def _matmul(tr: Tracer, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    ra, rb = tr.rec(a), tr.rec(b)
    sa, sb = list(ra.spaces), list(rb.spaces)
    va, vb = a.dim() == 1, b.dim() == 1
    if va:
        sa = [Space(1)] + sa
    if vb:
        sb = sb + [Space(1)]
    k = tie(sa[-1], sb[-2])
    batch_a, batch_b = sa[:-2], sb[:-2]
    n = max(len(batch_a), len(batch_b))
    batch = []
    shape_a = (1,) * (n - len(batch_a)) + tuple(a.shape[:-2] if not va else ())
    shape_b = (1,) * (n - len(batch_b)) + tuple(b.shape[:-2] if not vb else ())
    for i in range(n):
        ia, ib = i - (n - len(batch_a)), i - (n - len(batch_b))
        cand = [batch_a[ia]] * (ia >= 0 and shape_a[i] != 1) + [batch_b[ib]] * (ib >= 0 and shape_b[i] != 1)
        s = cand[0] if cand else Space(1)
        for c in cand[1:]:
            s = tie(s, c)
        batch.append(s)
    activations = not ra.from_param and not rb.from_param
    if activations:
        find(k).tags.add("qk")
        for s in batch:
            find(s).tags.add("head")
    else:
        for r, t in ((ra, a), (rb, b)):
            if r.param is not None and t.dim() == 2:
                tr.state.roles[(r.param, 0)] = "in" if r is rb else "out"
                tr.state.roles[(r.param, 1)] = "out" if r is rb else "in"
    spaces = batch + ([] if va else [sa[-2]]) + ([] if vb else [sb[-1]])
    tr.set(out, spaces)


@rule("matmul", "__matmul__", "mm", "bmm")
def matmul(tr: Tracer, call: OpCall) -> None:
    _matmul(tr, call.args[0], call.args[1], call.out)


@rule("__rmatmul__")
def rmatmul(tr: Tracer, call: OpCall) -> None:
    _matmul(tr, call.args[1], call.args[0], call.out)


@rule("addmm", "baddbmm", "addbmm")
def addmm(tr: Tracer, call: OpCall) -> None:
    bias, a, b = call.args[0], call.args[1], call.args[2]
    _matmul(tr, a, b, call.out)
    tr.set(call.out, broadcast(tr, [bias, call.out], call.out))
    if tr.rec(bias).param is not None:
        role(tr, bias, bias.dim() - 1, "out")


@rule("einsum")
def einsum(tr: Tracer, call: OpCall) -> None:
    eq = call.args[0].replace(" ", "")
    ops = list(call.args[1]) if len(call.args) == 2 and isinstance(call.args[1], (list, tuple)) else list(call.args[1:])
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if "..." in eq or len(terms) != len(ops):
        raise unhandled("einsum with ellipsis")
    if not _:
        letters = [c for t in terms for c in t]
        rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    space_of: dict[str, Space] = {}
    for t, o in zip(terms, ops):
        ro = tr.rec(o)
        for c, s, n in zip(t, ro.spaces, o.shape):
            if n == 1:
                continue
            space_of[c] = tie(space_of[c], s) if c in space_of else s
    activations = len(ops) > 1 and not any(tr.rec(o).from_param for o in ops)
    if activations:
        for c, s in space_of.items():
            in_all = all(c in t for t in terms)
            if c not in rhs:
                find(s).tags.add("qk")
            elif in_all:
                find(s).tags.add("head")
    tr.set(call.out, [space_of.get(c) or Space(n) for c, n in zip(rhs, call.out.shape)])


@rule("scaled_dot_product_attention")
def sdpa(tr: Tracer, call: OpCall) -> None:
    q, k, v = call.args[:3]
    rq, rk, rv = tr.rec(q), tr.rec(k), tr.rec(v)
    nb = q.dim() - 2
    batch = []
    for i in range(nb):
        sq, sk, sv = rq.spaces[i], rk.spaces[i], rv.spaces[i]
        if q.shape[i] != k.shape[i] and i == nb - 1 and k.shape[i] > 1:  # grouped-query attention
            kv, rep = refine(sq, "prod", [k.shape[i], q.shape[i] // k.shape[i]])
            tie(kv, sk)
            find(rep).tags.add("head")
        elif k.shape[i] != 1 and q.shape[i] != 1:
            tie(sq, sk)
        if k.shape[i] == v.shape[i] and k.shape[i] != 1:
            tie(sk, sv)
        find(sq).tags.add("head")
        batch.append(sq)
    e = tie(rq.spaces[-1], rk.spaces[-1])
    find(e).tags.add("qk")
    tie(rk.spaces[-2], rv.spaces[-2])
    mask = arg(call, 3, "attn_mask")
    if isinstance(mask, torch.Tensor):
        rm = tr.rec(mask)
        target = batch + [rq.spaces[-2], rk.spaces[-2]]
        for j in range(1, mask.dim() + 1):
            if mask.shape[-j] != 1 and mask.shape[-j] == [*q.shape[:-1], k.shape[-2]][-j]:
                tie(rm.spaces[-j], target[-j])
    tr.set(call.out, batch + [rq.spaces[-2], rv.spaces[-1]])
