"""One pass over a module tree for what surgery, validation and verification read of it.

``named_modules``, ``named_parameters`` and ``named_buffers`` each walk the tree again through nested
generators, and a plan's checks asked for all three several times per call: on models of a thousand
modules those walks cost more than the checks. ``walk`` gives the same names in the same order at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


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
