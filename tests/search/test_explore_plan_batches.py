"""``plan_kwargs["batches"]`` in a sweep mean what they mean to ``sc.plan``: with a ``loss_fn``, ``(inputs,
targets)`` pairs (posttrain calibration takes their inputs), without one, batches of model inputs."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import secateurs as sc

SWEEP = dict(methods=["unstructured/wanda/posttrain"], ratios=[0.5], latency=False, quiet=True)


def _record(model: nn.Module, calls: list) -> nn.Module:
    """Record the batch size of every forward of ``model`` and of its copies (deep copies share the hook)."""
    model.register_forward_pre_hook(lambda _mod, args: calls.append(args[0].shape[0]))
    return model


def _loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, generator=g)  # example inputs: 4 rows; calibration batches have 24 and 40
    cal = [torch.randn(24, 8, generator=g) * 3, torch.randn(40, 8, generator=g) * 3]
    pairs = [(c, torch.randint(0, 4, (c.shape[0],), generator=g)) for c in cal]
    return x, cal, pairs


def _model(calls):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    return _record(model.eval(), calls)


def test_posttrain_calibrates_on_the_inputs_of_loss_fn_pairs():
    calls = []
    model = _model(calls)
    x, cal, pairs = _data()
    front = sc.explore(model, x, "fidelity", plan_kwargs={"batches": pairs, "loss_fn": _loss_fn}, **SWEEP)
    assert 24 in calls and 40 in calls  # the posttrain forwards ran on the pairs' inputs
    direct, _ = sc.posttrain.prune(_model([]), cal, "wanda", 0.5, progress=False)
    on_example, _ = sc.posttrain.prune(_model([]), [x], "wanda", 0.5, progress=False)
    swept = front.models["unstructured/wanda/posttrain@0.5"]
    probe = torch.randn(16, 8)
    with torch.no_grad():
        assert torch.equal(swept(probe), direct(probe))
        assert not torch.equal(swept(probe), on_example(probe))  # calibrating on anything else shows


def test_without_loss_fn_batches_are_model_inputs_as_for_sc_plan():
    model = _model([])
    x, cal, pairs = _data()
    front = sc.explore(model, x, "fidelity", plan_kwargs={"batches": cal}, **SWEEP)
    direct, _ = sc.posttrain.prune(_model([]), cal, "wanda", 0.5, progress=False)
    probe = torch.randn(16, 8)
    with torch.no_grad():
        assert torch.equal(front.models["unstructured/wanda/posttrain@0.5"](probe), direct(probe))
    # a tuple without a loss_fn is positional inputs, as sc.plan's activation criteria read it
    with pytest.raises(ValueError, match="forward of the model failed on calibration data"):
        sc.explore(model, x, "fidelity", plan_kwargs={"batches": pairs}, **SWEEP)


def test_explicit_calibration_wins_and_bad_pairs_are_clear_errors():
    model = _model([])
    x, cal, pairs = _data()
    front = sc.explore(model, x, "fidelity", plan_kwargs={"batches": pairs[:1], "loss_fn": _loss_fn},
                       calibration=cal, **SWEEP)
    direct, _ = sc.posttrain.prune(_model([]), cal, "wanda", 0.5, progress=False)
    probe = torch.randn(16, 8)
    with torch.no_grad():
        assert torch.equal(front.models["unstructured/wanda/posttrain@0.5"](probe), direct(probe))
    triple = [(cal[0], pairs[0][1], None)]
    with pytest.raises(ValueError, match=r"plan_kwargs\['batches'\]\[0\].*\(inputs, targets\) pair.*got a tuple of 3"):
        sc.explore(model, x, "fidelity", plan_kwargs={"batches": triple, "loss_fn": _loss_fn}, **SWEEP)


@pytest.mark.parametrize("method, kwargs", [("channel/taylor/local", {"loss_fn": _loss_fn}),
                                            ("unstructured/wanda/local", {})])
def test_data_criteria_in_a_sweep_plan_on_the_batches(method, kwargs):
    """A sweep's data methods get ``plan_kwargs["batches"]``, as ``sc.plan`` does: the same plan as a direct call."""
    model = _model([])
    x, cal, pairs = _data()
    batches = pairs if kwargs else cal
    front = sc.explore(model, x, "fidelity", methods=[method], ratios=[0.5], latency=False, quiet=True,
                       plan_kwargs={"batches": batches, **kwargs})
    granularity, criterion, _ = method.split("/")
    direct = sc.plan(model, x, 0.5, granularity=granularity, criterion=criterion, batches=batches, **kwargs)
    other = sc.plan(model, x, 0.5, granularity=granularity, criterion="l1")
    mode = "mask" if direct.masks else "remove"
    probe = torch.randn(16, 8)
    with torch.no_grad():
        swept = front.models[f"{method}@0.5"](probe)
        assert torch.equal(swept, sc.apply(model, direct, mode=mode)(probe))
        assert not torch.equal(swept, sc.apply(model, other, mode=mode)(probe))


def test_a_generator_of_batches_serves_every_candidate():
    """A one-shot iterator of batches is read once: every candidate of the sweep plans on all of its batches,
    the same plan as ``sc.plan`` on the list (a generator used up by the first candidate left the others none)."""
    model = _model([])
    x, _, pairs = _data()
    method = "channel/taylor/local"
    front = sc.explore(model, x, "fidelity", methods=[method], ratios=[0.3, 0.6], latency=False, quiet=True,
                       plan_kwargs={"batches": (b for b in pairs), "loss_fn": _loss_fn})
    probe = torch.randn(16, 8)
    for ratio in (0.3, 0.6):
        direct = sc.plan(model, x, ratio, granularity="channel", criterion="taylor", batches=pairs, loss_fn=_loss_fn)
        with torch.no_grad():
            assert torch.equal(front.models[f"{method}@{ratio:g}"](probe), sc.apply(model, direct)(probe))
