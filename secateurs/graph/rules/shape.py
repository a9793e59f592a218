"""Shape ops: views and reshapes (products), concatenations and splits, permutes, indexing."""
from __future__ import annotations

import collections
import itertools
import math

import torch

from ..sizes import Size, Sum
from ..space import (
    Incompatible,
    Space,
    block,
    cat_space,
    find,
    leaf_factors,
    prod_space,
    refine,
    regroup,
)
from ..tracer import OpCall, Tracer, _Unhandled, tie, unhandled
from .base import _dim, arg, broadcast_shape, rule, tie_index_dims


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
    for i, (v, s) in enumerate(zip(target, new)):
        if isinstance(v, int) and v != -1 and v > 1:
            whole = _whole(s, getattr(v, "div", 1), rx.spaces + new)
            if whole is None and isinstance(v, Size) and v.space is not None:
                whole = _split_origin(v, s, new[i - 1] if i else None)
            if whole is not None and tr.follow(v, whole):
                continue  # the size is read from a shape or an attribute: it follows its origin
            # A size passed through unchanged, with no -1 beside it, fails loudly if it goes stale.
            tr.literal(s, v, call.module, loose=not has_free and _key(s) in in_keys)


def _key(s: Space) -> tuple:
    return tuple(id(f) for f in leaf_factors(s))


def _split_origin(v: Size, s: Space, before: Space | None) -> Space | None:
    """``C // k`` sizing ``s`` right after a dimension of size k (``reshape(B, N, 3, heads, C // heads)``):
    C is (k x s)."""
    if before is None or find(before).size != v.div:
        return None
    return prod_space([before, s])


def _whole(s: Space, div: int, candidates: list[Space]) -> Space | None:
    """The space ``s`` is the 1/``div`` part of: ``s`` itself, or a product among ``candidates``
    with ``s`` as a factor (``view(B, heads, C // heads, ...)`` splits C into heads x C // heads),
    or a concatenation of ``div`` copies of ``s`` (equal split pieces tied together)."""
    if div == 1:
        return s
    r, mine = find(s), [id(f) for f in leaf_factors(s)]
    for c in candidates:
        rc = find(c)
        if rc.size != r.size * div:
            continue
        theirs = [id(f) for f in leaf_factors(rc)]
        if theirs[:len(mine)] == mine or theirs[len(theirs) - len(mine):] == mine or (
                rc.kind == "cat" and len(rc.children) == div and all(find(ch) is r for ch in rc.children)):
            return rc
    return None


@rule("view", "reshape", "_unsafe_view", "view_as", "reshape_as")
def view(tr: Tracer, call: OpCall) -> None:
    x, out = call.args[0], call.out
    if not isinstance(out, torch.Tensor):
        return
    if call.name in ("view_as", "reshape_as"):
        return reshape_to(tr, call, x, out, None)
    target = [_int_of(v) for v in _sizes(call)]
    if target and not isinstance(target[0], int):  # view(dtype)
        if out.shape != x.shape:
            raise unhandled("view as a different dtype changes the shape")
        tr.set(out, list(tr.rec(x).spaces))
        return
    reshape_to(tr, call, x, out, target)


def _int_of(v: object) -> object:
    """A size given as a 0-d integer tensor (``h // crop`` of an image size read from an input) as the
    plain int it holds: a number the code does not know ahead, so it sizes its dim as one fixed in code."""
    if isinstance(v, torch.Tensor) and v.dim() == 0 and not v.is_floating_point() and v.dtype != torch.bool:
        return int(v)
    return v


@rule("flatten")
def flatten(tr: Tracer, call: OpCall) -> None:
    reshape_to(tr, call, call.args[0], call.out, None)


@rule("unflatten")
def unflatten(tr: Tracer, call: OpCall) -> None:
    x = arg(call, 0, "input")
    d = _dim(arg(call, 1, "dim"), x.dim())
    sizes = list(arg(call, 2, "sizes"))
    target = [-1] * d + sizes + [-1] * (x.dim() - d - 1)
    reshape_to(tr, call, x, call.out, target)


@rule("permute")
def permute(tr: Tracer, call: OpCall) -> None:
    x = arg(call, 0, "input")
    dims = _sizes(call) if "dims" not in call.kwargs else list(call.kwargs["dims"])
    rx = tr.rec(x)
    tr.set(call.out, [rx.spaces[_dim(d, x.dim())] for d in dims], rx.from_param)


@rule("transpose", "swapaxes", "swapdims", "t", "movedim", "moveaxis", "T", "mT")
def transpose(tr: Tracer, call: OpCall) -> None:
    x = arg(call, 0, "input")
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


@rule("contiguous", "clone", "detach", "to", "float", "half", "double", "bfloat16", "bool", "int", "long", "type",
      "cpu", "cuda", "requires_grad_", "type_as", "detach_", "__deepcopy__", "as_subclass", "alias")
def identity(tr: Tracer, call: OpCall) -> None:
    x = arg(call, 0, "input")
    if isinstance(call.out, torch.Tensor) and isinstance(x, torch.Tensor) and call.out.shape == x.shape:
        rx = tr.rec(x)
        tr.set(call.out, list(rx.spaces), rx.from_param)


@rule("view_as_complex", "view_as_real")
def complex_view(tr: Tracer, call: OpCall) -> None:
    """Pairs of reals as complex numbers and back (DeepSeek-V2's rotary embedding): the last dim of 2 (real,
    imaginary) goes or comes; it is no channel dimension."""
    x, out = arg(call, 0, "input"), call.out
    rx = tr.rec(x)
    if call.name == "view_as_complex":
        block(rx.spaces[-1], f"real and imaginary parts in {call.module or '<model>'}")
        tr.set(out, list(rx.spaces[:-1]), rx.from_param)
    else:
        pair = Space(2)
        block(pair, f"real and imaginary parts in {call.module or '<model>'}")
        tr.set(out, list(rx.spaces) + [pair], rx.from_param)


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
            v = target[lead + i] if target is not None else None
            if isinstance(v, int) and not tr.follow(v, new):
                tr.literal(new, v, call.module)
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


@rule("repeat_interleave")
def repeat_interleave(tr: Tracer, call: OpCall) -> None:
    """Each index of ``dim`` repeated r times in a row: the dim becomes (dim x r), r fixed."""
    x, reps, d = arg(call, 0, "input"), arg(call, 1, "repeats"), arg(call, 2, "dim")
    if not isinstance(x, torch.Tensor) or d is None or not isinstance(reps, int):
        raise unhandled("repeat_interleave without a dim or with per-index repeats")
    rx = tr.rec(x)
    d = _dim(d, x.dim())
    tile = Space(int(reps))
    block(tile, "repeat count")
    spaces = list(rx.spaces)
    spaces[d] = prod_space([spaces[d], tile])
    tr.set(call.out, spaces)


@rule("__getitem__")
def getitem(tr: Tracer, call: OpCall) -> None:
    x, idx, out = call.args[0], call.args[1], call.out
    rx = tr.rec(x)
    where = call.module or "<model>"
    if isinstance(idx, torch.Tensor) and idx.dtype != torch.bool:  # table[index]: gathers rows
        block(rx.spaces[0], f"rows gathered by an index tensor in {where}")
        tr.set(out, [Space(n) for n in idx.shape] + rx.spaces[1:])
        return
    if isinstance(idx, torch.Tensor) and 0 < idx.dim() <= x.dim() and idx.shape == x.shape[:idx.dim()] \
            and out.dim() > 0:  # x[mask]: a boolean mask over x's leading dims
        tr.set(out, _masked_rows(tr, x, idx, out, where), rx.from_param)
        return
    items = list(idx) if isinstance(idx, tuple) else [idx]
    if any(isinstance(i, torch.Tensor) for i in items) or sum(isinstance(i, list) for i in items) > 1:
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
            tr.block_on_use(out, s, f"indexing a single position in {where}")
        elif isinstance(i, slice):
            if i == slice(None) or (i.start in (None, 0) and i.step in (None, 1) and i.stop is not None
                                    and i.stop >= x.shape[d]):
                spaces.append(s)
            else:
                spaces.append(_slice(tr, s, i, x.shape[d], where))
        elif isinstance(i, list):  # one list index: its dim stays in place
            spaces.append(_picked(s, i, x.shape[d], where))
        else:
            raise unhandled(f"index of type {type(i).__name__}")
        d += 1
    tr.set(out, spaces, rx.from_param)


def _masked_rows(tr: Tracer, x: torch.Tensor, mask: torch.Tensor, out: torch.Tensor, where: str) -> list[Space]:
    """``x[mask]``, a boolean mask over x's first k dims: the selected places, in order, make one dim (a
    data-dependent count), x's other dims follow unchanged. The dims the mask varies along (and the first)
    are picked by the data: pinned once the result's values are used (a ``numel()`` check leaves them free).
    Trailing masked dims along which the mask is the same (a per-token mask expanded over the channels:
    Hugging Face's placeholder check ``inputs_embeds[mask].numel()``) go whole into that dim, (rows x
    channels), and stay prunable."""
    k = mask.dim()
    rx, rm = tr.rec(x), tr.rec(mask)
    j = k
    while j > 1 and bool((mask == mask.narrow(j - 1, 0, 1)).all()):
        j -= 1
    why = f"positions selected by a boolean mask in {where}"
    for d in range(k):
        s = rx.spaces[d]
        try:
            s = tie(s, rm.spaces[d])
        except Incompatible:
            block(rm.spaces[d], why)
        if d < j:
            tr.block_on_use(out, s, why)
    whole = math.prod(x.shape[j:k])
    rows = Space(out.shape[0] // whole if whole else 0)
    block(rows, why)
    return [prod_space([rows] + list(rx.spaces[j:k]))] + list(rx.spaces[k:])


def _slice(tr: Tracer, s: Space, i: slice, n: int, where: str) -> Space:
    """``x[a:b]`` along a dim: the dim becomes pieces [0:a] + [a:b] + [b:n] and the output is [a:b].

    Literal bounds pin the pieces before them ([0:a], and [a:b] when b < n); the tail [b:n] is
    dropped by the slice and stays prunable, and [a:n] follows its channels. A bound read from a
    shape or an attribute follows its origin instead.
    """
    start, stop, step = i.indices(n)
    if step > 1 and n % step == 0 and start < step and len(range(start, stop, step)) == n // step:
        parts = regroup([s], [n // step, step])  # x[..., 1::2]: one position of every (n / step, step) pair
        if parts is not None:
            block(parts[1], f"stride index in {where}")
            return parts[0]
    if step != 1 or stop <= start:
        block(s, f"strided slice of a dimension in {where}")
        out = Space(len(range(start, stop, step)))
        block(out, f"strided slice of a dimension in {where}")
        return out
    sizes = [m for m in (start, stop - start, n - stop) if m]
    try:
        pieces = _pieces(s, sizes)
    except (Incompatible, _Unhandled):
        block(s, f"slicing part of a dimension in {where}")
        out = Space(stop - start)
        block(out, f"slicing part of a dimension in {where}")
        return out
    head = pieces.pop(0) if start else None
    mid = pieces[0]
    if _from_end(i.start):  # x[-k:]: the last k positions, whatever the dimension loses before them
        if head is not None:  # (k at least the whole dimension keeps taking all of it)
            block(mid, f"slice start counted from the end in {where}")
    elif head is not None and not tr.follow(i.start, head):
        block(head, f"slice start fixed in code in {where}")
    if stop < n and _from_end(i.stop):  # x[:-k]: all but the last k
        block(pieces[1], f"slice end counted from the end in {where}")
    elif stop < n and not tr.follow(i.stop, mid if head is None else cat_space([head, mid])):
        block(mid, f"slice end fixed in code in {where}")  # the end sizes [0:b]: what [0:a] and [a:b] keep
    return mid


def _from_end(bound: object) -> bool:
    """A slice bound written as a negative int: it counts positions from the end of the dimension."""
    return isinstance(bound, int) and not isinstance(bound, bool) and bound < 0


def _picked(s: Space, idx: list, n: int, where: str) -> Space:
    """``x[..., [-2]]``: positions picked by a list of ints. Positions counted from the end fix only the
    tail they reach into (Falcon's multi-query key and value after its query heads), positions from the
    start only the head; the rest of the dimension stays prunable. The output dim is fixed."""
    if not idx or not all(isinstance(j, int) and not isinstance(j, bool) for j in idx):
        raise unhandled("advanced (tensor) indexing")
    if all(j < 0 for j in idx):
        k, last = -min(idx), True
    elif all(j >= 0 for j in idx):
        k, last = max(idx) + 1, False
    else:
        raise unhandled("a list index mixing positions from the start and from the end")
    why = f"positions picked by a list index in {where}"
    sizes = [n - k, k] if last else [k, n - k]
    try:
        pieces = _pieces(s, sizes) if k < n else [s]
    except (Incompatible, _Unhandled):
        pieces = [s]
    block(pieces[-1] if last else pieces[0], why)
    out = Space(len(idx))
    block(out, why)
    return out


@rule("chunk", "split", "split_with_sizes", "tensor_split", "unsafe_split", "unsafe_chunk")
def split(tr: Tracer, call: OpCall) -> None:
    x = arg(call, 0, "input")
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
        spec = arg(call, 1, "split_size_or_sections")
        if spec is None:
            spec = call.kwargs.get("split_size", call.kwargs.get("split_sizes"))
        if isinstance(spec, int):
            full = [p for p, n in zip(pieces, sizes) if n == spec]
            for p in pieces[len(full):]:
                block(p, f"uneven split in {call.module or '<model>'}")
            _tie_all(full)
            whole = rx.spaces[d] if len(full) == len(pieces) == getattr(spec, "div", 1) else full[0] if full else None
            if full and not (whole is not None and tr.follow(spec, whole)):
                tr.literal(full[0], spec, call.module)
        else:
            spec = list(spec)
            for i, (p, n, v) in enumerate(zip(pieces, sizes, spec)):
                if isinstance(v, Sum) and _follow_rest(tr, v, i, spec, rx.spaces[d]):
                    continue
                if not tr.follow(v, p):
                    tr.literal(p, v if isinstance(v, int) else n, call.module, strict=True)
    for o, p in zip(outs, pieces):
        sp = list(rx.spaces)
        sp[d] = p
        tr.set(o, sp, rx.from_param)


@rule("glu")
def glu(tr: Tracer, call: OpCall) -> None:
    """``glu(x, dim)`` = first half of ``dim`` times the sigmoid of the second: the halves are tied (a channel
    goes with its gate) and the output is the first half."""
    x, out = arg(call, 0, "input"), call.out
    d = _dim(arg(call, 1, "dim", -1), x.dim())
    rx = tr.rec(x)
    values, gates = _pieces(rx.spaces[d], [out.shape[d]] * 2)
    tie(values, gates)
    sp = list(rx.spaces)
    sp[d] = values
    tr.set(out, sp, rx.from_param)


def _follow_rest(tr: Tracer, v: Sum, i: int, spec: list, whole: Space) -> bool:
    """Piece ``i`` of a split sized ``a - b - ...`` where ``b, ...`` are the other pieces' sizes (as
    ``[self.pdim, self.dim - self.pdim]``): with ``a`` following the whole split dimension, the
    difference is what the other pieces leave of it, whatever each loses (a plain int among the
    other sizes pins its piece, and stays)."""
    pos = [t for c, t in v.terms if c == 1]
    others = [e for j, e in enumerate(spec) if j != i]
    if len(pos) != 1 or any(isinstance(e, Sum) or not isinstance(e, int) for e in others):
        return False
    tracked = [e for e in others if isinstance(e, Size)]
    if collections.Counter(t.key() for c, t in v.terms if c == -1) != collections.Counter(e.key() for e in tracked):
        return False
    if v.const != -sum(int(e) for e in others if not isinstance(e, Size)):
        return False
    return tr.follow(pos[0], whole)


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
        children, out, acc, cur = _cut_children(r, sizes), [], [], 0
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


def _cut_children(r: Space, sizes: list[int]) -> list[Space]:
    """The pieces of the concatenation ``r``, each piece that a boundary of ``sizes`` falls inside split
    there (Phi-3's fused qkv sliced [:q], then [q:q+k] and [q+k:], cuts the first slice's tail in two)."""
    cuts, out, pos = set(itertools.accumulate(sizes)), [], 0
    for c in (find(c) for c in r.children):
        inner = sorted(b - pos for b in cuts if pos < b < pos + c.size)
        out.extend(_pieces(c, [b - a for a, b in zip([0] + inner, inner + [c.size])]) if inner else [c])
        pos += c.size
    return out


def _tie_all(spaces: list[Space]) -> None:
    for p in spaces[1:]:
        tie(spaces[0], p)


@rule("unbind")
def unbind(tr: Tracer, call: OpCall) -> None:
    x = arg(call, 0, "input")
    d = _dim(arg(call, 1, "dim", 0), x.dim())
    rx = tr.rec(x)
    block(rx.spaces[d], f"unbind index in {call.module or '<model>'}")
    for o in call.out:
        tr.set(o, rx.spaces[:d] + rx.spaces[d + 1:], rx.from_param)


@rule("select", "narrow")
def select(tr: Tracer, call: OpCall) -> None:
    x = arg(call, 0, "input")
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


@rule("gather")
def gather(tr: Tracer, call: OpCall) -> None:
    """``gather(x, d, index)``: positions along ``d`` are picked by the index (DeBERTa's relative attention).

    The output is shaped like the index; every other dim is the same channels in x, index and output
    when their sizes agree (x's extra rows are never read, so a narrower index pins them).
    """
    x, index = arg(call, 0, "input"), arg(call, 2, "index")
    d = _dim(arg(call, 1, "dim"), x.dim())
    rx, ri = tr.rec(x), tr.rec(index)
    where = call.module or "<model>"
    block(rx.spaces[d], f"positions gathered by an index tensor in {where}")
    tr.set(call.out, tie_index_dims(x, index, rx, ri, d, f"gather reads part of a dimension in {where}"))


@rule("scatter_reduce", "scatter_reduce_", "scatter_add", "scatter_add_")
def scatter_reduce(tr: Tracer, call: OpCall) -> None:
    """``x.scatter_reduce(d, index, src, reduce)``: ``src``'s positions along ``d`` are pooled into the positions
    of ``x`` the index holds (BLT's patch pooling). Both ``d`` dims are positions the index's values address,
    so pinned; every other dim is the same channels in x, index, src and output when their sizes agree."""
    x, index, src = arg(call, 0, "input"), arg(call, 2, "index"), arg(call, 3, "src")
    d = _dim(arg(call, 1, "dim"), x.dim())
    rx, ri = tr.rec(x), tr.rec(index)
    where = call.module or "<model>"
    block(rx.spaces[d], f"positions written by an index tensor in {where}")
    block(ri.spaces[d], f"positions written by an index tensor in {where}")
    spaces = tie_index_dims(x, index, rx, ri, d, f"{call.name} writes part of a dimension in {where}")
    if not isinstance(src, torch.Tensor) or src.shape != index.shape:
        raise unhandled(f"{call.name} with a source shaped unlike its index")
    for a, b in zip(tr.rec(src).spaces, spaces):
        tie(a, b)
    tr.set(call.out, list(rx.spaces))


@rule("masked_scatter", "masked_scatter_")
def masked_scatter(tr: Tracer, call: OpCall) -> None:
    """``x.masked_scatter(mask, source)``: source's values, in order, fill the masked places of x (a
    vision-language model's image features written over the image tokens' embeddings).

    The output keeps x's channels. When the mask selects whole rows of x's last dim and source's last
    dim has that width, source's last dim is the same channels (the image features' width follows the
    text embeddings'); the positions source fills are read in order, so its other dims stay whole.
    """
    x, mask, source = arg(call, 0, "input"), arg(call, 1, "mask"), arg(call, 2, "source")
    where = f"masked_scatter in {call.module or '<model>'}"
    rx, rs = tr.rec(x), tr.rec(source)
    m = mask.expand_as(x)
    rows = x.dim() > 0 and bool((m.all(-1) == m.any(-1)).all())
    if not rows or source.dim() == 0 or source.shape[-1] != x.shape[-1]:
        raise unhandled("masked_scatter with a mask that cuts across the last dim")
    tie(rx.spaces[-1], rs.spaces[-1])
    for s in rs.spaces[:-1]:
        block(s, where)
    rm = tr.rec(mask)
    for j in range(mask.dim()):
        k = j - mask.dim()
        if mask.shape[j] == x.shape[k] and mask.shape[j] > 1:
            tie(rx.spaces[k], rm.spaces[j])
    out = call.out if isinstance(call.out, torch.Tensor) else x
    tr.set(out, list(rx.spaces), rx.from_param)


@rule("index_put", "index_put_")
def index_put(tr: Tracer, call: OpCall) -> None:
    """``x.index_put(indices, values)``: values written at the positions index tensors name in x's leading
    dims (image features over the image tokens' embeddings, Phi-4-multimodal). Those dims are pinned (the
    indices' values are positions in them); values' trailing dims are x's remaining dims, the same channels."""
    x, indices, values = arg(call, 0, "input"), arg(call, 1, "indices"), arg(call, 2, "values")
    idx = list(indices) if isinstance(indices, (tuple, list)) else []
    if not idx or not all(isinstance(i, torch.Tensor) for i in idx) or not isinstance(values, torch.Tensor):
        raise unhandled("index_put with an index that is not a tensor per leading dim")
    if any(i.dtype == torch.bool for i in idx):
        if len(idx) != 1 or idx[0].shape != x.shape[:idx[0].dim()]:
            raise unhandled("index_put with a boolean mask that is not over x's leading dims")
        k, picked = idx[0].dim(), [int(idx[0].sum())]
    else:
        shape = broadcast_shape([i.shape for i in idx])
        if shape is None:
            raise unhandled("index_put with index tensors that do not broadcast")
        k, picked = len(idx), list(shape)
    rx, rv = tr.rec(x), tr.rec(values)
    why = f"positions written by index_put in {call.module or '<model>'}"
    for s in rx.spaces[:k]:
        block(s, why)
    target = picked + list(x.shape[k:])
    lead = len(target) - values.dim()
    if lead < 0:
        raise unhandled("index_put with values of more dims than the positions they fill")
    for j, s in enumerate(rv.spaces):
        t = lead + j
        if t >= len(picked) and values.shape[j] == target[t]:
            tie(s, rx.spaces[k + t - len(picked)])
        elif values.shape[j] > 1:
            block(s, why)
    out = call.out if isinstance(call.out, torch.Tensor) else x
    tr.set(out, list(rx.spaces), rx.from_param)


@rule("index_select")
def index_select(tr: Tracer, call: OpCall) -> None:
    """``index_select(x, d, index)``: rows of ``d`` picked by an index (a position table read at the
    sequence's positions). Dim ``d`` is pinned (its positions are the index's values); every other dim
    is the same channels in x and the output."""
    x = arg(call, 0, "input")
    d = _dim(arg(call, 1, "dim"), x.dim())
    rx = tr.rec(x)
    block(rx.spaces[d], f"positions selected by an index tensor in {call.module or '<model>'}")
    picked = Space(call.out.shape[d])
    block(picked, f"positions selected by an index tensor in {call.module or '<model>'}")
    tr.set(call.out, rx.spaces[:d] + [picked] + rx.spaces[d + 1:], rx.from_param)
