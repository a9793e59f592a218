"""Targets for recipe and CLI tests: model factories good and bad, and stdlib functions in disguise."""
from os import system as build  # noqa: F401 - a builtin re-exported under an innocent name
from shutil import rmtree as wipe  # noqa: F401 - a stdlib Python function re-exported

import torch
from torch import nn

CALLS: list[dict] = []


def tiny(width: int = 4) -> nn.Module:
    """A small real model."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 2)).eval()


class Tiny(nn.Sequential):
    def __init__(self, width: int = 4):
        super().__init__(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 2))


class NotAModule:
    def __init__(self, **kwargs):
        CALLS.append(kwargs)


def not_a_model(**kwargs) -> int:
    CALLS.append(kwargs)
    return 42


def broken() -> nn.Module:
    return 1 / 0


def data() -> dict:
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    return {"example_inputs": x, "evaluate": lambda m: float(-m(x).abs().mean())}
