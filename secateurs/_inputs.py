"""Example inputs: one normal form for a tensor, a tuple of tensors, or a dict of keyword inputs; argument checks."""
from __future__ import annotations

import numbers
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

ExampleInputs = torch.Tensor | tuple | list | Mapping[str, Any]


def check_module(model: Any, name: str = "model") -> nn.Module:
    """Return ``model`` if it is an ``nn.Module``; otherwise raise a TypeError naming the parameter."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_int(value: Any, name: str, minimum: int) -> int:
    """Return ``value`` as an int if it is an integer (numpy ones too) >= ``minimum``; else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_inputs(example_inputs: Any) -> ExampleInputs:
    """Validate the shape of ``example_inputs`` (tensor, tuple/list of args, or dict of kwargs)."""
    if isinstance(example_inputs, (torch.Tensor, tuple, list, Mapping)):
        return example_inputs
    raise TypeError(
        "example_inputs must be a tensor, a tuple of positional inputs or a dict of keyword inputs, "
        f"got {type(example_inputs).__name__}"
    )


def call_model(model: nn.Module, example_inputs: ExampleInputs) -> Any:
    """Run ``model`` on ``example_inputs`` in the calling convention their type implies."""
    if isinstance(example_inputs, torch.Tensor):
        return model(example_inputs)
    if isinstance(example_inputs, Mapping):
        return model(**example_inputs)
    return model(*example_inputs)


def batch_size_of(example_inputs: ExampleInputs) -> int | None:
    """The leading dimension of the first tensor input, or None when there is no tensor."""
    for t in iter_tensors(example_inputs):
        return int(t.shape[0]) if t.dim() else None
    return None


def iter_tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Yield every tensor nested in ``obj`` (tensors, tuples, lists, dicts, namedtuples, ModelOutputs)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from iter_tensors(v)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from iter_tensors(v)


def run_forward(model: nn.Module, example_inputs: ExampleInputs, what: str = "model") -> Any:
    """Call the model, turning a failure into a ValueError that shows the original exception."""
    try:
        return call_model(model, example_inputs)
    except Exception as exc:  # noqa: BLE001 - re-raised with context for the user
        raise ValueError(
            f"forward of {what} failed on example_inputs: {type(exc).__name__}: {exc}"
        ) from exc
