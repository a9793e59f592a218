import pytest
import torch

import secateurs as sc
from secateurs.examples.models import mnist1d_cnn
from secateurs.train.callbacks import fit
from secateurs.train.regularizers import GroupLasso

pytestmark = pytest.mark.usefixtures("one_thread")


def batches():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 1, 40, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(4)]


def test_fit_prunes_along_the_schedule_with_a_regulariser():
    model = mnist1d_cnn(channels=8)
    x = batches()[0][0][:2]
    pr = sc.Pruner(model, x, sc.Polynomial(0.0, 0.6, begin_step=2, end_step=10, frequency=2), granularity="channel")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    reg = GroupLasso(model, x, 1e-3)
    losses = fit(model, batches(), opt, steps=12, pruner=pr, regularizers=[reg])
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    assert pr.step_count == 12 and pr.sparsity == pytest.approx(0.6, abs=1 / 8)
    small = pr.finalize()
    dense = mnist1d_cnn(channels=8)
    assert sum(p.numel() for p in small.parameters()) < 0.5 * sum(p.numel() for p in dense.parameters())


def test_bad_input():
    model = mnist1d_cnn(channels=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    other = sc.Pruner(mnist1d_cnn(channels=8), torch.randn(2, 1, 40), sc.OneShot(1, 0.5))
    with pytest.raises(ValueError, match="pruner"):
        fit(model, batches(), opt, steps=2, pruner=other)
    with pytest.raises(TypeError, match="regularizers\\[0\\]"):
        fit(model, batches(), opt, steps=2, regularizers=[0.1])
    with pytest.raises(TypeError, match="optimizer"):
        fit(model, batches(), "adam", steps=2)
