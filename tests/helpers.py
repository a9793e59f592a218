"""Small shared helpers for the test-suite."""
from __future__ import annotations

import torch

from secateurs._inputs import call_model, iter_tensors


def outputs(model, x, train: bool = False) -> list[torch.Tensor]:
    model.train(train)
    with torch.no_grad():
        return list(iter_tensors(call_model(model, x)))


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
