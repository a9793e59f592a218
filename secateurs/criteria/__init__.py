"""Importance criteria: a score per element or group element, higher means more important."""
# The registry first, then the built-ins register in this order: isort must not merge or sort these.
# isort: off
from .registry import CRITERIA, Context, Criterion, aggregate, check_data, get_criterion, register
from . import magnitude, random  # noqa: F401,E402  (registers the built-in criteria)
from . import bn_scale, fpgm, gradient, lamp, movement  # noqa: F401,E402
# isort: on

__all__ = ["CRITERIA", "Context", "Criterion", "aggregate", "check_data", "get_criterion", "register"]
