"""A model's modules, parameters and buffers, named as ``nn.Module`` names them, in one loop each.

``named_modules`` (and ``named_parameters``/``named_buffers``, built on it) recurses through a generator
per level of nesting, so each name costs as many resumptions as its module is deep: on a model of
thousands of modules one walk costs as much as tracing hundreds of ops, and a trace walks the model
several times.
"""
from __future__ import annotations

import torch
from torch import nn


def named_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``list(model.named_modules())``: depth first, parents before children, each module once under its first name."""
    out: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def visit(name: str, mod: nn.Module) -> None:
        if id(mod) in seen:
            return
        seen.add(id(mod))
        out.append((name, mod))
        prefix = name + "." if name else ""
        for k, child in mod._modules.items():
            if child is not None:
                visit(prefix + k, child)

    visit("", model)
    return out


def named_tensors(modules: list[tuple[str, nn.Module]], buffers: bool = False) -> list[tuple[str, torch.Tensor]]:
    """``list(model.named_parameters())`` (``list(model.named_buffers())`` with ``buffers``) from the model's
    ``named_modules``: each tensor once under its first name."""
    out: list[tuple[str, torch.Tensor]] = []
    seen: set[int] = set()
    for name, mod in modules:
        prefix = name + "." if name else ""
        for k, t in (mod._buffers if buffers else mod._parameters).items():
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                out.append((prefix + k, t))
    return out
