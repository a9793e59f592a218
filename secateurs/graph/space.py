"""Index spaces: the sets of channel indices that must be pruned together.

Every dimension of every traced tensor is a ``Space``. Ops tie spaces together (``unify``), build
new ones from old (a flatten is a product, a concatenation a concat) and refine old ones (a view
that splits 768 into 12 x 64 refines the 768-space into a product of a 12-space and a 64-space).
After tracing, the root spaces with no refinement are the prunable units: the groups.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator

_ids = itertools.count()


class Space:
    """A dimension's index set; union-find node with an optional refinement into sub-spaces."""

    __slots__ = ("id", "size", "parent", "kind", "children", "blocked", "tags")

    def __init__(self, size: int, kind: str | None = None, children: list[Space] | None = None):
        self.id = next(_ids)
        self.size = int(size)
        self.parent: Space | None = None  # None for a root (not itself: a cycle only the garbage collector frees)
        self.kind = kind  # None (a leaf), "prod" (row-major product) or "cat" (concatenation)
        self.children = children
        self.blocked: list[str] = []  # reasons these indices may not change
        self.tags: set[str] = set()  # "head" (attention batch dim), "qk" (q.k contraction), "norm"

    def __repr__(self) -> str:
        r = find(self)
        if r.children:
            return f"{r.kind}[{', '.join(map(repr, r.children))}]"
        return f"S{r.id}({r.size})"


def find(s: Space) -> Space:
    """Root of ``s`` with path compression."""
    if s.parent is None:  # most calls: a root already
        return s
    root = s
    while root.parent is not None:
        root = root.parent
    while s.parent is not None and s.parent is not root:
        s.parent, s = root, s.parent
    return root


def prod_space(parts: list[Space]) -> Space:
    """A new space indexing the row-major product of ``parts`` (a flatten/merge)."""
    parts = [p for p in parts if p.size != 1] or parts[:1]
    if len(parts) == 1:
        return parts[0]
    size = 1
    for p in parts:
        size *= p.size
    return Space(size, "prod", list(parts))


def cat_space(parts: list[Space]) -> Space:
    """A new space indexing the concatenation of ``parts``."""
    parts = [p for p in parts if p.size != 0]
    if len(parts) == 1:
        return parts[0]
    return Space(sum(p.size for p in parts), "cat", list(parts))


class Incompatible(Exception):
    """Two layouts cannot be reconciled; the caller blocks the spaces involved."""


def block(s: Space, reason: str) -> None:
    """Mark ``s`` (and, at finalisation, everything under it) as not prunable."""
    r = find(s)
    if reason not in r.blocked:
        r.blocked.append(reason)


def unify(a: Space, b: Space) -> Space:
    """Declare that ``a`` and ``b`` index the same channels; returns the merged root."""
    ra, rb = find(a), find(b)
    if ra is rb:
        return ra
    if ra.size != rb.size:
        raise Incompatible(f"cannot tie a {ra.size}-wide dimension to a {rb.size}-wide one")
    if ra.children and rb.children:
        pairs = _aligned(ra, rb)
        for x, y in pairs:
            unify(x, y)
        ra, rb = find(ra), find(rb)
        if ra is rb:
            return ra
    if rb.children and not ra.children:
        ra, rb = rb, ra
    rb.parent = ra
    ra.blocked.extend(r for r in rb.blocked if r not in ra.blocked)
    ra.tags |= rb.tags
    return ra


def _aligned(ra: Space, rb: Space) -> list[tuple[Space, Space]]:
    """Pairs of sub-spaces to tie when two refined spaces are declared equal."""
    if ra.kind == rb.kind == "cat":
        ca, cb = [find(c) for c in ra.children], [find(c) for c in rb.children]
        if [c.size for c in ca] != [c.size for c in cb]:
            raise Incompatible("the two dimensions are concatenated from different pieces")
        return list(zip(ca, cb))
    if ra.kind == rb.kind == "prod":
        cuts = sorted(set(_cuts(leaf_factors(ra))) | set(_cuts(leaf_factors(rb))))
        sizes = [c // p for p, c in zip([1] + cuts[:-1], cuts)]
        if any(c % p for p, c in zip([1] + cuts[:-1], cuts)):
            raise Incompatible("the two dimensions are split in incompatible ways")
        xa, xb = regroup([ra], sizes), regroup([rb], sizes)
        if xa is None or xb is None:
            raise Incompatible("the two dimensions are split in incompatible ways")
        return list(zip(xa, xb))
    cat, other = (ra, rb) if ra.kind == "cat" else (rb, ra)
    as_prod = _equal_cat_to_prod(cat, leaf_factors(other)[0].size)
    if as_prod is not None:
        return _aligned(as_prod, other)
    raise Incompatible("a concatenation cannot be tied to a product")


def _equal_cat_to_prod(r: Space, heads: int) -> Space | None:
    """Re-root a concatenation of equal pieces (``torch.cat(x.chunk(k))``, EdgeNeXt) as the product
    (k, piece) it is, index for index, so it can be tied to a product such as heads x head_dim; the
    pieces are tied to each other and the piece index is fixed. None unless ``k`` and the product's
    first factor divide one another (the cut must fall on a piece boundary or inside the first factor)."""
    k = len(r.children or [])
    if k < 2 or (heads % k and k % heads) or _split_equal_cat(r, k) is None:
        return None
    index, piece = Space(k), find(r.children[0])
    block(index, "chunk piece index")
    p = prod_space([index, piece])
    p.blocked, p.tags = list(r.blocked), set(r.tags)
    r.parent = p
    return p


def _cuts(factors: list[Space]) -> list[int]:
    out, acc = [], 1
    for f in factors:
        acc *= f.size
        out.append(acc)
    return out


def leaf_factors(s: Space) -> list[Space]:
    """Flatten nested products into their factor list (cats stay as single factors)."""
    r = find(s)
    if r.kind == "prod" and r.children:
        return [f for c in r.children for f in leaf_factors(c)]
    return [r]


def refine(s: Space, kind: str, sizes: list[int]) -> list[Space]:
    """Split a leaf space into ``kind`` sub-spaces of ``sizes`` (or reuse a matching refinement)."""
    r = find(s)
    if r.children is None:
        if len(sizes) == 1:
            return [r]
        r.kind, r.children = kind, [Space(n) for n in sizes]
        return list(r.children)
    if r.kind != kind:
        raise Incompatible(f"cannot split a {r.kind} dimension as a {kind}")
    if [find(c).size for c in r.children] == list(sizes):
        return [find(c) for c in r.children]
    raise Incompatible("the dimension was already split differently")


def regroup(spaces: list[Space], sizes: list[int]) -> list[Space] | None:
    """Re-express the row-major product of ``spaces`` as dims of ``sizes`` (what a reshape does).

    Returns one space per target size, refining leaves where a target splits one of them, or
    None when the reshape mixes indices in a way that has no channel-wise meaning.
    """
    queue = [f for s in spaces for f in leaf_factors(s) if f.size != 1]
    out: list[Space] = []
    for t in sizes:
        if t == 1:
            out.append(Space(1))
            continue
        taken: list[Space] = []
        acc = 1
        while acc < t:
            if not queue:
                return None
            f = queue.pop(0)
            if t % (acc * f.size) == 0:
                taken.append(f)
                acc *= f.size
                continue
            need = t // acc
            if t % acc or f.size % need:
                return None
            r = find(f)
            factored = _cat_as_prod(r) if r.kind == "cat" else None
            if factored is not None:  # re-read the concatenation as a product and take from its factors
                queue[0:0] = factored
                continue
            if r.kind == "cat":
                head = _split_equal_cat(r, need)
                if head is None:
                    return None
                taken.append(head[0])
                queue.insert(0, head[1])
            else:
                try:
                    first, rest = refine(r, "prod", [need, f.size // need])
                except Incompatible:
                    return None
                taken.append(first)
                queue.insert(0, rest)
            acc *= need
        out.append(prod_space(taken))
    if any(f.size != 1 for f in queue):
        return None
    return out


def _cat_as_prod(r: Space) -> list[Space] | None:
    """A concatenation of products that share their trailing factors, (a x t) + (b x t), as the
    product (a + b) x t: the same indices in the same order (CoaT splits heads x head_dim by heads)."""
    parts = [leaf_factors(c) for c in r.children or []]  # a (1 x t) piece is just t
    if len(parts) < 2:
        return None
    k = 0
    while k < min(len(p) for p in parts) and len({id(p[-1 - k]) for p in parts}) == 1:
        k += 1
    if k == 0 or all(len(p) == k for p in parts):
        return None
    return [cat_space([prod_space(p[:-k]) if len(p) > k else Space(1) for p in parts])] + parts[0][-k:]


def _split_equal_cat(r: Space, k: int) -> tuple[Space, Space] | None:
    """View a concat of ``k`` equal pieces as (k, piece): the pieces become one shared space.

    This is what a channel shuffle does; tying the pieces keeps every shuffle valid.
    """
    pieces = [find(c) for c in r.children or []]
    if len(pieces) != k or len({p.size for p in pieces}) != 1:
        return None
    for p in pieces[1:]:
        try:
            unify(pieces[0], p)
        except Incompatible:
            return None
    index = Space(k)
    block(index, "channel-shuffle piece index")
    return index, find(pieces[0])


def leaves(s: Space) -> Iterator[Space]:
    """The unrefined root spaces under ``s``, in index order (each once per occurrence)."""
    r = find(s)
    if r.children:
        for c in r.children:
            yield from leaves(c)
    else:
        yield r
