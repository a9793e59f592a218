"""The criterion registry and the one interface every criterion implements.

A criterion scores *elements* of parameters (one score per weight, higher = more important).
Structured pruning needs a score per group element; by default it is the sum of the element
scores of every weight removed with that element, over all coupled layers (``aggregate``), and a
criterion may refine that (``finish``) or replace it (``groups``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..graph import Graph
from ..graph import layout as L
from ..graph.walk import named_modules, named_tensors


@dataclass
class Context:
    """What a criterion may use besides the weights: a seed, and data for criteria that need it.

    ``batches`` yields batches as ``loss_fn`` expects them; ``loss_fn(model, batch)`` returns a
    scalar loss to differentiate.
    """

    seed: int = 0
    batches: Iterable[Any] | None = None
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None


class Criterion:
    """Base class: override ``elements``; optionally ``finish`` or ``groups``."""

    name = ""
    needs_data = False  # scores from gradients: needs ``batches`` and a ``loss_fn``
    needs_inputs = False  # scores from activations: needs ``batches`` of model inputs (no ``loss_fn``)
    comparable = False  # scores already comparable across groups (global ranking uses them as they are)

    def elements(self, model: nn.Module, names: list[str], ctx: Context) -> dict[str, torch.Tensor]:
        """Per-element scores (same shape as the parameter) for the named parameters."""
        raise NotImplementedError

    def finish(self, scores: torch.Tensor) -> torch.Tensor:
        """Turn summed element scores of one group into its final scores (identity by default)."""
        return scores

    def groups(self, model: nn.Module, graph: Graph, ctx: Context) -> dict[int, torch.Tensor]:
        """Scores per group id: a float64 vector as long as the group."""
        params = dict(model.named_parameters())
        names = [n for n in graph.layouts if n in params]
        return {gid: self.finish(s) for gid, s in aggregate(graph, self.elements(model, names, ctx)).items()}


def aggregate(graph: Graph, element_scores: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Sum element scores over every slice that goes with each group element (all coupled layers)."""
    sums = {}
    for name, dims in graph.layouts.items():
        s = element_scores.get(name)
        if s is not None:
            s = s.detach().float()
            sums[name] = {dim: s.sum(dim=[d for d in range(s.dim()) if d != dim]) if s.dim() > 1 else s
                          for dim in dims}
    return aggregate_sums(graph, sums)


def aggregate_sums(graph: Graph, sums: dict[str, dict[int, torch.Tensor]]) -> dict[int, torch.Tensor]:
    """``aggregate`` from scores already summed per index of each layout dimension (tensor -> dim -> sums)."""
    flat, sizes = aggregate_flat(graph, sums)
    return dict(zip(sizes, flat.split(list(sizes.values()))))


def aggregate_flat(graph: Graph, sums: dict[str, dict[int, torch.Tensor]]) -> tuple[torch.Tensor, dict[int, int]]:
    """``aggregate_sums`` as one float64 vector, the groups' scores one after another (sizes: group id -> size).

    Every slice's sums go into one ``index_add_``, in the order of the layouts (one addition per slice
    and group index, as group by group): a model's thousands of small tensors cost one call, not one each.
    """
    sizes = {g.id: g.size for g in graph.groups}
    start, total = {}, 0
    for gid, n in sizes.items():
        start[gid], total = total, total + n
    sources: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    whole: dict[int, torch.Tensor] = {}  # a group's positions in the vector, for slices that are the whole group

    def run(gid: int) -> torch.Tensor:
        if gid not in whole:
            whole[gid] = torch.arange(start[gid], start[gid] + sizes[gid])
        return whole[gid]

    spread: dict[str, list[tuple[slice | torch.Tensor, torch.Tensor]]] = {}  # per layout: (positions, targets)
    for name, dims in graph.layouts.items():
        have = sums.get(name)
        if not have:
            continue
        for dim, tree in dims.items():
            per_index = have.get(dim)
            if per_index is None:
                continue
            if per_index.device.type != "cpu":
                per_index = per_index.cpu()
            if tree[0] == "g":  # the whole dimension is one group, index for index
                sources.append(per_index)
                targets.append(run(int(tree[1])))
                continue
            key = repr(tree)
            if key not in spread:
                spread[key] = [(where, run(gid) if co is None else co + start[gid]) for gid, where, co in _spread(tree)]
            for where, to in spread[key]:
                sources.append(per_index[where])
                targets.append(to)
    flat = torch.zeros(total, dtype=torch.float64)
    if sources:
        flat.index_add_(0, torch.cat(targets), torch.cat(sources).to(torch.float64))
    return flat, sizes


def _spread(tree: L.Layout, off: int = 0) -> list[tuple[int, slice | torch.Tensor, torch.Tensor | None]]:
    """The pieces of a layout (offset by ``off``), in the order of their positions: per piece its group, the
    positions it holds (a slice or an index tensor) and its group index at each (None: 0, 1, 2... in order).

    A group's leaf in a concatenation is one run of positions (a slice, no index tensor built); a product's
    positions come from ``L.coords``. Each group index receives its slices in the order of their positions.
    """
    kind = tree[0]
    if kind == "g":
        return [(int(tree[1]), slice(off, off + int(tree[2])), None)]
    if kind == "n":
        return []
    if kind == "cat":
        out = []
        for c in tree[1]:
            out += _spread(c, off)
            off += L.size(c)
        return out
    out = []
    for gid, co in L.coords(tree).items():
        pos = (co >= 0).nonzero().squeeze(1)
        out.append((gid, pos + off, co[pos]))
    return out


FUSED = 2 ** 20  # tensors with more elements are reduced without materialising their element scores
SCRATCH = 2 ** 14  # elements: a larger tensor's element scores go in one buffer reused for every tensor


def power_sums(w: torch.Tensor, dims: Iterable[int], p: int, scratch: Scratch | None = None) -> dict[int, torch.Tensor]:
    """Sum of ``|w| ** p`` per index of each of ``dims`` (p 1 or 2), as ``aggregate`` sums element scores.

    A tensor over ``FUSED`` elements whose dims lead is reduced over its trailing dims first (a conv's
    kernel) by one fused product or norm, without an element-score tensor of its size (what makes
    magnitude scoring of large layers cheap), then summed in float64: the sums differ from the
    elementwise ones by float rounding only. Smaller tensors are summed elementwise, exactly as before;
    with ``scratch`` their element scores are written to its buffer instead of fresh memory (same values).
    """
    dims = list(dims)
    w = w.detach().float()
    k = max(dims) + 1
    if k < w.dim() and w.numel() > FUSED:
        f = w.flatten(k)
        if f.shape[-1] == 1:  # a 1x1 kernel: its sum is the element's own score (the product einsum would give)
            f = f.squeeze(-1)
            r = _powered(f, p, scratch.like(f, f.dtype) if scratch is not None else None)
        elif p == 2:
            r = torch.einsum("...i,...i->...", f, f)
        else:  # summed in order as the square's product is, and as vector_norm(f, 1, -1) sums (the same floats)
            a = _powered(f, 1, scratch.like(f, f.dtype) if scratch is not None else None)
            r = torch.einsum("...i,...i->...", a, f.new_ones(f.shape[-1]).expand_as(f))
        r = scratch.like(r, torch.float64).copy_(r) if scratch is not None and r.dim() > 1 else r.double()
    elif scratch is not None and w.numel() > SCRATCH and w.dim() > 1 and w.is_contiguous():  # 1-d: r is the result
        r = _powered(w, p, scratch.like(w, w.dtype))
    else:
        r = _powered(w, p)
    return {d: r.sum(dim=[o for o in range(r.dim()) if o != d]) if r.dim() > 1 else r for d in dims}


def _powered(x: torch.Tensor, p: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """``|x| ** p`` elementwise (p 1 or 2), written to ``out`` when given (a scratch buffer)."""
    if out is None:
        return x.square() if p == 2 else x.abs()
    return torch.square(x, out=out) if p == 2 else torch.abs(x, out=out)


class Scratch:
    """Growing buffers (one per dtype) that ``power_sums`` writes element scores to: scoring a model's layers
    one after another allocates (and page-faults in) its largest layer's size once, not every layer's."""

    def __init__(self):
        self.buffers: dict[torch.dtype, torch.Tensor] = {}

    def like(self, w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A contiguous tensor of ``w``'s shape and device and of ``dtype`` over a buffer (old values: garbage)."""
        buf = self.buffers.get(dtype)
        if buf is None or buf.numel() < w.numel() or buf.device != w.device:
            buf = self.buffers[dtype] = torch.empty(max(w.numel(), 0 if buf is None else buf.numel()), dtype=dtype,
                                                    device=w.device)
        return buf[:w.numel()].view(w.shape)


def layout_power_sums(model: nn.Module, graph: Graph, p: int) -> dict[str, dict[int, torch.Tensor]]:
    """``power_sums`` of every parameter the graph lays out, along its laid-out dims (one scratch buffer).

    Vectors (biases, norm scales: most of a model's tensors, and tiny) are scored together, one call for
    all of them on a device: the same elementwise values as one at a time.
    """
    params = dict(named_tensors(named_modules(model)))  # named_parameters(), without its generator per level
    scratch = Scratch()
    out = {}
    vectors: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for n, dims in graph.layouts.items():
        w = params.get(n)
        if w is None:
            continue
        if w.dim() == 1:
            vectors.setdefault(w.device, []).append((n, w.detach().float()))
        else:
            out[n] = power_sums(w, dims, p, scratch)
    for vs in vectors.values():
        flat = torch.cat([w for _, w in vs])
        r = _powered(flat, p)
        out.update((n, {0: x}) for (n, _), x in zip(vs, r.split([w.numel() for _, w in vs])))
    return out


CRITERIA: dict[str, Criterion] = {}


def register(name: str) -> Callable[[type[Criterion]], type[Criterion]]:
    """Class decorator: make a Criterion subclass available under ``name``."""
    def deco(cls: type[Criterion]) -> type[Criterion]:
        cls.name = name
        CRITERIA[name] = cls()
        return cls
    return deco


def get_criterion(name: str | Criterion) -> Criterion:
    """The criterion called ``name`` (a Criterion instance is returned as it is); a ValueError lists
    the valid names otherwise."""
    if isinstance(name, Criterion):
        return name
    if not isinstance(name, str):
        raise TypeError(f"criterion must be a string, one of {sorted(CRITERIA)}, "
                        f"got {type(name).__name__} {name!r:.80}")
    if name not in CRITERIA:
        raise ValueError(f"criterion must be one of {sorted(CRITERIA)}, got {name!r}")
    return CRITERIA[name]


def check_data(crit: Criterion, ctx: Context) -> None:
    """Criteria that need data say so clearly when called without it."""
    if crit.needs_data and (ctx.batches is None or ctx.loss_fn is None):
        raise ValueError(f"criterion {crit.name!r} needs data: pass batches=<iterable of batches> and "
                         "loss_fn=<callable(model, batch) -> scalar loss>")
