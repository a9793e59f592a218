"""sc.explore(calibration=...): one-shot candidates get their BatchNorm statistics re-estimated."""
import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.report.data import load as load_report
from secateurs.report.tables import candidates as candidate_table
from secateurs.search import Front

SWEEP = dict(methods=["channel/l2/local"], ratios=[0.5], latency=False, quiet=True)


@pytest.fixture(scope="module")
def trained():
    """The MNIST-1D CNN after 5 epochs, its test set and 512 training inputs as 4 calibration batches."""
    pytest.importorskip("mnist1d")
    from secateurs.examples import data, fit, mnist1d_cnn
    x, y, xt, yt = data.mnist1d()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    model = fit(mnist1d_cnn(), x, y, epochs=5, lr=3e-3, batch_size=128, seed=0).eval()
    torch.set_num_threads(before)
    return model, xt, yt, list(x[:512].split(128))


def test_one_shot_channel_candidate_is_more_accurate_with_recalibration(trained, tmp_path):
    from secateurs.examples import accuracy
    model, xt, yt, cal = trained
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def evaluate(m):
        return accuracy(m, xt, yt)

    plain = sc.explore(model, xt[:64], evaluate, **SWEEP)
    recal = sc.explore(model, xt[:64], evaluate, calibration=iter(cal), workdir=tmp_path, **SWEEP)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # the user's model untouched
    (d0, c0), (d1, c1) = plain.candidates, recal.candidates
    assert d0.quality == d1.quality and "bn_recalibrated" not in d1.extra  # the dense model keeps its statistics
    assert "bn_recalibrated" not in c0.extra and c1.extra["bn_recalibrated"] == 4
    assert c1.quality > c0.quality + 0.05, (c0.quality, c1.quality)
    assert "BatchNorm statistics re-estimated on 4 calibration batches" in recal.table()
    assert "1 of 2 candidates" in recal.table() and "BatchNorm" not in plain.table()
    table = candidate_table(load_report(recal.report_data()))
    assert table.rows[1][1].endswith("BatchNorm recalibrated") and "BatchNorm" not in table.rows[0][1]
    # the recalibrated statistics were saved: a front reopened from the workdir rebuilds the same model
    rebuilt, _ = Front(model, xt[:64], recal.candidates, workdir=tmp_path).rebuild(c1)
    assert evaluate(rebuilt) == c1.quality


def test_fine_tuned_candidates_are_not_recalibrated(trained):
    model, xt, yt, cal = trained
    calls = []

    def finetune(m, steps):
        calls.append(steps)
        return m

    front = sc.explore(model, xt[:64], "fidelity", finetune=finetune, budget=1, calibration=cal, **SWEEP)
    assert calls == [1] and not any("bn_recalibrated" in c.extra for c in front.candidates)


def test_a_model_without_batchnorm_is_unaffected():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    x = torch.randn(16, 8)
    cal = [torch.randn(16, 8) * 3 for _ in range(2)]
    methods = ["channel/l2/local", "unstructured/wanda/posttrain"]
    plain = sc.explore(model, x, "fidelity", methods=methods, ratios=[0.5], latency=False, quiet=True)
    given = sc.explore(model, x, "fidelity", methods=methods, ratios=[0.5], latency=False, quiet=True,
                       calibration=cal)
    assert [c.name for c in plain.candidates] == [c.name for c in given.candidates]
    assert plain.candidates[1].quality == given.candidates[1].quality  # channel pruning: nothing to recalibrate
    assert not any("bn_recalibrated" in c.extra for c in given.candidates)
    # posttrain candidates calibrate on the calibration inputs (not the example inputs) when given
    direct, _ = sc.posttrain.prune(model, cal, "wanda", 0.5, progress=False)
    rebuilt = given.models["unstructured/wanda/posttrain@0.5"]
    with torch.no_grad():
        assert torch.equal(rebuilt(x), direct(x))


def test_bad_calibration():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    x = torch.randn(8, 4)
    with pytest.raises(ValueError, match="calibration is empty"):
        sc.explore(model, x, "fidelity", calibration=[], **SWEEP)
    with pytest.raises(TypeError, match="calibration must be an iterable of batches .* got Tensor"):
        sc.explore(model, x, "fidelity", calibration=x, **SWEEP)
    with pytest.raises(TypeError, match="calibration batch 1: example_inputs must be a tensor"):
        sc.explore(model, x, "fidelity", calibration=[x, 3], **SWEEP)
    with pytest.raises(ValueError, match="forward failed on batch 0"):
        sc.explore(model, x, "fidelity", calibration=[torch.randn(8, 5)], **SWEEP)
