"""Helpers for the criteria tests: small models and inputs, a couple of batches."""
import torch
import torch.nn.functional as F
from torch import nn

IMAGE = torch.randn(1, 3, 32, 32)


def ce_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def mse_loss(model, batch):
    x, y = batch
    return F.mse_loss(model(x), y)


def image_batches(n=2, size=2, classes=1000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 32, 32, generator=gen), torch.randint(0, classes, (size,), generator=gen))
            for _ in range(n)]


def mlp(d_in=8, hidden=16, d_out=3):
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def unchanged(model, before):
    after = model.state_dict()
    return set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)

