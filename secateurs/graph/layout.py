"""Layouts: how one tensor dimension is built from groups, as plain JSON-able data.

A layout is a small tree: ``["g", group_id, size]`` (a prunable group), ``["n", size]`` (indices
that never change), ``["prod", [...]]`` (row-major product, e.g. heads x head_dim) or
``["cat", [...]]`` (concatenation, e.g. DenseNet features). Plans carry layouts so a model can be
pruned again from the plan alone, without tracing.
"""
from __future__ import annotations

from typing import Any

import torch

Layout = list  # JSON tree, see module docstring


def size(tree: Layout) -> int:
    """Number of indices the layout spans."""
    kind = tree[0]
    if kind == "g":
        return int(tree[2])
    if kind == "n":
        return int(tree[1])
    sizes = [size(c) for c in tree[1]]
    if kind == "cat":
        return sum(sizes)
    out = 1
    for s in sizes:
        out *= s
    return out


def groups_in(tree: Layout) -> set[int]:
    """Ids of the groups a layout mentions."""
    if tree[0] == "g":
        return {int(tree[1])}
    if tree[0] == "n":
        return set()
    return set().union(*(groups_in(c) for c in tree[1]))


def kept(tree: Layout, keep: dict[int, torch.Tensor]) -> torch.Tensor:
    """Surviving indices of the dimension when group ``g`` keeps ``keep[g]`` (sorted) of its own."""
    kind = tree[0]
    if kind == "g":
        k = keep.get(int(tree[1]))
        return torch.arange(int(tree[2])) if k is None else k
    if kind == "n":
        return torch.arange(int(tree[1]))
    parts = [kept(c, keep) for c in tree[1]]
    if kind == "cat":
        out, off = [], 0
        for c, p in zip(tree[1], parts):
            out.append(p + off)
            off += size(c)
        return torch.cat(out)
    idx = torch.zeros(1, dtype=torch.long)
    for c, p in zip(tree[1], parts):
        idx = (idx[:, None] * size(c) + p[None, :]).reshape(-1)
    return idx


def coords(tree: Layout) -> dict[int, torch.Tensor]:
    """For each group in the layout: the group index at every position (-1 where it is absent)."""
    kind = tree[0]
    if kind == "g":
        return {int(tree[1]): torch.arange(int(tree[2]))}
    if kind == "n":
        return {}
    n = size(tree)
    sizes = [size(c) for c in tree[1]]
    out: dict[int, torch.Tensor] = {}
    if kind == "cat":
        off = 0
        for c, m in zip(tree[1], sizes):
            for gid, co in coords(c).items():
                full = out.setdefault(gid, torch.full((n,), -1, dtype=torch.long))
                full[off:off + m] = co
            off += m
        return out
    for axis, c in enumerate(tree[1]):
        shape = [1] * len(sizes)
        shape[axis] = sizes[axis]
        for gid, co in coords(c).items():
            out.setdefault(gid, co.view(shape).expand(sizes).reshape(-1))
    return out


def validate(tree: Any) -> None:
    """Raise ValueError when ``tree`` is not a well-formed layout (plans come from files)."""
    if not isinstance(tree, list) or not tree or tree[0] not in ("g", "n", "prod", "cat"):
        raise ValueError(f"malformed layout in plan: {tree!r}")
    if tree[0] == "g" and not (len(tree) == 3 and all(isinstance(x, int) for x in tree[1:])):
        raise ValueError(f"malformed group leaf in plan: {tree!r}")
    if tree[0] == "n" and not (len(tree) == 2 and isinstance(tree[1], int)):
        raise ValueError(f"malformed fixed leaf in plan: {tree!r}")
    if tree[0] in ("prod", "cat"):
        if len(tree) != 2 or not isinstance(tree[1], list):
            raise ValueError(f"malformed layout node in plan: {tree!r}")
        for c in tree[1]:
            validate(c)
