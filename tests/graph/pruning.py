"""Shared by the graph tests: plan, apply and check that the pruned model keeps the output shape."""
import torch

import secateurs as sc


def pruned(model, x, ratio=0.3):
    """Return ``(plan, pruned model)`` for ``sc.plan(model, x, ratio)``, asserting the output shape is kept."""
    p = sc.plan(model, x, ratio=ratio)
    small = sc.apply(model, p)
    with torch.no_grad():
        assert small(x).shape == model(x).shape
    return p, small
