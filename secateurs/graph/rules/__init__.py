"""Per-op channel rules: how each torch call ties the index spaces of its inputs and outputs.

One module per op family; importing them registers their rules in ``RULES``.
"""
from __future__ import annotations

from collections.abc import Callable

from ..tracer import OpCall, Tracer

# Registration order matters: isort must not merge or sort these.
# isort: off
from . import attention, layers, recurrent, reductions, shape  # noqa: F401  (registers the rules)
from . import moe  # noqa: F401,E402  (after the others: it wraps some of their rules)
from . import strided  # noqa: F401,E402
# isort: on
from .base import IGNORE, RULES, default, pointwise
from .reductions import POOL, spatial

__all__ = ["IGNORE", "RULES", "lookup", "pointwise"]


def lookup(name: str) -> Callable[[Tracer, OpCall], None]:
    """The rule for an op name (pooling/resampling ops are matched by pattern)."""
    found = RULES.get(name)
    if found is not None:
        return found
    return spatial if POOL.match(name) else default
