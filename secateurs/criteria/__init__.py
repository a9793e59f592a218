"""Importance criteria: a score per group element, higher means more important. One registry by name."""
from .registry import CRITERIA, get_criterion, register
from . import magnitude, random  # noqa: F401  (registers the built-in criteria)

__all__ = ["CRITERIA", "get_criterion", "register"]
