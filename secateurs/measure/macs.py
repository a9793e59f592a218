"""Count multiply-accumulates (MACs) of one forward pass with a ``TorchFunctionMode``.

Ops with a rule (convolutions, linear, matrix products, einsum, scaled-dot-product attention,
normalisations) are counted and run with the mode off, so nothing inside them is counted twice.
Python-level functions without a rule (``F.multi_head_attention_forward``, ``Tensor.__rmatmul__``,
...) are re-entered with the mode on, so the ops they are built from are counted.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FunctionType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode, redispatch_function

from secateurs._inputs import ExampleInputs, check_inputs, check_module, run_forward
from secateurs.measure._common import eval_mode

KINDS = ("conv", "linear", "matmul", "attention", "norm")


@dataclass(frozen=True)
class MacCount:
    """Multiply-accumulates of one forward pass: the ``total`` and its split ``by_kind`` (see ``KINDS``)."""

    total: int
    by_kind: dict[str, int]


def count_macs(model: nn.Module, example_inputs: ExampleInputs) -> MacCount:
    """Count the MACs of one eval-mode forward of ``model`` on ``example_inputs`` (the model is left unchanged)."""
    check_module(model)
    check_inputs(example_inputs)
    counter = _MacCounter()
    with eval_mode(model), torch.inference_mode(), counter:
        run_forward(model, example_inputs)
    return MacCount(total=sum(counter.by_kind.values()), by_kind=dict(counter.by_kind))


class _MacCounter(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.by_kind = dict.fromkeys(KINDS, 0)
        self.entered: set[Callable] = set()

    def __torch_function__(
        self, func: Callable, types: Any, args: Sequence[Any] = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        rule = _RULES.get(func)
        if rule is not None:
            kind, macs = rule
            out = func(*args, **kwargs)
            self.by_kind[kind] += int(macs(args, kwargs, out))
            return out
        if isinstance(func, FunctionType) and func not in self.entered:
            # a Python override such as Tensor.unflatten calls super(), which dispatches as itself
            # again: that inner call runs with the mode off instead of recursing forever
            self.entered.add(func)
            try:
                with self:
                    return redispatch_function(func, types, args, kwargs)
            finally:
                self.entered.discard(func)
        return func(*args, **kwargs)


def _arg(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs[name]


def _conv(args, kwargs, out) -> int:
    # weight is (C_out, C_in / groups, *kernel): each output element takes C_in / groups * kernel MACs
    return out.numel() * math.prod(_arg(args, kwargs, 1, "weight").shape[1:])


def _conv_transpose(args, kwargs, out) -> int:
    # weight is (C_in, C_out / groups, *kernel): each input element is scattered into that many outputs
    return _arg(args, kwargs, 0, "input").numel() * math.prod(_arg(args, kwargs, 1, "weight").shape[1:])


def _inner(index: int, name: str) -> Callable:
    # products whose reduction length is the last dim of one operand: out.numel() * that length
    return lambda args, kwargs, out: out.numel() * _arg(args, kwargs, index, name).shape[-1]


def _addbmm(args, kwargs, out) -> int:
    return _arg(args, kwargs, 1, "batch1").numel() * _arg(args, kwargs, 2, "batch2").shape[-1]


def _attention(args, kwargs, out) -> int:
    query, key, value = (_arg(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value")))
    target, embed = query.shape[-2], query.shape[-1]
    if target * embed == 0:
        return 0
    batch = query.numel() // (target * embed)
    return batch * target * key.shape[-2] * (embed + value.shape[-1])


def _norm(args, kwargs, out) -> int:
    return out.numel()


def _einsum(args, kwargs, out) -> int:
    operands = _arg(args, kwargs, 1, "tensors")
    path = args[2] if len(args) > 2 else kwargs.get("path")
    pairs = None if path is None else list(zip(path[0::2], path[1::2]))
    return _einsum_macs(_arg(args, kwargs, 0, "equation"), [t.shape for t in operands], pairs)


def _einsum_macs(equation: str, shapes: Sequence[Sequence[int]], path: Sequence[tuple[int, int]] | None) -> int:
    # contracted pairwise, left to right or along torch's flattened opt_einsum-style ``path`` (pairs of
    # operand positions, the result appended at the end); a contraction costs the product of the
    # sizes of every index either operand carries
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    terms = [_labels(term, len(shape)) for term, shape in zip(lhs.split(","), shapes)]
    sizes: dict[Any, int] = {}
    for labels, shape in zip(terms, shapes):
        for label, size in zip(labels, shape):
            if size != 1 or label not in sizes:
                sizes[label] = size
    ellipsis = {label for labels in terms for label in labels if isinstance(label, int)}
    if arrow:
        output = set(rhs.replace("...", "")) | ellipsis
    else:
        letters = [label for labels in terms for label in labels if isinstance(label, str)]
        output = {label for label in letters if letters.count(label) == 1} | ellipsis
    operands = [set(labels) for labels in terms]
    if path is None:  # torch folds left to right: (0, 1), then the next operand with that result, now last
        path = [(0, 1)] + [(0, n - 1) for n in range(len(operands) - 1, 1, -1)] if len(operands) > 1 else []
    total = 0
    for i, j in path:
        pair = operands[i] | operands[j]
        operands = [labels for k, labels in enumerate(operands) if k not in (i, j)]
        total += math.prod(sizes[label] for label in pair)
        operands.append(pair & output.union(*operands))
    return total


def _labels(term: str, ndim: int) -> list[Any]:
    # explicit indices are letters; the dims under "..." are numbered from the right, so they broadcast
    if "..." not in term:
        return list(term)
    before, after = term.split("...")
    hidden = ndim - len(before) - len(after)
    return [*before, *range(hidden, 0, -1), *after]


def _rules() -> dict[Callable, tuple[str, Callable]]:
    rules: dict[Callable, tuple[str, Callable]] = {}
    for dim in (1, 2, 3):
        rules[getattr(torch, f"conv{dim}d")] = ("conv", _conv)
        rules[getattr(torch, f"conv_transpose{dim}d")] = ("conv", _conv_transpose)
    rules[F.linear] = ("linear", _inner(1, "weight"))
    for name, index, operand in (
        ("matmul", 0, "input"), ("mm", 0, "input"), ("bmm", 0, "input"), ("addmm", 1, "mat1"), ("baddbmm", 1, "batch1")
    ):
        rules[getattr(torch, name)] = rules[getattr(torch.Tensor, name)] = ("matmul", _inner(index, operand))
    rules[torch.addbmm] = rules[torch.Tensor.addbmm] = ("matmul", _addbmm)
    if hasattr(torch, "_grouped_mm"):  # mixture-of-experts layers: tokens (S, K) times their expert's (K, N)
        rules[torch._grouped_mm] = ("matmul", _inner(0, "mat_a"))
    rules[torch._C._VariableFunctions.einsum] = ("matmul", _einsum)
    rules[F.scaled_dot_product_attention] = ("attention", _attention)
    for name in ("batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"):
        rules[getattr(F, name)] = rules[getattr(torch, name)] = ("norm", _norm)
    return rules


_RULES = _rules()
