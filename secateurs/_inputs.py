"""Example inputs: one normal form for a tensor, a tuple of tensors, or a dict of keyword inputs; argument checks."""
from __future__ import annotations

import functools
import numbers
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

ExampleInputs = torch.Tensor | tuple | list | Mapping[str, Any]


def check_module(model: Any, name: str = "model") -> nn.Module:
    """Return ``model`` if it is an ``nn.Module``; otherwise raise a TypeError naming the parameter."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_bool(value: Any, name: str) -> bool:
    """``value`` as a bool if it is True or False (numpy's too); else a ValueError naming it (a string or a
    tensor given for a flag would otherwise be read by its truth value)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {shown(value)}")
    return bool(value)


def check_device(value: Any, name: str = "device", hint: str = "") -> torch.device:
    """The torch device ``value`` names, which must work here (a tensor can be made on it); else a ValueError
    naming ``name`` and ending with ``hint``."""
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ValueError(f"{name} {shown(value)} is not a torch device ({exc})") from None
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise ValueError(f"{name} {device} is not available on this machine ({exc})"
                         + (f"; {hint}" if hint else "")) from None
    return device


def check_path(value: Any, name: str) -> str:
    """``value`` as a str path if it is a str or ``os.PathLike``; else a TypeError naming the parameter."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__}")
    return os.fspath(value)


def is_int(value: Any, minimum: int, maximum: int | None = None) -> bool:
    """True if ``value`` is an integer (Python, numpy or a 0-d tensor; not a bool) in ``minimum..maximum``."""
    value = _scalar(value)
    return (not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= minimum
            and (maximum is None or value <= maximum))


def check_int(value: Any, name: str, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` as an int if ``is_int``; else a ValueError naming it and the range."""
    if not is_int(value, minimum, maximum):
        wanted = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise ValueError(f"{name} must be an integer {wanted}, got {shown(value)}")
    return int(_scalar(value))


def check_seed(value: Any) -> int:
    """``seed`` as an int in ``torch.Generator.manual_seed``'s range; else a ValueError naming it."""
    return check_int(value, "seed", -2 ** 63, 2 ** 64 - 1)


def check_round_to(value: Any, what: str) -> int | str:
    """``value`` if it is a valid ``sc.plan`` ``round_to``: a positive integer or "auto"."""
    if isinstance(value, str) and value == "auto":
        return value
    if not is_int(value, 1):
        raise ValueError(f"{what} must be a positive integer or 'auto' (widths snapped to this machine's "
                         f"latency table), got {shown(value)}")
    return int(value)


def is_real(value: Any, interval: str = "(-inf, inf)") -> bool:
    """True if ``value`` is a real number (Python, numpy or a 0-d tensor; not a bool, not NaN) inside
    ``interval``, written as in messages: ``"[0, 1)"``, ``"(0, inf)"``, ``"[-inf, inf]"`` (infinities only
    where the bracket closes)."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    low, high, closed_low, closed_high = _bounds(interval)
    return (low <= value if closed_low else low < value) and (value <= high if closed_high else value < high)


def check_real(value: Any, name: str, interval: str = "(-inf, inf)") -> float:
    """Return ``value`` as a float if ``is_real``; else a ValueError naming it and the interval."""
    if not is_real(value, interval):
        raise ValueError(f"{name} must be a number in {interval}, got {shown(value)}")
    return float(_scalar(value))


def _scalar(value: Any) -> Any:
    """A 0-d tensor's Python number (a bool tensor stays a tensor: it is no number); anything else as it is."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and value.dtype != torch.bool:
        return value.item()
    return value


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a value from an untrusted file may be huge)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


@functools.lru_cache(maxsize=64)
def _bounds(interval: str) -> tuple[float, float, bool, bool]:
    m = re.fullmatch(r"([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])", interval)
    if m is None:
        raise ValueError(f"not an interval: {interval!r} (write it as '[0, 1)' or '(0, inf)')")
    return float(m[2]), float(m[3]), m[1] == "[", m[4] == "]"


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
