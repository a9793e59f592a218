"""Where a Python int came from: sizes read from shapes or module attributes keep their origin.

While a model is traced, ``B, N, C = x.shape`` (and ``x.size(d)``) hands out ``Size`` ints that
remember the index space of each dimension, and every plain int attribute of every module
(``self.conv.in_channels``, ``self.num_heads``) reads as a ``Size`` that remembers its module and
attribute. Floor division by an int keeps the origin, with the divisor. A rule meeting such an int
as a view or split size ties the dimension it sets to that origin instead of pinning it as a
number fixed in code, so ``reshape(B, N, C)`` follows C's space and surgery knows which attribute
to update without matching values by coincidence.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .space import Space

# The module attributes a plan may set (its "syncs"): integer sizes that model code reads back, named
# as torch, torchvision, timm and transformers name them. A size held in any other attribute pins its
# channels instead; ``Plan.validate`` rejects a sync of anything else (``stride``, ``forward`` ...).
SYNC_ATTRS = frozenset({
    "groups", "num_groups", "normalized_shape", "num_heads",  # written by the layer and attention rules
    "heads", "n_heads", "n_head", "num_attention_heads", "num_key_value_heads", "num_kv_heads", "n_kv_heads",
    "num_key_value_groups", "n_rep",
    "head_dim", "head_size", "dim_head", "attention_head_size", "all_head_size",
    "dim", "hidden_dim", "hidden_size", "hidden_features", "embed_dim", "embedding_dim", "n_embd", "d_model",
    "width", "inner_dim", "intermediate_size", "ffn_dim", "mlp_dim", "d_ff", "n_inner", "split_size",
    "attn_dim", "key_dim", "val_dim", "val_attn_dim",
    "channels", "num_channels", "in_channels", "out_channels", "num_features", "in_features", "out_features",
    "input_size",  # recurrent layers (hidden_size is above)
    "num_experts", "num_local_experts", "n_routed_experts",  # mixture of experts (rules/moe.py)
})


class Size(int):
    """An int read from ``space`` (a tensor dimension) or ``attr`` (module name, attribute), over ``div``.

    Its value is the origin's size floor-divided by ``div``. It pickles and deep-copies as a plain int.
    """

    space: Space | None
    attr: tuple[str, str] | None
    div: int

    def __new__(cls, value: int, space: Space | None = None, attr: tuple[str, str] | None = None,
                div: int = 1) -> "Size":
        out = super().__new__(cls, value)
        out.space, out.attr, out.div = space, attr, div
        return out

    def __floordiv__(self, other: Any) -> Any:
        out = int(self) // other
        if isinstance(other, int) and not isinstance(other, bool) and other > 0 and int(self) % other == 0:
            return Size(out, self.space, self.attr, self.div * int(other))
        return out

    def __reduce__(self):
        return int, (int(self),)


def sized(value: Any, spaces: list[Space], dim: int | None) -> Any:
    """``x.shape`` / ``x.size(dim)``'s result with each int tagged by the space it measures."""
    if isinstance(value, torch.Size):
        return torch.Size([Size(n, s) for n, s in zip(value, spaces)])
    if isinstance(value, int) and dim is not None:
        return Size(value, spaces[dim])
    return value


def tag_attributes(model: nn.Module) -> list[tuple[nn.Module, str, int]]:
    """Make every plain int attribute of every module a ``Size`` naming it; returns what to restore."""
    changed = []
    seen: set[int] = set()
    for name, mod in model.named_modules():
        if id(mod) in seen:
            continue
        seen.add(id(mod))
        d = vars(mod)
        for k, v in list(d.items()):
            if type(v) is int and not k.startswith("_"):
                d[k] = Size(v, attr=(name, k))
                changed.append((mod, k, v))
    return changed


def untag_attributes(model: nn.Module, changed: list[tuple[nn.Module, str, int]]) -> None:
    """Undo ``tag_attributes`` and turn any ``Size`` the forward stored on a module back into an int."""
    for mod, k, v in changed:
        if isinstance(vars(mod).get(k), Size):
            vars(mod)[k] = v
    for mod in model.modules():
        d = vars(mod)
        for k, v in list(d.items()):
            if isinstance(v, Size):
                d[k] = int(v)
            elif isinstance(v, tuple) and any(isinstance(e, Size) for e in v):
                plain = [int(e) if isinstance(e, Size) else e for e in v]
                d[k] = torch.Size(plain) if isinstance(v, torch.Size) else tuple(plain) if type(v) is tuple else v
