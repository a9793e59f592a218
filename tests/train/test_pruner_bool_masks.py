"""The Pruner's masks are bool keep-masks (1 byte per weight, not 4), and training with them is
bit-identical to training with float 0/1 masks."""
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

import secateurs as sc
from secateurs.examples.models import lenet_300_100, mnist1d_cnn
from secateurs.train.optim_state import plain_parameters
from secateurs.train.schedules import Polynomial
from tests.helpers import train_with_pruner

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = {
    "unstructured": dict(granularity="unstructured"),
    "global_regrow": dict(granularity="unstructured", scope="global", regrow=True),
    "channel": dict(granularity="channel"),
    "2:4": dict(granularity="2:4"),
}


def _schedule(name):
    final = 0.5 if name == "2:4" else 0.7
    return Polynomial(0.0, final, begin_step=1, end_step=9, frequency=2)


def _mask_modules(model):
    return [plist[0] for mod in model.modules() if parametrize.is_parametrized(mod)
            for plist in mod.parametrizations.values()]


def _run(name, float_masks, steps=12, stop=None):
    """A gradual pruning run on a small CNN (SGD with momentum and weight decay); ``float_masks``
    swaps every mask buffer for a float 0/1 copy right after the Pruner is built (the reference)."""
    torch.manual_seed(0)
    model = mnist1d_cnn(channels=8)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 1, 40, generator=g), torch.randint(0, 10, (32,), generator=g)
    pr = sc.Pruner(model, x[:2], _schedule(name), **SETTINGS[name])
    if float_masks:
        for m in _mask_modules(model):
            m.mask = m.mask.float()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    _train(model, pr, opt, x, y, range(steps if stop is None else stop))
    return model, pr, opt


def _train(model, pr, opt, x, y, steps) -> None:
    """One SGD step and one Pruner step per ``steps`` entry, on the 8-sample slice of (x, y) it picks."""
    for t in steps:
        xb, yb = x[t % 4 * 8:(t % 4 + 1) * 8], y[t % 4 * 8:(t % 4 + 1) * 8]
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pr.step()


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_masks_are_bool_and_a_quarter_of_the_weights_bytes(name):
    model, pr, _ = _run(name, float_masks=False)
    masks = _mask_modules(model)
    assert masks and all(m.mask.dtype == torch.bool for m in masks)
    assert pr.sparsity > 0.3
    mask_bytes = sum(m.mask.numel() * m.mask.element_size() for m in masks)
    weight_bytes = sum(mod.parametrizations[a].original.numel() * mod.parametrizations[a].original.element_size()
                       for mod in model.modules() if parametrize.is_parametrized(mod) for a in mod.parametrizations)
    assert mask_bytes * 4 == weight_bytes
    assert all(m.dtype == torch.bool for m in pr.masks.values())


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_training_is_bit_identical_to_float_masks(name):
    model, pr, opt = _run(name, float_masks=False)
    ref_model, ref_pr, ref_opt = _run(name, float_masks=True)
    assert all(m.mask.dtype == torch.float32 for m in _mask_modules(ref_model))  # the reference kept float masks
    assert pr.masks.keys() == ref_pr.masks.keys() and pr.removed == ref_pr.removed
    assert all(torch.equal(pr.masks[n], ref_pr.masks[n]) for n in pr.masks)
    params, ref_params = plain_parameters(model), plain_parameters(ref_model)
    assert params.keys() == ref_params.keys()
    for n in params:  # stored weights, gradients and momentum buffers: exactly equal
        assert torch.equal(params[n], ref_params[n]), n
        assert torch.equal(params[n].grad, ref_params[n].grad), n
        assert torch.equal(opt.state[params[n]]["momentum_buffer"], ref_opt.state[ref_params[n]]["momentum_buffer"]), n
    for (n, w), (_, ref_w) in zip(sc.finalize(model).state_dict().items(), sc.finalize(ref_model).state_dict().items()):
        assert w.dtype == ref_w.dtype and torch.equal(w, ref_w), n


def test_resume_keeps_bool_masks_and_reads_a_float_mask_checkpoint():
    """Pruner state and model state saved mid-run resume to the same run; a model checkpoint written when
    the masks were float loads into the bool masks (True where the float mask was 1)."""
    full, full_pr, _ = _run("unstructured", float_masks=False, steps=10)
    for float_checkpoint in (False, True):
        m2, p2, o2 = _run("unstructured", float_masks=float_checkpoint, stop=5)
        saved = (p2.state_dict(), m2.state_dict(), o2.state_dict())
        assert any(saved[1][k].dtype == (torch.float32 if float_checkpoint else torch.bool)
                   for k in saved[1] if k.endswith(".mask"))
        torch.manual_seed(0)
        m3 = mnist1d_cnn(channels=8)
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(32, 1, 40, generator=g), torch.randint(0, 10, (32,), generator=g)
        p3 = sc.Pruner(m3, x[:2], _schedule("unstructured"))
        p3.load_state_dict(saved[0])
        m3.load_state_dict(saved[1])
        o3 = torch.optim.SGD(m3.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        o3.load_state_dict(saved[2])
        assert all(m.mask.dtype == torch.bool for m in _mask_modules(m3))
        assert all(torch.equal(p3.masks[n], p2.masks[n]) for n in p2.masks)
        _train(m3, p3, o3, x, y, range(5, 10))
        assert all(torch.equal(p3.masks[n], full_pr.masks[n]) for n in full_pr.masks)
        for n, w in plain_parameters(m3).items():
            assert torch.equal(w, plain_parameters(full)[n]), n


def test_channel_compact_with_bool_masks_matches_the_masked_model():
    """compact bakes the bool masks and removes the pruned channels: same outputs as the masked model."""
    model = lenet_300_100()
    x = torch.randn(8, 784)
    pr = sc.Pruner(model, x[:2], Polynomial(0.0, 0.5, begin_step=0, end_step=2, frequency=1), granularity="channel")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_with_pruner(model, x, pr, opt, 3)
    assert all(m.mask.dtype == torch.bool for m in _mask_modules(model))
    with torch.no_grad():
        masked = model(x)
    small = pr.compact(opt)
    assert not any(parametrize.is_parametrized(m) for m in small.modules())
    assert sum(p.numel() for p in small.parameters()) < 0.7 * sum(p.numel() for p in lenet_300_100().parameters())
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked, rtol=1e-5, atol=1e-6)
