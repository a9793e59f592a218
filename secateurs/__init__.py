"""secateurs: prune PyTorch models for real, and measure what it saves.

    g = sc.trace(model, x)                      # coupled groups of channels / neurons / heads
    p = sc.plan(model, x, ratio=0.5)            # what goes: pure data, JSON-serialisable
    small = sc.apply(model, p)                  # a new, physically smaller model
    print(sc.measure(small, x))                 # params, MACs, bytes, latency
    front = sc.explore(model, x, evaluate)      # sweep, measure, Pareto front
    best = front.pick(max_drop=0.01, minimize="latency")
"""
from . import posttrain
from .criteria import CRITERIA, get_criterion, register
from .deploy import OnnxModel, export_onnx, quantize
from .graph import Graph, Group, trace
from .io import load, save
from .measure import Measurement, Sparsity, measure, sparsity
from .measure.staircase import LatencyTable
from .prune import Plan, apply, finalize, plan, prune
from .search import Front, explore
from .train import Constant, Iterative, LotteryTicket, OneShot, Polynomial, Pruner

__all__ = ["CRITERIA", "Constant", "Iterative", "LotteryTicket", "OneShot", "Polynomial", "Pruner",
           "Front", "Graph", "Group", "LatencyTable", "Measurement", "Plan", "Sparsity", "apply", "explore", "finalize",
           "OnnxModel", "export_onnx", "quantize",
           "get_criterion", "load", "measure", "plan", "posttrain", "prune", "register", "save", "sparsity", "trace"]
__version__ = "0.1.0"
