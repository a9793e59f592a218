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



def blobs(n: int = 1200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A small labelled problem for ``Tiny``: 6 features, the class says which side of a plane a point is on."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).long()


def blobs_data() -> dict:
    """A recipe's ``data:`` function: test accuracy on held-out blobs and a short fine-tune on training ones."""
    from secateurs.examples import train
    from secateurs.train import recover

    x, y = blobs()
    x_train, y_train, x_test, y_test = x[:800], y[:800], x[800:], y[800:]
    batches = train.batches(x_train, y_train, batch_size=64, n=8, seed=0)

    def finetune(model: nn.Module, steps: int) -> nn.Module:
        return recover(model, batches, steps=steps, lr=3e-3, quiet=True, seed=0)

    return {"example_inputs": x_test[:64], "evaluate": lambda m: train.accuracy(m, x_test, y_test),
            "finetune": finetune}


def calibrated_data() -> dict:
    """A recipe's ``data:`` function for ``mnist1d_cnn(channels=8)``: output fidelity plus calibration inputs."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 40, generator=g)
    return {"example_inputs": x, "evaluate": lambda m: float(-m.eval()(x).abs().mean()),
            "calibration": [torch.randn(16, 1, 40, generator=g) for _ in range(3)]}
