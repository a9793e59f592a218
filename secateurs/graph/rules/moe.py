"""Mixture of experts: top-k routing, histograms of the picked experts, grouped matmuls over expert weights.

Hugging Face MoE layers (Mixtral, Qwen2-MoE, Qwen3-MoE ...) keep their experts fused in 3-D
parameters (experts x out x in), pick experts with ``topk`` over a router's logits and, by default,
run them with ``torch._grouped_mm`` on the tokens sorted by expert, cut by offsets computed from a
histogram of the picked ids. The expert axis does not flow from router to experts as a tensor
dimension: the picks are *values*. So ``topk`` records that its indices point into the router's
expert space, that provenance follows the ids through reshapes, sorts and casts, a histogram of
them (``histc`` with one bin per expert) is indexed by the expert space, and ``_grouped_mm`` ties
its weights' expert dimension to the offsets'. Router rows and expert slices then form one group
of kind "expert"; each expert's hidden neurons (the inner dims of the fused weights) are channels.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..space import Space, block, cat_space, find
from ..tracer import OpCall, Tracer, tie, unhandled
from .base import RULES, _dim, arg, default, rule, tie_index_dims

# Module attributes that hold a number of experts (synced when experts go) and the number each token picks.
EXPERT_ATTRS = ("num_experts", "num_local_experts", "n_routed_experts")
TOP_K_ATTRS = ("top_k", "num_experts_per_tok")
# Router attributes of group-limited routing (DeepSeek-V3, GLM-4-MoE): experts are picked within equal groups.
GROUP_ATTRS = ("num_group", "n_group")

# Tag prefix of a space a kernel needs aligned: "align8" means kept widths must be multiples of 8 (Group.multiple).
ALIGN = "align"
# grouped_mm wants every row of its operands on 16-byte boundaries; 8 elements covers 16-bit and 32-bit floats.
GROUPED_MM_BYTES = 16

# Ops that pass index values through unchanged: routing ids keep pointing into the same space.
CARRIERS = ("view", "reshape", "flatten", "contiguous", "clone", "detach", "to", "float", "int", "long", "sort",
            "squeeze", "unsqueeze")


def _values(tr: Tracer, t: object) -> tuple[torch.Tensor, Space, str] | None:
    """The space ``t``'s values refer to, and how ("index" or "count"), when the trace knows it."""
    if not isinstance(t, torch.Tensor):
        return None
    hit = tr.state.values.get(id(t))
    if hit is not None and hit[0] is t:
        return hit
    base = getattr(t, "_base", None)  # a view of ids holds ids (iterating nonzero()'s rows makes views unseen)
    hit = tr.state.values.get(id(base)) if base is not None and base.dtype == t.dtype else None
    return (t, hit[1], hit[2]) if hit is not None and hit[0] is base and hit[2] == "index" else None


def _carrying(inner: Callable[[Tracer, OpCall], None]) -> Callable[[Tracer, OpCall], None]:
    """``inner`` (the op's channel rule), then the output keeps the input's value provenance."""
    def carry(tr: Tracer, call: OpCall) -> None:
        try:
            inner(tr, call)
        finally:
            hit = _values(tr, call.args[0] if call.args else call.kwargs.get("input"))
            out = call.out[0] if call.name == "sort" else call.out
            if hit is not None and isinstance(out, torch.Tensor):
                tr.state.values[id(out)] = (out, hit[1], hit[2])

    carry.__doc__ = inner.__doc__
    return carry


for _name in CARRIERS:
    RULES[_name] = _carrying(RULES.get(_name, default))


@rule("topk")
def topk(tr: Tracer, call: OpCall) -> None:
    """Top-k along a dim: the dim is selected among (it may shrink), its k picks are a fixed count.

    The indices point into the dim's space. The dim is marked "routed": it stays unpruned unless
    expert weights follow it (``grouped_mm``), so a router's rows never go without their experts.
    """
    x = arg(call, 0, "input")
    d = _dim(arg(call, 2, "dim", -1), x.dim())
    values, indices = call.out
    rx = tr.rec(x)
    picked = rx.spaces[d]
    find(picked).tags.update(("norm", "routed"))
    k = Space(values.shape[d])
    block(k, f"top-k count in {call.module or '<model>'}")
    spaces = rx.spaces[:d] + [k] + rx.spaces[d + 1:]
    tr.set(values, spaces)
    tr.set(indices, list(spaces))
    tr.state.values[id(indices)] = (indices, picked, "index")
    _sync_experts(tr, call, picked)


def _sync_experts(tr: Tracer, call: OpCall, picked: Space) -> None:
    """The router's expert count (an attribute equal to the picked dim's size) follows the experts kept."""
    mod = tr.modules.get(call.module)
    for attr in EXPERT_ATTRS:
        if mod is not None and isinstance(vars(mod).get(attr), int) and vars(mod)[attr] == find(picked).size:
            tr.state.syncs.append((call.module, attr, [picked]))
            _limit_groups(mod, picked, call.module)


def _limit_groups(router: torch.nn.Module, experts: Space, where: str) -> None:
    """Group-limited routing views the experts as (groups, experts per group): every group would have to lose
    as many experts as the others, which no plan expresses; one group (n_group=1) is plain top-k."""
    for attr in GROUP_ATTRS:
        n = vars(router).get(attr)
        if isinstance(n, int) and n > 1:
            block(experts, f"group-limited routing in {where} ({attr}={n}): experts stay, a plan cannot keep "
                           f"the {n} groups equal")


@rule("histc")
def histc(tr: Tracer, call: OpCall) -> None:
    """A histogram of routing picks with one bin per expert (min 0, max experts - 1) is indexed by the experts."""
    x, bins = arg(call, 0, "input"), arg(call, 1, "bins", 100)
    lo, hi = arg(call, 2, "min", 0), arg(call, 3, "max", 0)
    out = Space(call.out.shape[0])
    tr.set(call.out, [out])
    hit = _values(tr, x)
    where = call.module or "<model>"
    if hit is None or hit[2] != "index" or find(hit[1]).size != int(bins) or lo != 0 or hi != int(bins) - 1:
        block(out, f"histogram of values of unknown origin in {where}")
        return
    tie(out, hit[1])
    if not tr.follow(bins, out):
        block(out, f"number of histogram bins fixed in code in {where}")
        return
    tr.state.values[id(call.out)] = (call.out, out, "count")


_ordered = RULES["cumsum"]


@rule("cumsum")
def cumsum(tr: Tracer, call: OpCall) -> None:
    """Running totals of a per-expert count are per-expert offsets (expert order kept); else an ordering op."""
    x = arg(call, 0, "input")
    hit = _values(tr, x)
    if hit is None or hit[2] != "count" or x.dim() != 1:
        return _ordered(tr, call)
    tr.set(call.out, list(tr.rec(x).spaces))
    tr.state.values[id(call.out)] = (call.out, hit[1], "count")


def _param_dims(tr: Tracer, w: torch.Tensor) -> tuple[str, list[int]] | None:
    """The parameter ``w`` is (or is a permuted view of), and the parameter dim behind each of ``w``'s dims."""
    rw = tr.rec(w)
    if rw.param is not None:
        return rw.param, list(range(w.dim()))
    base = getattr(w, "_base", None)
    name = tr.state.names.get(id(base)) if base is not None else None
    if name is None or base.dim() != w.dim():
        return None
    rb = tr.rec(base)
    dims = [next((i for i, s in enumerate(rb.spaces) if s is ws), -1) for ws in rw.spaces]
    return (name, dims) if sorted(dims) == list(range(w.dim())) else None


@rule("_grouped_mm", "grouped_mm")
def grouped_mm(tr: Tracer, call: OpCall) -> None:
    """Tokens sorted by expert (S, K) times per-expert weights (E, K, N), cut by per-expert offsets (E)."""
    a, b = arg(call, 0, "mat_a"), arg(call, 1, "mat_b")
    offs, bias = arg(call, 2, "offs"), arg(call, 3, "bias")
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dim() == 2 and b.dim() == 3
            and isinstance(offs, torch.Tensor) and bias is None):
        raise unhandled("grouped_mm other than tokens (2-D) times per-expert weights (3-D) with offsets")
    ra, rb = tr.rec(a), tr.rec(b)
    tie(ra.spaces[1], rb.spaces[1])
    align = f"{ALIGN}{max(8, GROUPED_MM_BYTES // b.element_size())}"
    for s in (rb.spaces[1], rb.spaces[2]):
        find(s).tags.add(align)
    hit = _values(tr, offs)
    if hit is None or hit[2] != "count" or find(hit[1]).size != b.shape[0]:
        block(rb.spaces[0], f"experts cut by offsets of unknown origin in {call.module or '<model>'}")
    else:
        find(tie(rb.spaces[0], hit[1])).tags.add("expert")
    owner = _param_dims(tr, b)
    if owner is not None:
        name, dims = owner
        for d, r in zip(dims, ("out", "in", "out")):
            tr.state.roles[(name, d)] = r
    tr.set(call.out, [ra.spaces[0], rb.spaces[2]])


_gather = RULES["__getitem__"]


@rule("__getitem__")
def getitem(tr: Tracer, call: OpCall) -> None:
    """``weights[expert_ids]`` (per-token expert weights, ``batched_mm``): dim 0 is the experts the ids point into."""
    x, idx = call.args[0], call.args[1]
    hit = _values(tr, idx)
    rx = tr.rec(x) if isinstance(x, torch.Tensor) else None
    if hit is not None and hit[2] == "index" and rx is not None and not rx.from_param and x.dim() >= 1 \
            and find(rx.spaces[0]) is find(hit[1]):  # the eager loop's expert_mask[expert_idx]
        tr.set(call.out, list(tr.rec(idx).spaces) + rx.spaces[1:])
        return None
    rows = _rows(hit[1], x.shape[0]) if hit is not None and hit[2] == "index" and rx is not None and x.dim() else None
    if rows is None or not rx.from_param or x.dim() < 2:
        return _gather(tr, call)
    find(tie(rx.spaces[0], rows)).tags.add("expert")
    tr.set(call.out, list(tr.rec(idx).spaces) + rx.spaces[1:], from_param=True)
    if rx.param is not None:
        tr.state.roles[(rx.param, 0)] = "out"
        tr.state.values[id(call.out)] = (call.out, hit[1], ROWS + rx.param)


def _rows(ids: Space, n: int) -> Space | None:
    """The space of ``n`` rows that ids pointing into ``ids`` index: ``ids`` itself, or the experts before
    one_hot's extra "no expert" class (the eager loop skips that id)."""
    r = find(ids)
    if r.size == n:
        return r
    if r.kind == "cat" and r.children and find(r.children[0]).size == n:
        return find(r.children[0])
    return None


ROWS = "rows of "  # value kind of a gather of expert weights: "rows of <parameter>"
_bmm = RULES["bmm"]


@rule("bmm")
def bmm(tr: Tracer, call: OpCall) -> None:
    """A batched matmul; with gathered expert weights (S, N, K) or (S, K, N), their N and K dims are out and in."""
    _bmm(tr, call)
    for t, out_dim, in_dim in ((arg(call, 0, "input"), 1, 2), (arg(call, 1, "mat2"), 2, 1)):
        hit = _values(tr, t)
        if hit is not None and hit[2].startswith(ROWS):
            name = hit[2][len(ROWS):]
            tr.state.roles[(name, out_dim)] = "out"
            tr.state.roles[(name, in_dim)] = "in"


@rule("index_add", "index_add_", "index_copy", "index_copy_")
def index_add(tr: Tracer, call: OpCall) -> None:
    """``out.index_add_(dim, index, source)``: rows of ``source`` summed into the rows ``index`` names (tokens
    back from their experts), or copied there (``index_copy_``: frames into a cache); every other dim is
    shared, ``dim`` is indexed by position and stays as it is."""
    x, d, source = arg(call, 0, "input"), arg(call, 1, "dim"), arg(call, 3, "source")
    if not (isinstance(x, torch.Tensor) and isinstance(source, torch.Tensor) and isinstance(d, int)
            and x.dim() == source.dim()):
        raise unhandled("index_add with unexpected arguments")
    d = _dim(d, x.dim())
    rx, rs = tr.rec(x), tr.rec(source)
    where = call.module or "<model>"
    block(rx.spaces[d], f"rows added by an index tensor in {where}")
    block(rs.spaces[d], f"rows added by an index tensor in {where}")
    for i in range(x.dim()):
        if i != d:
            tie(rx.spaces[i], rs.spaces[i])
    tr.set(call.out, list(rx.spaces))


_gather_positions = RULES["gather"]


@rule("gather")
def gather(tr: Tracer, call: OpCall) -> None:
    """``scores.gather(d, ids)`` with ids that top-k picked along ``d`` itself (the weights of the picked experts):
    ids and positions are renumbered together when experts go, so ``d`` stays prunable; else positions are fixed."""
    picked = _along_picked_ids(tr, call)
    if picked is None:
        return _gather_positions(tr, call)
    x, index, rx, ri, d = picked
    tr.set(call.out, tie_index_dims(x, index, rx, ri, d,
                                    f"gather reads part of a dimension in {call.module or '<model>'}"))


def _along_picked_ids(tr: Tracer, call: OpCall) -> tuple | None:
    """``(x, index, rx, ri, d)`` when a gather/scatter's index holds ids that top-k (or max) picked along
    its own dim ``d`` of ``x``; None otherwise (positions fixed in code)."""
    x, index = arg(call, 0, "input"), arg(call, 2, "index")
    if not (isinstance(x, torch.Tensor) and isinstance(index, torch.Tensor) and x.dim() == index.dim()):
        return None
    hit = _values(tr, index)
    d = _dim(arg(call, 1, "dim"), x.dim())
    rx, ri = tr.rec(x), tr.rec(index)
    if hit is None or hit[2] != "index" or find(rx.spaces[d]) is not find(hit[1]):
        return None
    return x, index, rx, ri, d


def _picking(inner: Callable[[Tracer, OpCall], None]) -> Callable[[Tracer, OpCall], None]:
    """``inner`` (the reduction rule), then ``max(dim)``/``argmax(dim)`` indices point into the reduced dim
    (PhiMoE's sparsemixer picks experts with ``max``, not ``topk``)."""
    def pick(tr: Tracer, call: OpCall) -> None:
        inner(tr, call)
        x, d = arg(call, 0, "input"), arg(call, 1, "dim")
        out = call.out[1] if call.name == "max" and isinstance(call.out, tuple) else call.out
        if (isinstance(x, torch.Tensor) and isinstance(d, int) and isinstance(out, torch.Tensor)
                and not out.is_floating_point() and (call.name == "argmax" or isinstance(call.out, tuple))):
            picked = tr.rec(x).spaces[_dim(d, x.dim())]
            tr.state.values[id(out)] = (out, picked, "index")
            _sync_experts(tr, call, picked)

    pick.__doc__ = inner.__doc__
    return pick


for _name in ("max", "argmax"):
    RULES[_name] = _picking(RULES[_name])


@rule("scatter", "scatter_")
def scatter(tr: Tracer, call: OpCall) -> None:
    """``x.scatter(d, ids, v)`` with ids picked along ``d`` itself (sparsemixer masks its first pick): positions
    and ids are renumbered together, so ``d`` stays prunable; scatters to other positions have no rule."""
    picked = _along_picked_ids(tr, call)
    if picked is None:
        return default(tr, call)
    x, index, rx, ri, d = picked
    src = arg(call, 3, "src")
    tie_index_dims(x, index, rx, ri, d, f"scatter writes part of a dimension in {call.module or '<model>'}")
    if isinstance(src, torch.Tensor) and src.shape == index.shape:
        for a, b in zip(tr.rec(src).spaces, ri.spaces):
            tie(a, b)
    tr.set(call.out, list(rx.spaces))


_cat = RULES["cat"]


@rule("cat", "concat", "concatenate")
def cat(tr: Tracer, call: OpCall) -> None:
    """Concatenated expert ids (sparsemixer's first and second picks) still point into the experts."""
    _cat(tr, call)
    hits = [_values(tr, t) for t in arg(call, 0, "tensors")]
    if hits and all(h is not None and h[2] == "index" and find(h[1]) is find(hits[0][1]) for h in hits):
        tr.state.values[id(call.out)] = (call.out, hits[0][1], "index")


@rule("one_hot")
def one_hot(tr: Tracer, call: OpCall) -> None:
    """``one_hot(expert_ids, num_experts [+ 1])``: the classes are the experts the ids point into (then an extra
    class the eager expert loop skips); classes of ids of unknown origin are fixed."""
    ids = arg(call, 0, "tensor", arg(call, 0, "input"))
    hit = _values(tr, ids)
    where = call.module or "<model>"
    classes = Space(call.out.shape[-1])
    if hit is not None and hit[2] == "index" and find(hit[1]).size <= classes.size:
        experts = find(hit[1])
        extra = Space(classes.size - experts.size)
        block(extra, f"one_hot classes beyond the experts in {where}")
        classes = cat_space([experts, extra])
        _sync_experts(tr, call, experts)
    else:
        block(classes, f"one_hot classes of ids of unknown origin in {where}")
    tr.set(call.out, list(tr.rec(ids).spaces) + [classes])
    if hit is not None:
        tr.state.values[id(call.out)] = (call.out, classes, "onehot")


@rule("nonzero", "argwhere")
def nonzero(tr: Tracer, call: OpCall) -> None:
    """Positions of the nonzero entries (a data-dependent count); on a 1-D tensor they are ids into its dim."""
    x = arg(call, 0, "input")
    out = call.out
    if not isinstance(out, torch.Tensor):
        raise unhandled("nonzero(as_tuple=True)")
    tr.set(out, [Space(n) for n in out.shape])
    spaces = tr.rec(x).spaces if isinstance(x, torch.Tensor) else []
    if len(spaces) == 1 and _routed(spaces[0]):
        tr.state.values[id(out)] = (out, spaces[0], "index")
        return
    for s in spaces:  # positions of channels would be renumbered under pruning, and where they go is unknown
        block(s, f"positions of nonzero entries in {call.module or '<model>'}")


def _routed(s: Space) -> bool:
    """``s`` is experts a router picks among (top-k), or those followed by one_hot's extra class."""
    r = find(s)
    return "routed" in r.tags or (r.kind == "cat" and bool(r.children) and "routed" in find(r.children[0]).tags)


_linear = RULES["linear"]


@rule("linear")
def linear(tr: Tracer, call: OpCall) -> None:
    """A linear layer; with one expert's weights (``gate_up_proj[expert_idx]``, the eager loop) their dims 1 and 2
    are out and in."""
    _linear(tr, call)
    hit = _values(tr, arg(call, 1, "weight"))
    if hit is not None and hit[2].startswith(ROWS) and arg(call, 1, "weight").dim() == 2:
        name = hit[2][len(ROWS):]
        tr.state.roles[(name, 1)] = "out"
        tr.state.roles[(name, 2)] = "in"
