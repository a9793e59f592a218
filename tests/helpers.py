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


def snapshot(model) -> dict:
    """Everything apply could change: tensor values, which Parameter objects sit where, module classes and
    public attributes. Two equal snapshots mean the model was left exactly as it was."""
    return {name: (type(m), {k: v for k, v in vars(m).items() if not k.startswith("_")},
                   {k: (id(p), p.detach().clone()) for k, p in m._parameters.items() if p is not None},
                   {k: b.clone() for k, b in m._buffers.items() if b is not None}, sorted(m._modules))
            for name, m in model.named_modules()}


def same_snapshot(a: dict, b: dict) -> bool:
    """True when two ``snapshot`` results are identical (tensors compared exactly)."""
    if a.keys() != b.keys():
        return False
    for k in a:
        (ta, va, pa, ba, ma), (tb, vb, pb, bb, mb) = a[k], b[k]
        if ta is not tb or va != vb or ma != mb or pa.keys() != pb.keys() or ba.keys() != bb.keys():
            return False
        if any(pa[n][0] != pb[n][0] or not _equal(pa[n][1], pb[n][1]) for n in pa):
            return False
        if any(not _equal(ba[n], bb[n]) for n in ba):
            return False
    return True


def _equal(x: torch.Tensor, y: torch.Tensor) -> bool:
    return x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y)


def train_with_pruner(model, x, pruner, opt, steps: int) -> None:
    """``steps`` optimizer steps on ``model(x).square().mean()``, each followed by ``pruner.step()``."""
    for _ in range(steps):
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step()
