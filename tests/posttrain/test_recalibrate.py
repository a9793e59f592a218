"""sc.posttrain.recalibrate: BatchNorm statistics re-estimated from calibration batches."""
import pytest
import torch
from torch import nn

import secateurs as sc


def test_statistics_are_the_exact_average_and_only_batchnorm_trains():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.BatchNorm1d(4), nn.Linear(4, 2)).eval()
    model[2].momentum = 0.3
    batches = [torch.randn(16, 3) * (i + 1) + i for i in range(3)]
    out = sc.posttrain.recalibrate(model, batches)
    assert out is not model and torch.equal(model[2].running_mean, torch.zeros(4))
    with torch.no_grad():
        hidden = [model[0](b) for b in batches]  # dropout must not have run (eval)
    assert torch.allclose(out[2].running_mean, torch.stack([h.mean(0) for h in hidden]).mean(0), atol=1e-5)
    assert torch.allclose(out[2].running_var, torch.stack([h.var(0) for h in hidden]).mean(0), atol=1e-4)
    assert out[2].momentum == 0.3 and not out.training and not out[2].training
    assert all(torch.equal(a, b) for a, b in zip(out.parameters(), model.parameters()))
    same = sc.posttrain.recalibrate(model, batches, inplace=True)
    assert same is model and torch.equal(model[2].running_mean, out[2].running_mean)


def test_bad_input():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match="has no BatchNorm layer"):
        sc.posttrain.recalibrate(nn.Linear(3, 4), [torch.randn(2, 3)])
    with pytest.raises(ValueError, match="calibration_batches is empty"):
        sc.posttrain.recalibrate(model, [])
    before = model[1].running_mean.clone()
    with pytest.raises(ValueError, match="forward failed on batch 1"):
        sc.posttrain.recalibrate(model, [torch.randn(4, 3), torch.randn(4, 5)], inplace=True)
    assert torch.equal(model[1].running_mean, before) and model[1].num_batches_tracked == 0
    nan = torch.randn(4, 3)
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite .* BatchNorm '1'"):
        sc.posttrain.recalibrate(model, [nan])


@pytest.mark.usefixtures("one_thread")
def test_one_shot_channel_pruning_of_the_mnist1d_cnn_recovers_accuracy():
    pytest.importorskip("mnist1d")
    from secateurs.examples import accuracy, data, fit, mnist1d_cnn
    x, y, xt, yt = data.mnist1d()
    dense = fit(mnist1d_cnn(), x, y, epochs=5, lr=3e-3, batch_size=128, seed=0)
    calibration = list(x[:512].split(128))
    gains = []
    for ratio in (0.5, 0.7):
        small = sc.prune(dense, x[:8], ratio)
        gains.append(accuracy(sc.posttrain.recalibrate(small, calibration), xt, yt) - accuracy(small, xt, yt))
    assert gains[0] > 0.1 and gains[1] > 0.03, gains
