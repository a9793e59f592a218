"""Where a Python int came from: sizes read from shapes or module attributes keep their origin.

While a model is traced, ``B, N, C = x.shape`` (and ``x.size(d)``) hands out ``Size`` ints that
remember the index space of each dimension, and every plain int attribute of every module
(``self.conv.in_channels``, ``self.num_heads``) reads as a ``Size`` that remembers its module and
attribute. Floor division by an int keeps the origin, with the divisor (and multiplying back by a
factor of the divisor undoes it); a product of such ints is a ``Prod`` that sizes the product of
its factors' dims; sums and differences of such ints and plain ints are a ``Sum``
that keeps its terms, which a rule can follow where that is sound (a sum sizes a concatenation of
its terms' dims; ``a - b`` sizes what a split leaves of ``a`` beside ``b``). A rule meeting such an int
as a view or split size ties the dimension it sets to that origin instead of pinning it as a
number fixed in code, so ``reshape(B, N, C)`` follows C's space and surgery knows which attribute
to update without matching values by coincidence.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .space import Space, find
from .walk import named_modules

# The module attributes a plan may set (its "syncs"): integer sizes that model code reads back, named
# as torch, torchvision, timm and transformers name them. A size held in any other attribute pins its
# channels instead; ``Plan.validate`` rejects a sync of anything else (``stride``, ``forward`` ...).
SYNC_ATTRS = frozenset({
    "groups", "num_groups", "normalized_shape", "num_heads",  # written by the layer and attention rules
    "heads", "n_heads", "n_head", "num_attention_heads", "num_key_value_heads", "num_kv_heads", "n_kv_heads",
    "num_key_value_groups", "n_rep",
    "head_dim", "head_size", "dim_head", "attention_head_size", "all_head_size", "key_value_proj_dim",
    "dim", "hidden_dim", "hidden_size", "hidden_features", "embed_dim", "embedding_dim", "n_embd", "d_model",
    "width", "inner_dim", "intermediate_size", "ffn_dim", "mlp_dim", "d_ff", "n_inner", "split_size",
    "attn_dim", "key_dim", "val_dim", "val_attn_dim",
    "channels", "num_channels", "in_channels", "out_channels", "num_features", "in_features", "out_features",
    "input_size",  # recurrent layers (hidden_size is above)
    "pdim", "qk_dim",  # timm shvit: partial-channel attention width, its q/k width
    "expand_chs",  # timm cspnet: the expanded width split in two
    "dim_conv3", "dim_untouched",  # timm fasternet: the convolved and the passed-through parts of a width
    "dh",  # timm efficientformer_v2 and levit: the attention value width (heads x per-head width)
    "num_1x1_c",  # timm dpn: the residual part of a dual-path width (x[:, :self.num_1x1_c])
    "dim_head_qk", "dim_head_v", "dim_out_qk", "dim_out_v",  # timm halo/bottleneck attention: q/k and v widths
    "dim_out", "o_proj_inpdim",  # timm hiera, mvitv2 and cpubone: an attention's output width (heads x head_dim)
    "image_dim_out",  # transformers phi4_multimodal: the image features' width (its vision tower's)
    "num_experts", "num_local_experts", "n_routed_experts",  # mixture of experts (rules/moe.py)
    "dim_norm",  # transformers cpmant: its layer norm's width, compared with the input's
    "group_size",  # qwen4_exp: an RMSNorm over groups of the width (one per hyper-connection stream)
})
# Tuple or list attributes of ints holding sizes: one per piece of a split (``torch.split(x,
# self.split_indices)``) or a view's target shape (timm metaformer's ``self.scale.view(self.shape)``).
# A plan sets them element by element, one layout per element; each element's layout spans its size.
SYNC_LIST_ATTRS = frozenset({"split_indexes", "split_indices", "split_sizes", "splits", "channel_splits", "shape",
                             "input_split"})  # timm focalnet: [dim, dim, gates]
# A sync of ``config.<attr>`` sets a size the module reads from its config (``self.config.num_attention_heads``),
# on a copy of the config that module alone holds; ``<attr>`` must be in ``SYNC_ATTRS``.
CONFIG = "config."


# Who hears that two tracked sizes were found equal (``assert embed_dim == self.embed_dim``): the running
# tracer, innermost last (see ``Tracer.compared``).
COMPARED: list = []
# Who hears that a tracked size was read as a number rather than a size (``hidden_size ** 0.5``, ``1 / dim``,
# ``float(n)``): the running tracer, innermost last (see ``Tracer.number``).
NUMBERS: list = []


class _Linear(int):
    """Sums and differences keep their tracked terms (see ``_combine``); pickles as a plain int."""

    def __add__(self, other: Any) -> Any:
        return _combine(self, other, 1)

    def __radd__(self, other: Any) -> Any:
        return _combine(other, self, 1)

    def __sub__(self, other: Any) -> Any:
        return _combine(self, other, -1)

    def __rsub__(self, other: Any) -> Any:
        return _combine(other, self, -1)

    def __reduce__(self):
        return int, (int(self),)


class Size(_Linear):
    """An int read from ``space`` (a tensor dimension) or ``attr`` (module name, attribute), over ``div``.

    Its value is the origin's size floor-divided by ``div``; ``index`` is set for an element of a
    list attribute (``SYNC_LIST_ATTRS``). It pickles and deep-copies as a plain int.
    """

    space: Space | None
    attr: tuple[str, str] | None
    div: int
    index: int | None

    def __new__(cls, value: int, space: Space | None = None, attr: tuple[str, str] | None = None,
                div: int = 1, index: int | None = None) -> Size:
        out = super().__new__(cls, value)
        out.space, out.attr, out.div, out.index = space, attr, div, index
        return out

    def __eq__(self, other: Any) -> Any:
        same = int.__eq__(self, other)
        if same is True and COMPARED and isinstance(other, (Size, Sum, Prod)):
            COMPARED[-1](self, other)
        return same

    def __ne__(self, other: Any) -> Any:
        differ = int.__ne__(self, other)
        if differ is False and COMPARED and isinstance(other, (Size, Sum, Prod)):
            COMPARED[-1](self, other)
        return differ

    __hash__ = int.__hash__

    def _number(self) -> None:
        if NUMBERS:
            NUMBERS[-1](self)

    def __float__(self) -> float:
        self._number()
        return int.__float__(self)

    def __truediv__(self, other: Any) -> Any:
        self._number()
        return int.__truediv__(self, other)

    def __rtruediv__(self, other: Any) -> Any:
        self._number()
        return int.__rtruediv__(self, other)

    def __pow__(self, other: Any, mod: Any = None) -> Any:
        self._number()
        return int.__pow__(self, other, mod)

    def __rpow__(self, other: Any, mod: Any = None) -> Any:
        self._number()
        return int.__rpow__(self, other, mod)

    def __floordiv__(self, other: Any) -> Any:
        out = int(self) // other
        if isinstance(other, int) and not isinstance(other, bool) and other > 0 and int(self) % other == 0:
            return Size(out, self.space, self.attr, self.div * int(other), self.index)
        return out

    def __mul__(self, other: Any) -> Any:
        if isinstance(other, Stride):
            return NotImplemented  # Stride.__rmul__ keeps what the product depends on
        if _plain(other) and other > 0 and self.div % other == 0:  # (C // k) * k is C again
            return Size(int(self) * other, self.space, self.attr, self.div // int(other), self.index)
        if isinstance(other, (Size, Prod)):
            return Prod(int(self) * int(other), (self,) + (other.factors if isinstance(other, Prod) else (other,)))
        return int(self) * other

    __rmul__ = __mul__

    def key(self) -> tuple:
        """What identifies the origin: the same attribute (element) or space, over the same divisor."""
        if self.space is not None:
            return "space", id(find(self.space)), self.div
        return "attr", self.attr, self.index, self.div


class Sum(_Linear):
    """A sum of tracked sizes (``Size`` or ``Prod``) with coefficients +1 or -1 (``terms``), plus a plain
    int ``const``; ``tail`` when the constant is written after every term (``num_heads + 2``: a
    concatenation of the terms' dims and a piece of ``const`` fixed in code)."""

    terms: list[tuple[int, Size | Prod]]
    const: int
    tail: bool

    def __new__(cls, value: int, terms: list[tuple[int, Size | Prod]], const: int, tail: bool = False) -> Sum:
        out = super().__new__(cls, value)
        out.terms, out.const, out.tail = terms, const, tail
        return out


class Prod(_Linear):
    """A product of tracked sizes (``num_heads * C`` of a reshape), factor by factor in order; sums of
    products keep them as terms (Phi-3's ``q_pos + num_key_value_heads * head_dim`` slice bound)."""

    factors: tuple[Size, ...]

    def __new__(cls, value: int, factors: tuple[Size, ...]) -> Prod:
        out = super().__new__(cls, value)
        out.factors = factors
        return out

    def __mul__(self, other: Any) -> Any:
        if isinstance(other, Size):
            return Prod(int(self) * int(other), self.factors + (other,))
        if isinstance(other, Stride):
            return NotImplemented
        return int(self) * other

    def __rmul__(self, other: Any) -> Any:
        if isinstance(other, Size):
            return Prod(int(other) * int(self), (other,) + self.factors)
        return int(other) * int(self)

    def key(self) -> tuple:
        """What identifies the product: its factors' origins, in order."""
        return ("prod",) + tuple(f.key() for f in self.factors)


_TRACKED = frozenset({Size, Sum, Prod})
_HOLDERS = _TRACKED | {tuple, torch.Size}  # the types of the attributes ``untag_attributes`` may have to change
_TAGGABLE = frozenset({int, tuple, list})  # the types of the attributes ``tag_attributes`` may tag (and configs)


class Stride(int):
    """``num / den`` times the stride of dim ``dim`` of ``src``, as read by ``src.stride()``: a step of
    ``num / den`` positions along that dim, whatever its stride becomes once another dim is narrower.

    Multiplying by a plain int or by a size no plan changes (a size read from a shape adds its dim to
    ``spaces``, which the reader pins), or an exact floor division, keeps it a stride; anything else
    is a plain int. ``rules/strided.py`` reads it; it pickles and deep-copies as a plain int.
    """

    src: torch.Tensor
    dim: int
    num: int
    den: int
    spaces: tuple[Space, ...]

    def __new__(cls, value: int, src: torch.Tensor, dim: int, num: int = 1, den: int = 1,
                spaces: tuple[Space, ...] = ()) -> Stride:
        out = super().__new__(cls, value)
        out.src, out.dim, out.num, out.den, out.spaces = src, dim, num, den, tuple(spaces)
        return out

    def __mul__(self, other: Any) -> Any:
        dims = _fixed_dims(other)
        if dims is None or int(other) <= 0:
            return int(self) * other
        return Stride(int(self) * int(other), self.src, self.dim, self.num * int(other), self.den, self.spaces + dims)

    __rmul__ = __mul__

    def __floordiv__(self, other: Any) -> Any:
        if _plain(other) and not isinstance(other, Stride) and other > 0 and int(self) % other == 0:
            return Stride(int(self) // other, self.src, self.dim, self.num, self.den * int(other), self.spaces)
        return int(self) // other

    def __reduce__(self):
        return int, (int(self),)


def _fixed_dims(v: Any) -> tuple[Space, ...] | None:
    """The dims whose sizes ``v`` is read from, when nothing else can change it (a plain int, a shape read,
    an attribute no plan sets); None otherwise."""
    if isinstance(v, Prod):
        parts = [_fixed_dims(f) for f in v.factors]
        return None if any(p is None for p in parts) else tuple(s for p in parts for s in p)
    if isinstance(v, Size):
        if v.space is not None:
            return (v.space,)
        return None if v.index is not None or syncable(v.attr[1]) else ()
    if isinstance(v, (Sum, Stride, bool)) or not isinstance(v, int):
        return None
    return ()


def strides(value: Any, t: torch.Tensor, dim: int | None) -> Any:
    """``x.stride()`` / ``x.stride(dim)`` with the stride of every dim but the last a ``Stride``."""
    last = t.dim() - 1
    if isinstance(value, tuple):
        return tuple(Stride(v, t, k) if k < last else v for k, v in enumerate(value))
    if isinstance(value, int) and dim is not None and dim < last:
        return Stride(value, t, dim)
    return value


def _plain(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, (bool, Size, Sum, Prod))


def _linear(x: Any) -> tuple[list[tuple[int, Size | Prod]], int] | None:
    if isinstance(x, (Size, Prod)):
        return [(1, x)], 0
    if isinstance(x, Sum):
        return list(x.terms), x.const
    if isinstance(x, int) and not isinstance(x, bool):
        return [], int(x)
    return None


def _combine(a: Any, b: Any, sign: int) -> Any:
    """``a + sign * b`` keeping the tracked terms; terms that cancel (``a - a``) drop out."""
    la, lb = _linear(a), _linear(b)
    if la is None or lb is None:
        return NotImplemented
    value = int(a) + sign * int(b)
    terms: list[tuple[int, Size | Prod]] = []
    for c, t in la[0] + [(sign * c, t) for c, t in lb[0]]:
        j = next((j for j, (c2, t2) in enumerate(terms) if c2 == -c and t2 is t), None)
        if j is None:
            terms.append((c, t))
        else:
            del terms[j]
    tail = _tail(b, lb) and not la[1] if lb[0] else _tail(a, la)
    return Sum(value, terms, la[1] + sign * lb[1], tail) if terms else value


def _tail(x: Any, lx: tuple[list, int]) -> bool:
    """``x``'s constant, if any, comes after its terms."""
    return not lx[1] or (isinstance(x, Sum) and x.tail)


def sized(value: Any, spaces: list[Space], dim: int | None) -> Any:
    """``x.shape`` / ``x.size(dim)``'s result with each int tagged by the space it measures."""
    if isinstance(value, torch.Size):
        return torch.Size([Size(n, s) for n, s in zip(value, spaces)])
    if isinstance(value, int) and dim is not None:
        return Size(value, spaces[dim])
    return value


def tag_attributes(model: nn.Module, modules: list[tuple[str, nn.Module]] | None = None
                   ) -> list[tuple[nn.Module, str, Any]]:
    """Make every plain int attribute of every module a ``Size`` naming it, and each element of a split
    list attribute (``SYNC_LIST_ATTRS``) one naming its index; a module's ``config`` becomes a tagged copy
    (``_tagged_config``), except an outermost whole model's (one with ``save_pretrained``: its config
    describes what is saved and rebuilt, see ``io/hf.py``); a whole model inside another (``RwkvModel`` in
    ``RwkvForCausalLM``) has its config tagged like a layer's; returns what to restore. ``modules``:
    ``named_modules(model)`` when the caller has it already."""
    changed = []
    seen: set[int] = set()
    wholes: list[str] = []  # the whole models met so far (named_modules lists a parent before its children)
    for name, mod in named_modules(model) if modules is None else modules:
        if id(mod) in seen:
            continue
        seen.add(id(mod))
        whole = _whole_model(mod)
        inner = whole and any(not w or name.startswith(w + ".") for w in wholes)
        if whole:
            wholes.append(name)
        d = vars(mod)
        # by exact type first, in one pass: this looks at every attribute of every module
        for k, v in [(k, v) for k, v in d.items() if type(v) in _TAGGABLE or k == "config"]:
            tp = type(v)
            if tp is int:
                if k[:1] == "_":  # torch's own state (hooks, parameters ...) and private attributes: never tagged
                    continue
                d[k] = Size(v, attr=(name, k))
            elif tp is tuple or tp is list:
                if k not in SYNC_LIST_ATTRS or not v or not all(type(e) is int for e in v):
                    continue
                d[k] = tp(Size(e, attr=(name, k), index=i) for i, e in enumerate(v))
            elif _is_config(v) and (inner or not whole):
                d[k] = _tagged_config(v, name)
            else:
                continue
            changed.append((mod, k, v))
    return changed


def _whole_model(mod: nn.Module) -> bool:
    """``callable(getattr(mod, "save_pretrained", None))`` without ``nn.Module.__getattr__``'s exception for the
    (usual) module that has no such attribute."""
    cls, d = type(mod), vars(mod)
    if (getattr(cls, "save_pretrained", None) is None and cls.__getattr__ is nn.Module.__getattr__
            and cls.__getattribute__ is object.__getattribute__ and "save_pretrained" not in d
            and "save_pretrained" not in d.get("_modules", ()) and "save_pretrained" not in d.get("_parameters", ())
            and "save_pretrained" not in d.get("_buffers", ())):
        return False
    return callable(getattr(mod, "save_pretrained", None))


def _is_config(v: Any) -> bool:
    """A Hugging Face style config object: plain attributes, readable as a dict (not a module or tensor)."""
    return (not isinstance(v, (nn.Module, torch.Tensor)) and hasattr(v, "__dict__")
            and callable(getattr(v, "to_dict", None)))


def _tagged_config(config: Any, module: str) -> Any:
    """A shallow copy of ``config`` for ``module``, its int attributes ``Size`` s named ``config.<attr>``:
    a size the module's code reads from its (shared) config follows like one of its own attributes, and
    a plan sets it on a copy of the config that module alone holds (see ``config_attr``)."""
    out = copy.copy(config)
    d = vars(out)
    for k, v in list(d.items()):
        if type(v) is int and not k.startswith("_"):
            d[k] = Size(v, attr=(module, CONFIG + k))
    return out


def numbers_read(v: Any) -> list[Size]:
    """The tracked sizes inside ``v`` (a ``Size``, or the terms and factors of a ``Sum`` or ``Prod``)."""
    if isinstance(v, Size):
        return [v]
    if isinstance(v, Sum):
        return [s for _, t in v.terms for s in numbers_read(t)]
    if isinstance(v, Prod):
        return list(v.factors)
    return []


def config_attr(attr: str) -> str | None:
    """The config attribute a sync name ``config.<attr>`` sets, or None for a module attribute."""
    return attr[len(CONFIG):] if attr.startswith(CONFIG) else None


def syncable(attr: str, element: bool = False) -> bool:
    """A plan may set ``attr`` (an element of it when ``element``): ``SYNC_ATTRS`` / ``SYNC_LIST_ATTRS``,
    or ``config.<a>`` for ``a`` in ``SYNC_ATTRS``."""
    if element:
        return attr in SYNC_LIST_ATTRS
    return (config_attr(attr) or attr) in SYNC_ATTRS


def untag_attributes(model: nn.Module, changed: list[tuple[nn.Module, str, Any]]) -> None:
    """Undo ``tag_attributes`` and turn any ``Size`` the forward stored on a module back into an int."""
    for mod, k, v in changed:
        now = vars(mod).get(k)
        if (k == "config" or isinstance(now, Size)
                or (type(now) in (tuple, list) and any(isinstance(e, Size) for e in now))):
            vars(mod)[k] = v
    for _, mod in named_modules(model):
        d = vars(mod)
        # by exact type, in one pass: this looks at every attribute of every module
        for k, v in [(k, v) for k, v in d.items() if type(v) in _HOLDERS]:
            tp = type(v)
            if tp in _TRACKED:
                d[k] = int(v)
            elif not _TRACKED.isdisjoint(map(type, v)):
                ints = [int(e) if type(e) in _TRACKED else e for e in v]
                d[k] = torch.Size(ints) if tp is torch.Size else tuple(ints)
