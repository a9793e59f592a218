"""Shared fixtures for the sensitivity and allocation tests: a small MNIST-1D CNN and a fidelity metric."""
import pytest
import torch

from secateurs.examples import models
from secateurs.search.sensitivity import sensitivity


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # tiny models: one thread is much faster than two contending ones
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fidelity(model, x):
    """Negative MSE to ``model``'s output on ``x`` (0 = identical, higher is better)."""
    with torch.no_grad():
        ref = model.eval()(x).clone()

    def evaluate(m):
        with torch.no_grad():
            return -float(((m.eval()(x) - ref) ** 2).mean())

    return evaluate


@pytest.fixture(scope="module")
def setup():
    model = models.mnist1d_cnn(channels=16, seed=0).eval()
    x = torch.randn(32, 1, 40, generator=torch.Generator().manual_seed(0))
    evaluate = fidelity(model, x)
    return model, x, evaluate, sensitivity(model, x, evaluate, quiet=True)
