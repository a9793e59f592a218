"""Shared by the graph tests: trace, plan, apply, and check that the pruned model keeps the output shape."""
import torch

import secateurs as sc


def pruned(model, x, ratio=0.3, graph=None):
    """Return ``(plan, pruned model)`` for ``sc.plan(model, x, ratio)``, asserting the output shape is kept."""
    p = sc.plan(model, x, ratio=ratio, graph=graph)
    small = sc.apply(model, p)
    with torch.no_grad():
        assert small(x).shape == model(x).shape
    return p, small


def pruned_fully_traced(model, x, ratio=0.3):
    """``pruned``, after asserting the trace met no unsupported op (the plan reuses that trace)."""
    g = sc.trace(model, x)
    assert not g.unsupported, str(g)
    return pruned(model, x, ratio, graph=g)
