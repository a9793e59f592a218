"""One zoo check, shared by the CI subset, the full-zoo marker run and benchmarks/zoo.py."""
from __future__ import annotations

import time
import warnings

import torch
import torchvision

import secateurs as sc
from secateurs._inputs import iter_tensors
from secateurs.graph import set_mode
from secateurs.measure import count_macs, count_params

SIZES = {"vit": 224, "maxvit": 224, "swin": 224, "inception": 299}


def example_input(name: str) -> torch.Tensor:
    """Batch size 1: tracing and verification must work on any input the model accepts in eval mode."""
    side = next((s for k, s in SIZES.items() if name.startswith(k)), 64)
    return torch.randn(1, 3, side, side)


def check(name: str, ratio: float = 0.3) -> dict:
    """Prune a randomly initialised torchvision model with default arguments and verify it."""
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = example_input(name)
    t0 = time.perf_counter()
    plan = sc.plan(model, x, ratio=ratio)
    small = sc.apply(model, plan)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        ref = model(x)
        out = small.eval()(x)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    set_mode(small, True)  # batch statistics of one sample are undefined: norms stay in eval
    loss = sum(t.float().square().mean() for t in iter_tensors(small(x)))
    loss.backward()
    assert any(p.grad is not None for p in small.parameters())
    row = dict(model=name, seconds=round(seconds, 2),
               params=(count_params(model), count_params(small)),
               macs=(count_macs(model, x).total, count_macs(small, x).total),
               skipped=len(plan.skipped))
    assert row["params"][1] < row["params"][0] and row["macs"][1] < row["macs"][0], row
    return row
