"""Record what a model's forward does to channel dimensions, op by op.

The model runs for real under a ``TorchFunctionMode``; every torch call is handed to a rule
(``rules.py``) that ties the dimension spaces of its inputs and outputs. Running the model (rather
than symbolically tracing it) means Python control flow, Hugging Face models and anything else
that runs also traces.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .sizes import COMPARED, NUMBERS, Prod, Size, Sum, numbers_read, sized, strides, syncable
from .space import Incompatible, Space, block, find, leaf_factors, prod_space, refine, regroup, unify
from .walk import named_modules


@dataclass
class Record:
    """What the tracer knows about one tensor: a space per dimension."""

    tensor: torch.Tensor
    spaces: list[Space]
    param: str | None = None  # qualified name when the tensor is a parameter or buffer
    from_param: bool = False  # a parameter, or a view of one


@dataclass
class Literal:
    """A size written into the code (a view/split target): it pins a space unless an attribute tracks it."""

    space: Space
    value: int
    module: str
    loose: bool = False  # a dim the reshape passes through unchanged, with no -1 elsewhere
    strict: bool = False  # one of a list of sizes: no single attribute can hold it
    attr: tuple[str, str] | None = None  # (module, attribute) the size was read from, if any


@dataclass
class OpCall:
    name: str
    args: tuple
    kwargs: dict
    out: Any
    module: str


@dataclass
class TraceState:
    """Everything the tracer accumulates; the graph builder reads it afterwards."""

    names: dict[int, str] = field(default_factory=dict)  # id(param or buffer) -> qualified name
    records: dict[int, Record] = field(default_factory=dict)
    param_spaces: dict[tuple[str, int], Space] = field(default_factory=dict)
    roles: dict[tuple[str, int], str] = field(default_factory=dict)  # "out" (produces) or "in" (consumes)
    owners: dict[int, tuple[str, int]] = field(default_factory=dict)  # id(a parameter's Space) -> (name, dim)
    literals: list[Literal] = field(default_factory=list)
    syncs: list[tuple[str, str, list[Space]]] = field(default_factory=list)  # module, attr, spaces
    element_syncs: list[tuple[str, str, int, Space]] = field(default_factory=list)  # module, list attr, index
    stack: list[str] = field(default_factory=list)
    ops: list[OpCall] = field(default_factory=list)
    # Tensors whose values refer to the indices of a space (top-k routing, see rules/moe.py):
    # id -> (tensor, space, "index" for picked indices or "count" for a histogram over the space).
    values: dict[int, tuple[torch.Tensor, Space, str]] = field(default_factory=dict)
    # id(tensor) -> (tensor, blocks): reasons to block spaces once the tensor's values are used (see block_on_use)
    pending: dict[int, tuple[torch.Tensor, list[tuple[Space, str]]]] = field(default_factory=dict)
    # (module, attribute) -> where: attribute sizes read as numbers (``hidden_size ** 0.5``), not as sizes
    numbers: dict[tuple[str, str], str] = field(default_factory=dict)


# Calls that read a tensor's metadata, never its values: they do not count as using it (see block_on_use).
METADATA = {"size", "dim", "numel", "__len__", "stride", "is_contiguous", "data_ptr", "element_size", "get_device",
            "is_floating_point", "is_complex", "storage_offset", "nelement", "ndimension", "shape", "dtype", "device",
            "is_cuda", "ndim", "requires_grad", "grad_fn", "layout", "is_leaf", "names", "itemsize", "nbytes",
            "is_sparse", "__hash__"}


# How the tracer handles a torch function (see ``Tracer.op``).
SIZES, STRIDES, IGNORED, RULED = range(4)


class Tracer(TorchFunctionMode):
    """A TorchFunctionMode that feeds every call to its channel rule."""

    def __init__(self, state: TraceState, model: nn.Module, lookup: Callable[[str], Callable],
                 ignore_names: set[str], modules: list[tuple[str, nn.Module]] | None = None):
        super().__init__()
        self.state = state
        self.modules = dict(named_modules(model) if modules is None else modules)
        self.lookup = lookup
        self.ignore_names = ignore_names
        self.rules: dict[str, Callable] = {}  # op name -> its rule, looked up once per trace
        self.ops: dict[Any, tuple[str, int, bool, Callable | None]] = {}  # func -> what ``op`` says of it

    def op(self, func: Any) -> tuple[str, int, bool, Callable | None]:
        """What the tracer does with ``func``: its name, the handler (``SIZES``, ``STRIDES``, ``IGNORED`` or
        ``RULED``), whether it reads metadata only, and its rule (for ``RULED``); cached per function."""
        try:
            found = self.ops.get(func)
        except TypeError:  # an unhashable callable: worked out on each call
            found = None
        if found is not None:
            return found
        name = getattr(func, "__name__", "")
        if name == "__get__":  # a property (x.shape, x.real, x.T): name it after the property
            name = getattr(getattr(func, "__self__", None), "__name__", name)
        rule = None
        if name in ("shape", "size"):
            handler = SIZES
        elif name == "stride":
            handler = STRIDES
        elif name in self.ignore_names:
            handler = IGNORED
        else:
            handler, rule = RULED, self.rules.get(name)
            if rule is None:
                rule = self.rules[name] = self.lookup(name)
        found = (name, handler, name in METADATA, rule)
        with contextlib.suppress(TypeError):
            self.ops[func] = found
        return found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name, handler, metadata, rule = self.op(func)
        if handler == SIZES:
            return self.sizes(args, kwargs, func(*args, **kwargs))
        if handler == STRIDES:
            return self.strides(args, kwargs, func(*args, **kwargs))
        if self.state.pending and not metadata:
            self.used(tensors_in((args, kwargs)))
        if handler == IGNORED:
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        call = OpCall(name, args, kwargs, out, self.state.stack[-1] if self.state.stack else "")
        try:
            rule(self, call)
        except (Incompatible, _Unhandled) as exc:
            self.give_up(call, str(exc))
        except Exception as exc:  # noqa: BLE001 - a rule that misreads an op must not stop the model's forward
            self.give_up(call, f"its channel rule failed ({type(exc).__name__}: {exc})")
        return out

    def sizes(self, args: tuple, kwargs: dict, out: Any) -> Any:
        """``x.shape`` or ``x.size(d)`` with each int carrying the space it was read from."""
        t = args[0] if args else None
        r = self.state.records.get(id(t))
        if r is None or r.tensor is not t:
            return out
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if isinstance(dim, int):
            dim = dim + t.dim() if dim < 0 else dim
        return sized(out, r.spaces, dim)

    def __enter__(self):
        COMPARED.append(self.compared)
        NUMBERS.append(self.number)
        return super().__enter__()

    def __exit__(self, *exc):
        COMPARED.remove(self.compared)
        NUMBERS.remove(self.number)
        return super().__exit__(*exc)

    def number(self, v: Any) -> None:
        """The tracked size ``v`` is read as a number (``hidden_size ** 0.5``, ``x * dim``), not as a size: a
        plan that set its attribute would change that value too (see ``graph._config_numbers``)."""
        for s in numbers_read(v):
            if s.attr is not None:
                self.state.numbers.setdefault(s.attr, self.where())

    def compared(self, a: Any, b: Any) -> None:
        """Two tracked sizes found equal (``assert embed_dim == self.embed_dim``, cpmant's ``size(-1) !=
        self.dim_norm``): the code relies on it, so what they size shrinks together; where one cannot
        follow (an attribute no plan sets, a size over a divisor) both stay."""
        if isinstance(a, Size) and isinstance(b, Size) and a.key() == b.key():
            return
        whole = Space(int(a))
        if not all([isinstance(v, (Size, Sum, Prod)) and getattr(v, "div", 1) == 1
                    and self.follow(v, whole)
                    for v in (a, b)]):
            why = f"size {int(a)} compared with another in {self.where()}"
            block(whole, why)
            for v in (a, b):
                self.pin_origin(v, self.where())

    def strides(self, args: tuple, kwargs: dict, out: Any) -> Any:
        """``x.stride()`` or ``x.stride(d)`` as ``Stride`` ints (see ``rules/strided.py``)."""
        t = args[0] if args else None
        if not isinstance(t, torch.Tensor):
            return out
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if isinstance(dim, int):
            dim = dim + t.dim() if dim < 0 else dim
        return strides(out, t, dim)

    def follow(self, v: Any, whole: Space) -> bool:
        """Tie ``whole`` (the dimension sized ``v * v.div``) to where the int ``v`` came from.

        False when ``v`` has no origin, the origin cannot be tied, or it is an attribute a plan may
        not set (not in ``SYNC_ATTRS``, or ``SYNC_LIST_ATTRS`` for an element of a list): the caller
        then treats it as a number fixed in code.
        """
        if isinstance(v, Sum):
            return self.follow_sum(v, whole)
        if isinstance(v, Prod):
            return self.follow_prod(v, whole)
        if not isinstance(v, Size) or int(v) * v.div != find(whole).size:
            return False
        if v.space is None and not syncable(v.attr[1], v.index is not None):
            return False
        if v.index is not None:
            self.state.element_syncs.append((v.attr[0], v.attr[1], v.index, whole))
            return True
        if v.space is not None:
            mine, theirs = [id(f) for f in leaf_factors(whole)], [id(f) for f in leaf_factors(v.space)]
            if v.div == 1 and mine != theirs and sorted(mine) == sorted(theirs):
                return True  # the same factors in another order (heads x head_dim read as head_dim x heads)
            try:
                unify(whole, v.space)
            except Incompatible:
                return False
            return True
        self.state.syncs.append((v.attr[0], v.attr[1], [whole]))
        return True

    def followable(self, v: Any) -> bool:
        """``v`` is a tracked size whose origin a dimension may follow (before tying anything); a product
        when each of its factors is."""
        if isinstance(v, Prod):
            return all(self.followable(f) for f in v.factors)
        if not isinstance(v, Size):
            return False
        return v.space is not None or syncable(v.attr[1], v.index is not None)

    def follow_sum(self, v: Sum, whole: Space) -> bool:
        """A sum ``a + b + ...`` of tracked sizes sizes ``whole`` as the concatenation of a piece per term.

        ``whole`` is split into those pieces (or its split into them is reused) and each piece follows
        its term, so the sum stays right whatever each term's origin loses. A positive constant written
        last (``num_heads + 2``) is a last piece of that size, fixed in code.
        """
        r = find(whole)
        sizes = [int(t) for _, t in v.terms] + ([v.const] if v.const else [])
        if (v.const and (v.const < 0 or not v.tail)) or any(c != 1 for c, _ in v.terms) or r.size != int(v) or not all(
                self.followable(t) for _, t in v.terms):
            return False
        try:
            pieces = refine(r, "cat", sizes) if len(sizes) > 1 else [r]
        except Incompatible:
            return False
        if v.const:
            block(pieces[-1], f"size {v.const} fixed in code in {self.where()}")
        return all([self.follow(t, p) for (_, t), p in zip(v.terms, pieces)])

    def follow_prod(self, v: Prod, whole: Space) -> bool:
        """A product ``a * b`` of tracked sizes sizes ``whole`` as the row-major product of a piece per
        factor, in the order written, each following its factor (``reshape(b, kv * n_rep, ...)`` after an
        ``expand``, as grouped-query attention's ``repeat_kv`` does); the factors' own spaces in another
        order keep the product equal too."""
        fs = [f for f in leaf_factors(whole) if f.size > 1]
        if find(whole).size != int(v):
            return False
        if not all(self.followable(t) for t in v.factors):
            return self.follow_prod_fixed(v, whole)
        mine = [id(f) for t in v.factors if t.space is not None and t.div == 1 for f in leaf_factors(t.space)]
        if all(t.space is not None and t.div == 1 for t in v.factors) and sorted(mine) == sorted(map(id, fs)):
            return True  # the same factors, whatever their order: the product stays equal
        if all(t.div == 1 for t in v.factors):
            pieces = regroup([whole], [int(t) for t in v.factors])
            if pieces is not None:
                return all([self.follow(t, p) for t, p in zip(v.factors, pieces)])
        runs, i = [], 0
        for t in v.factors:
            take, acc = [], 1
            while acc < int(t) and i < len(fs):
                take.append(fs[i])
                acc *= fs[i].size
                i += 1
            if acc != int(t):
                return False
            runs.append(prod_space(take) if take else None)
        if i != len(fs):
            return False
        return all([r is None or self.follow(t, r) for t, r in zip(v.factors, runs)])

    def follow_prod_fixed(self, v: Prod, whole: Space) -> bool:
        """A product with factors no plan may change (``C * self.kernel_size * self.kernel_size``, timm VOLO's
        outlook attention): ``whole`` is read as one piece per factor in the order written; the pieces of
        the fixed factors keep their indices and the others follow their origins."""
        follows = [self.followable(t) for t in v.factors]
        if not any(follows) or any(t.div != 1 for t in v.factors):
            return False
        pieces = regroup([whole], [int(t) for t in v.factors])
        if pieces is None or not all([self.follow(t, p) for t, p, f in zip(v.factors, pieces, follows) if f]):
            return False
        for t, p, f in zip(v.factors, pieces, follows):
            if not f:
                block(p, f"size {int(t)} fixed in code in {self.where()}")
        return True

    def block_on_use(self, t: torch.Tensor, s: Space, why: str) -> None:
        """Block ``s`` with ``why`` once ``t``'s values are used (by any op but a metadata read, or as a
        model output): ``x[:, :, -1]`` read for its shape only (BART's positions) leaves ``x``'s channels free."""
        self.state.pending.setdefault(id(t), (t, []))[1].append((s, why))

    def used(self, ts: list[torch.Tensor]) -> None:
        """Apply the blocks waiting on the values of ``ts`` (see ``block_on_use``)."""
        for t in ts:
            waiting = self.state.pending.get(id(t))
            if waiting is not None and waiting[0] is t:
                del self.state.pending[id(t)]
                for s, why in waiting[1]:
                    block(s, why)

    def contract(self, s: Space, why: str | None = None) -> None:
        """Mark ``s`` as summed over by a product of two activations (q.k): prunable, but not exactly.

        With ``why`` the space is kept instead, and reported with that reason.
        """
        if why is None:
            find(s).tags.add("qk")
        else:
            block(s, f"{why} in {self.where()}")

    # -- helpers used by rules ------------------------------------------------------------
    def rec(self, t: torch.Tensor) -> Record:
        """The record of ``t``; parameters get fresh linked spaces, strangers get blocked ones."""
        r = self.state.records.get(id(t))
        if r is not None and r.tensor is t:
            return r
        pname = self.state.names.get(id(t))
        spaces = [Space(n) for n in t.shape]
        if pname is not None:
            for d, s in enumerate(spaces):
                seen = self.state.param_spaces.setdefault((pname, d), s)
                if seen is not s:  # the same parameter in another trace (train mode): same channels
                    spaces[d] = find(unify(seen, s))
                self.state.owners[id(spaces[d])] = (pname, d)
        else:
            for s in spaces:
                block(s, f"tensor of unknown origin in {self.where()}")
        r = Record(t, spaces, pname, pname is not None)
        self.state.records[id(t)] = r
        return r

    def role(self, s: Space, r: str) -> None:
        """Mark the parameter dimension ``s`` indexes (also through a view: ``weight.T``) as made ("out") or
        read ("in") by the op; a space no parameter owns is left alone."""
        owner = self.state.owners.get(id(s))
        if owner is not None:
            self.state.roles[owner] = r

    def set(self, t: torch.Tensor, spaces: list[Space], from_param: bool = False) -> None:
        assert len(spaces) == t.dim(), (len(spaces), t.shape)
        self.state.records[id(t)] = Record(t, spaces, None, from_param)

    def fresh(self, t: torch.Tensor) -> None:
        self.set(t, [Space(n) for n in t.shape])

    def where(self) -> str:
        return self.state.stack[-1] if self.state.stack else "<model>"

    def give_up(self, call: OpCall, why: str) -> None:
        """Block every dimension the call touched and make its outputs opaque (the trace goes on)."""
        reason = f"{call.name} in {call.module or '<model>'}: {why}"
        for t in tensors_in((call.args, call.kwargs)):
            for s in self.rec(t).spaces:
                block(s, reason)
        for t in tensors_in(call.out):
            spaces = [Space(n) for n in t.shape]
            for s in spaces:
                block(s, reason)
            self.set(t, spaces)

    def literal(self, space: Space, value: int, module: str, loose: bool = False, strict: bool = False) -> None:
        """``space`` sized by ``value`` in code; an int read from a shape pins the dim it was read from
        too (``pin_origin``). An int read from an attribute no plan may set pins its dim: the code will
        read that value again, and another attribute of the same value is not what it reads (hiera's
        ``self.dim_out`` beside ``self.dim``)."""
        attr = value.attr if isinstance(value, Size) else None
        if attr is not None:
            strict, loose = True, False
        self.state.literals.append(Literal(space, int(value), module, loose, strict, attr))
        self.pin_origin(value, module)

    def pin_origin(self, v: Any, module: str) -> None:
        """``v``, read from a tensor's shape, sizes something that cannot follow it: the dims it was read
        from may not change either, or the code would read a new size that the other dim does not have
        (a residual width C in ``reshape(B, N, C)`` after an attention whose inner width differs)."""
        terms = [t for _, t in v.terms] if isinstance(v, Sum) else v.factors if isinstance(v, Prod) else [v]
        for t in terms:
            if isinstance(t, Size) and t.space is not None:
                block(t.space, f"size {int(v)} read from this dimension is fixed in code in {module or '<model>'}")


class _Unhandled(Exception):
    """A rule met a form of its op it does not model."""


def unhandled(msg: str) -> _Unhandled:
    return _Unhandled(msg)


def tensors_in(obj: Any) -> list[torch.Tensor]:
    """The tensors in ``obj``, in pytree order; plain tuples, lists and dicts are walked directly (the
    tracer calls this for every op, and ``tree_flatten`` costs more than most ops at batch 1)."""
    out: list[torch.Tensor] = []
    _collect(obj, out)
    return out


_SCALARS = (int, float, bool, str, type(None), torch.dtype, torch.device, slice, type(...))


def _collect(obj: Any, out: list[torch.Tensor]) -> None:
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif type(obj) in (tuple, list):
        for x in obj:
            if isinstance(x, torch.Tensor):  # the common items, without a call each
                out.append(x)
            elif not isinstance(x, _SCALARS):
                _collect(x, out)
    elif type(obj) is dict:
        for x in obj.values():
            _collect(x, out)
    elif not isinstance(obj, _SCALARS):
        leaves, _ = tree_flatten(obj)
        out.extend(x for x in leaves if isinstance(x, torch.Tensor))


def tie(a: Space, b: Space) -> Space:
    """unify() for rules: a size mismatch means the rule misread the op."""
    return unify(a, b)


def install_module_hooks(model: nn.Module, state: TraceState, modules: list[tuple[str, nn.Module]] | None = None
                         ) -> list:
    """Track which module of ``model`` is running (for reports and attribute syncs).

    One process-wide pair of hooks that looks the model's modules up by id (others are ignored):
    registering a pair on each module costs more than tracing the ops of models with thousands of them.
    ``modules``: ``named_modules(model)`` when the caller has it already.
    """
    names = {id(m): n for n, m in (named_modules(model) if modules is None else modules)}

    def pre(m, inp):
        n = names.get(id(m))
        if n is not None:
            state.stack.append(n)

    def post(m, inp, out):
        n = names.get(id(m))
        if n is not None and state.stack and state.stack[-1] == n:
            state.stack.pop()

    return [register_module_forward_pre_hook(pre), register_module_forward_hook(post, always_call=True)]
