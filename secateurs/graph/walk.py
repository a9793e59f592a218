"""A model's modules, parameters and buffers, named as ``nn.Module`` names them, in one loop each.

``named_modules``/``named_tensors`` list each module and tensor once (as the trace reads them); ``walk``
gives all three in one pass with every path to a shared tensor (as surgery, validation and verification
read them: ``named_parameters(remove_duplicate=False)``).

``named_modules`` (and ``named_parameters``/``named_buffers``, built on it) recurses through a generator
per level of nesting, so each name costs as many resumptions as its module is deep: on a model of
thousands of modules one walk costs as much as tracing hundreds of ops, and a trace walks the model
several times.
"""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class Tree:
    """A module tree's contents, as the ``named_*`` methods list them."""

    modules: list[tuple[str, nn.Module]]  # named_modules(): each module once, under its first name
    params: list[tuple[str, torch.Tensor]]  # named_parameters(remove_duplicate=False)
    buffers: list[tuple[str, torch.Tensor]]  # named_buffers(remove_duplicate=False)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Parameters, then buffers, by name (a name both use keeps the buffer)."""
        out = dict(self.params)
        out.update(self.buffers)
        return out


def walk(model: nn.Module) -> Tree:
    """Every module, parameter and buffer of ``model`` with its dotted name, in one depth-first pass."""
    modules: list[tuple[str, nn.Module]] = []
    params: list[tuple[str, torch.Tensor]] = []
    buffers: list[tuple[str, torch.Tensor]] = []
    seen: set[int] = set()
    stack: list[tuple[str, nn.Module]] = [("", model)]
    while stack:
        name, mod = stack.pop()
        if id(mod) not in seen:
            seen.add(id(mod))
            modules.append((name, mod))
        dot = name + "." if name else ""
        if mod._parameters:
            params += [(dot + k, v) for k, v in mod._parameters.items() if v is not None]
        if mod._buffers:
            buffers += [(dot + k, v) for k, v in mod._buffers.items() if v is not None]
        if mod._modules:
            stack += [(dot + k, m) for k, m in reversed(mod._modules.items()) if m is not None]
    return Tree(modules, params, buffers)
