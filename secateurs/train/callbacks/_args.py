"""The arguments every framework callback takes, checked once."""
from __future__ import annotations

from ..pruner import Pruner


def check_callback_args(pruner: Pruner, every: str) -> None:
    """``pruner`` is a secateurs Pruner and ``every`` says when it steps: "step" or "epoch"."""
    if not isinstance(pruner, Pruner):
        raise TypeError(f"pruner must be a secateurs Pruner, got {type(pruner).__name__}")
    if every not in ("step", "epoch"):
        raise ValueError(f"every must be 'step' or 'epoch', got {every!r}")
