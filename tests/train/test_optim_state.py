import pytest
import torch
import torch.nn.functional as F

import secateurs as sc
from secateurs.examples.models import mnist1d_cnn
from secateurs.train.optim_state import shrink
from secateurs.train.schedules import OneShot

pytestmark = pytest.mark.usefixtures("one_thread")

OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw_amsgrad": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, amsgrad=True),
}


def batches(n=6):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 1, 40, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(n)]


def run(model, opt, data):
    for x, y in data:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss  # a caller holding the last graph must still be able to shrink and train on


def hand_sliced(model, plan):
    """Per parameter name, a function slicing a tensor of its shape the way channel removal must (written
    out for this CNN: conv_i keeps k_i outputs and k_{i-1} inputs, bn_i keeps k_i, fc keeps k_5's positions)."""
    keep = {}
    for g in plan.groups:
        conv = next(p for p in g["producers"] if p.startswith("conv"))
        keep[conv] = torch.tensor([i for i in range(g["size"]) if i not in g["remove"]])
    length = model.fc.in_features // model.conv5.out_channels
    fc_cols = (keep["conv5"][:, None] * length + torch.arange(length)).flatten()
    out = {"fc.weight": lambda t: t[:, fc_cols], "fc.bias": lambda t: t}
    for i in range(1, 6):
        k, prev = keep[f"conv{i}"], keep.get(f"conv{i - 1}")
        out[f"conv{i}.weight"] = _slicer(k, prev)
        for n in (f"conv{i}.bias", f"bn{i}.weight", f"bn{i}.bias"):
            out[n] = _slicer(k)
    return out


def _slicer(rows, cols=None):
    """A function keeping ``rows`` of a tensor, and ``cols`` of its second dimension unless None."""
    return lambda t: t[rows] if cols is None else t[rows][:, cols]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_mid_run_shrink_then_training_equals_hand_sliced_reference(name):
    model = mnist1d_cnn(channels=8)
    opt = OPTIMIZERS[name](model.parameters())
    data = batches()
    alive = run(model, opt, data[:3])
    plan = sc.plan(model, data[0][0], 0.5)

    reference = sc.apply(model, plan)
    ref_opt = OPTIMIZERS[name](reference.parameters())
    slicers = hand_sliced(model, plan)
    old = dict(model.named_parameters())
    for n, p in reference.named_parameters():
        ref_opt.state[p] = {k: (slicers[n](v).clone() if v.dim() else v.clone()) for k, v in opt.state[old[n]].items()}

    same = shrink(model, plan, opt)
    assert same is model
    assert [tuple(p.shape) for p in model.parameters()] == [tuple(p.shape) for p in reference.parameters()]
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    run(model, opt, data[3:])
    run(reference, ref_opt, data[3:])
    del alive
    for (n, a), b in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(a, b, atol=1e-6), n
    for a, b in zip(model.buffers(), reference.buffers()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_pruner_compact_keeps_the_same_optimizer_working():
    model = mnist1d_cnn(channels=8)
    data = batches(8)
    pr = sc.Pruner(model, data[0][0], OneShot(step=3, sparsity=0.5), granularity="channel")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for x, y in data[:4]:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pr.step()
    masked_out = model(data[0][0]).detach()
    n_before = sum(p.numel() for p in model.parameters())
    pr.compact(opt)
    assert sum(p.numel() for p in model.parameters()) < n_before / 2
    assert torch.allclose(model(data[0][0]), masked_out, atol=1e-5)
    live = {id(p) for p in model.parameters()}
    assert all(id(p) in live for g in opt.param_groups for p in g["params"])
    assert all(opt.state[p]["exp_avg"].shape == p.shape for p in model.parameters())
    run(model, opt, data[4:])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bad_input():
    model = mnist1d_cnn(channels=8)
    x = batches(1)[0][0]
    with pytest.raises(TypeError, match="plan"):
        shrink(model, "plan")
    with pytest.raises(ValueError, match="element masks"):
        shrink(model, sc.plan(model, x, 0.5, granularity="unstructured"))
    with pytest.raises(ValueError, match="optimizer does not hold"):
        shrink(model, sc.plan(model, x, 0.5), torch.optim.SGD(mnist1d_cnn(channels=8).parameters(), lr=0.1))
    pr = sc.Pruner(model, x, OneShot(step=3, sparsity=0.5), granularity="channel")
    with pytest.raises(ValueError, match="schedule to be over"):
        pr.compact()
    pu = sc.Pruner(mnist1d_cnn(channels=8), x, OneShot(step=3, sparsity=0.5))
    with pytest.raises(ValueError, match="granularity"):
        pu.compact()
