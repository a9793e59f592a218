"""Products of activations and attention: matmul/einsum (q.k and attn.v), SDPA, nn.MultiheadAttention."""
from __future__ import annotations

import torch
from torch import nn

from ..space import Space, find, prod_space, refine
from ..tracer import OpCall, Tracer, tie, unhandled
from .base import arg, broadcast, rule
from .layers import role
from .shape import _pieces


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
    tr.contract(qd)  # surgery swaps in SlimMultiheadAttention once head_dim shrinks
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


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when ``a`` and ``b`` view the same elements (``x.transpose(1, 2) @ x``), not two slices (q, k)."""
    try:
        return (a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
                and a.storage_offset() == b.storage_offset())
    except (RuntimeError, NotImplementedError):
        return False


def _matmul(tr: Tracer, call: OpCall, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor,
            reduce_batch: bool = False) -> None:
    """Tie the spaces of ``a @ b`` (broadcast batch dims, either side 1-D) and give ``out`` its spaces."""
    ra, rb = tr.rec(a), tr.rec(b)
    sa, sb = list(ra.spaces), list(rb.spaces)
    va, vb = a.dim() == 1, b.dim() == 1
    if va:
        sa = [Space(1)] + sa
    if vb:
        sb = sb + [Space(1)]
    itself = _same_memory(a, b)
    k = tie(sa[-1], sb[-2])
    batch_a, batch_b = sa[:-2], sb[:-2]
    shape_a, shape_b = ([] if va else list(a.shape[:-2])), ([] if vb else list(b.shape[:-2]))
    n = max(len(batch_a), len(batch_b))
    batch = []
    for i in range(n):
        cand = []
        for spaces, shape in ((batch_a, shape_a), (batch_b, shape_b)):
            j = i - (n - len(spaces))
            if j >= 0 and shape[j] != 1:
                cand.append(spaces[j])
        s = cand[0] if cand else Space(1)
        for c in cand[1:]:
            s = tie(s, c)
        batch.append(s)
    activations = not ra.from_param and not rb.from_param
    if activations:
        tr.contract(k, f"{call.name} contracts an activation's channels with themselves (x^T x: a Gram "
                       "matrix or distance, whose meaning needs every channel)" if itself else None)
        for s in batch:
            find(s).tags.add("head")
    else:
        # A weight (or its transpose, as in ``x @ self.weight.T``) is [out, in] on the left, [in, out] on the right.
        if a.dim() == 2 and ra.from_param:
            tr.role(ra.spaces[0], "out")
            tr.role(ra.spaces[1], "in")
        if b.dim() == 2 and rb.from_param:
            tr.role(rb.spaces[0], "in")
            tr.role(rb.spaces[1], "out")
    if reduce_batch:
        for s in batch:
            find(s).tags.add("norm")
        batch = []
    spaces = batch + ([] if va else [sa[-2]]) + ([] if vb else [sb[-1]])
    tr.set(out, spaces)


@rule("matmul", "__matmul__", "mm", "bmm")
def matmul(tr: Tracer, call: OpCall) -> None:
    other = "other" if call.name in ("matmul", "__matmul__") else "mat2"
    _matmul(tr, call, arg(call, 0, "input"), arg(call, 1, other), call.out)


@rule("__rmatmul__")
def rmatmul(tr: Tracer, call: OpCall) -> None:
    _matmul(tr, call, call.args[1], call.args[0], call.out)


@rule("addmm", "baddbmm", "addbmm")
def addmm(tr: Tracer, call: OpCall) -> None:
    first, second = ("mat1", "mat2") if call.name == "addmm" else ("batch1", "batch2")
    bias, a, b = arg(call, 0, "input"), arg(call, 1, first), arg(call, 2, second)
    _matmul(tr, call, a, b, call.out, reduce_batch=call.name == "addbmm")
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
                tr.contract(s)
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
            _sync_repeats(tr, call, rep)
        elif k.shape[i] != 1 and q.shape[i] != 1:
            tie(sq, sk)
        if k.shape[i] == v.shape[i] and k.shape[i] != 1:
            tie(sk, sv)
        find(sq).tags.add("head")
        batch.append(_broadcast_dim(call.out.shape[i], sq, sk, sv))
    e = tie(rq.spaces[-1], rk.spaces[-1])
    tr.contract(e)
    tie(rk.spaces[-2], rv.spaces[-2])
    mask = arg(call, 3, "attn_mask")
    if isinstance(mask, torch.Tensor):
        rm = tr.rec(mask)
        target = batch + [rq.spaces[-2], rk.spaces[-2]]
        for j in range(1, mask.dim() + 1):
            if mask.shape[-j] != 1 and mask.shape[-j] == [*q.shape[:-1], k.shape[-2]][-j]:
                tie(rm.spaces[-j], target[-j])
    tr.set(call.out, batch + [rq.spaces[-2], rv.spaces[-1]])


def _broadcast_dim(n: int, *spaces: Space) -> Space:
    """The space of an output batch dim of size ``n``: the query's, unless the query broadcasts over it (one
    learned query set attending to a batch of key/value windows): then the keys' or values'."""
    return next((s for s in spaces if find(s).size == n), None) or Space(n)


# Attributes holding the query heads per key/value head, which eager attention reads (``repeat_kv``).
REPEAT_ATTRS = ("num_key_value_groups", "n_rep")


def _sync_repeats(tr: Tracer, call: OpCall, rep: Space) -> None:
    """Grouped-query SDPA (``enable_gqa``) never reads the repeat count, but the same module run eagerly
    (or with a padding mask) does: the attribute follows the query-per-key/value-head group either way,
    so the plan, and the pruned model, are the same whichever attention path the trace took."""
    mod = tr.modules.get(call.module)
    for attr in REPEAT_ATTRS:
        v = vars(mod).get(attr) if mod is not None else None
        if isinstance(v, int) and int(v) == find(rep).size:
            tr.follow(v, rep)
