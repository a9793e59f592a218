"""secateurs: prune PyTorch models for real, and measure what it saves.

    g = sc.trace(model, x)                      # coupled groups of channels / neurons / heads
    p = sc.plan(model, x, ratio=0.5)            # what goes: pure data, JSON-serialisable
    small = sc.apply(model, p)                  # a new, physically smaller model
    print(sc.measure(small, x))                 # params, MACs, bytes, latency
"""
from .criteria import CRITERIA, get_criterion, register
from .graph import Graph, Group, trace
from .measure import Measurement, Sparsity, measure, sparsity
from .prune import Plan, apply, finalize, plan, prune

__all__ = ["CRITERIA", "Graph", "Group", "Measurement", "Plan", "Sparsity", "apply", "finalize", "get_criterion",
           "measure", "plan", "prune", "register", "sparsity", "trace"]
__version__ = "0.1.0"
