import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import secateurs as sc
from secateurs.criteria import CRITERIA
from secateurs.examples.models import lenet_300_100, mnist1d_cnn
from secateurs.prune.elements import unpack
from secateurs.train.optim_state import plain_parameters
from secateurs.train.schedules import Constant, LotteryTicket, OneShot, Polynomial

pytestmark = pytest.mark.usefixtures("one_thread")


def data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 40, generator=g), torch.randint(0, 10, (n,), generator=g)


def train(model, pruner, opt, steps, seed=0, check=None):
    x, y = data(seed=seed)
    for t in range(steps):
        loss = F.cross_entropy(model(x[t % 4 * 8:(t % 4 + 1) * 8]), y[t % 4 * 8:(t % 4 + 1) * 8])
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step()
        if check:
            check(t + 1)


def effective(model):
    return {n: t.detach() for n, t in sc.finalize(copy.deepcopy(model)).named_parameters()}


@pytest.mark.parametrize("granularity, scope", [("unstructured", "local"), ("unstructured", "global"),
                                                ("channel", "local"), ("channel", "global")])
def test_sparsity_follows_the_schedule_at_every_step(granularity, scope):
    model = mnist1d_cnn(channels=16)
    sched = Polynomial(0.0, 0.8, begin_step=2, end_step=14, frequency=3)
    pr = sc.Pruner(model, data()[0][:2], sched, granularity=granularity, scope=scope)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    units = pr.targets
    slack = len(units) / sum(units.values()) if granularity == "unstructured" else 1 / min(units.values())
    previous = {}

    def check(t):
        assert pr.step_count == t and pr.target == sched.sparsity_at(t)
        assert pr.target - slack - 1e-9 <= pr.sparsity <= pr.target + 1e-9
        for n, m in pr.masks.items():  # masks only grow
            assert not (m & ~previous.get(n, torch.ones_like(m))).any()
        previous.update({n: m.clone() for n, m in pr.masks.items()})

    train(model, pr, opt, 18, check=check)
    assert pr.done and pr.sparsity == pytest.approx(0.8, abs=slack)


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    lambda p: torch.optim.Adam(p, lr=1e-2),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.5),
], ids=["sgd_momentum", "adam", "adamw_wd"])
def test_masked_weights_stay_exactly_zero_and_get_no_gradient(make_opt):
    model = mnist1d_cnn(channels=8)
    opt = make_opt(model.parameters())  # built before the Pruner: parameters keep their identity
    pr = sc.Pruner(model, data()[0][:2], Polynomial(0.0, 0.7, begin_step=1, end_step=7, frequency=2))
    params = plain_parameters(model)
    before = {}

    def check(t):
        w = effective(model)
        for n, m in before.items():  # the gradient of this step was taken under the previous step's masks
            assert (params[n].grad[~m] == 0).all()
        for n, m in pr.masks.items():
            assert (w[n][~m] == 0).all()
        before.update({n: m.clone() for n, m in pr.masks.items()})
        if pr.masks:
            assert any((params[n].detach()[~m] != 0).any() for n, m in pr.masks.items())  # stored values live on

    train(model, pr, opt, 10, check=check)
    assert pr.sparsity > 0.6


@pytest.mark.parametrize("criterion", sorted(CRITERIA))
@pytest.mark.parametrize("granularity", ["unstructured", "channel"])
def test_every_criterion_works_inside_the_pruner(criterion, granularity):
    model = mnist1d_cnn(channels=8)
    x = data()[0]
    if criterion == "fpgm" and granularity == "unstructured":  # FPGM scores whole filters only
        with pytest.raises(ValueError, match="fpgm"):
            sc.Pruner(model, x[:2], OneShot(step=3, sparsity=0.5), granularity=granularity, criterion=criterion)
        return
    pr = sc.Pruner(model, x[:2], OneShot(step=3, sparsity=0.5), granularity=granularity, criterion=criterion)
    train(model, pr, torch.optim.Adam(model.parameters(), lr=1e-2), 4)
    assert pr.sparsity == pytest.approx(0.5, abs=0.02)
    small = pr.finalize()
    assert torch.allclose(small.eval()(x), model.eval()(x), atol=1e-5)
    if granularity == "channel":
        assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in plain_parameters(model).values())
    else:
        assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in small.modules())


def test_data_criteria_score_from_the_training_gradients():
    """Taylor inside the Pruner equals taylor fed the same batches directly (the last step's gradient)."""
    torch.manual_seed(0)
    model = mnist1d_cnn(channels=8)
    x, y = data()
    pr = sc.Pruner(model, x[:2], OneShot(step=1, sparsity=0.5), criterion="taylor", data_steps=1)
    snapshot = sc.finalize(copy.deepcopy(model))
    loss = F.cross_entropy(model(x), y)
    loss.backward()  # no optimizer step: weights as in the snapshot
    pr.step()
    ref = sc.plan(snapshot, x[:2], 0.5, granularity="unstructured", criterion="taylor", batches=[(x, y)],
                  loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1]))
    for n, e in ref.masks.items():
        assert torch.equal(pr.masks[n], unpack(e["bits"], e["shape"])), n


def test_activation_criteria_score_from_the_training_inputs():
    """Wanda inside the Pruner equals wanda calibrated on the inputs of the last training forwards."""
    torch.manual_seed(0)
    model = mnist1d_cnn(channels=8)
    x, y = data()
    pr = sc.Pruner(model, x[:2], OneShot(step=2, sparsity=0.5), criterion="wanda", data_steps=2)
    half = len(x) // 2
    batches = [(x[:half], y[:half]), (x[half:2 * half], y[half:2 * half])]
    for xb, yb in batches:  # no optimizer step: weights as in the snapshot (BatchNorm statistics move)
        F.cross_entropy(model(xb), yb).backward()
        snapshot = sc.finalize(copy.deepcopy(model))
        pr.step()
    ref = sc.plan(snapshot, x[:2], 0.5, granularity="unstructured", criterion="wanda", batches=[b[0] for b in batches])
    for n, e in ref.masks.items():
        assert torch.equal(pr.masks[n], unpack(e["bits"], e["shape"])), n
    with pytest.raises(ValueError, match="before any forward pass"):
        sc.Pruner(mnist1d_cnn(channels=8), x[:2], OneShot(step=0, sparsity=0.5), criterion="wanda")


def test_data_criterion_before_any_backward_is_a_clear_error():
    model = mnist1d_cnn(channels=8)
    with pytest.raises(ValueError, match="loss.backward"):
        sc.Pruner(model, data()[0][:2], OneShot(step=0, sparsity=0.5), criterion="snip")
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in model.modules())  # nothing half-applied
    pr = sc.Pruner(model, data()[0][:2], OneShot(step=1, sparsity=0.5), criterion="hessian")
    with pytest.raises(ValueError, match="loss.backward"):
        pr.step()  # no backward happened before this step


@pytest.mark.parametrize("criterion", ["l2", "movement"])
def test_stop_and_resume_gives_the_same_masks(criterion):
    sched = Polynomial(0.0, 0.6, begin_step=2, end_step=12, frequency=2)
    x = data()[0][:2]

    def fresh():
        m = mnist1d_cnn(channels=8)
        return m, sc.Pruner(m, x, sched, criterion=criterion)

    m1, p1 = fresh()
    o1 = torch.optim.Adam(m1.parameters(), lr=1e-2)
    train(m1, p1, o1, 14)

    m2, p2 = fresh()
    o2 = torch.optim.Adam(m2.parameters(), lr=1e-2)
    train(m2, p2, o2, 7)
    saved = (p2.state_dict(), m2.state_dict(), o2.state_dict())
    m3, p3 = fresh()
    p3.load_state_dict(saved[0])
    m3.load_state_dict(saved[1])
    o3 = torch.optim.Adam(m3.parameters(), lr=1e-2)
    o3.load_state_dict(saved[2])
    assert p3.step_count == 7 and p3.sparsity == p2.sparsity

    x_all, y_all = data()
    for t in range(7, 14):  # same batches as the uninterrupted run
        xb, yb = x_all[t % 4 * 8:(t % 4 + 1) * 8], y_all[t % 4 * 8:(t % 4 + 1) * 8]
        loss = F.cross_entropy(m3(xb), yb)
        o3.zero_grad()
        loss.backward()
        o3.step()
        p3.step()
    assert p3.masks.keys() == p1.masks.keys()
    assert all(torch.equal(p3.masks[n], p1.masks[n]) for n in p1.masks)
    for a, b in zip(effective(m1).values(), effective(m3).values()):
        assert torch.allclose(a, b, atol=1e-6)


def test_resuming_from_another_model_or_schedule_is_refused_and_changes_nothing():
    x = data()[0][:2]
    m = mnist1d_cnn(channels=8)
    p = sc.Pruner(m, x, OneShot(1, 0.5))
    other = lenet_300_100()
    po = sc.Pruner(other, torch.randn(2, 784), OneShot(1, 0.5))
    with pytest.raises(ValueError, match="another model"):
        p.load_state_dict(po.state_dict())
    p2 = sc.Pruner(mnist1d_cnn(channels=8), x, OneShot(2, 0.5))
    train(p2.model, p2, torch.optim.SGD(p2.model.parameters(), lr=0.1), 3)
    with pytest.raises(ValueError, match="schedule"):
        p.load_state_dict(p2.state_dict())
    assert p.step_count == 0 and not p.masks
    with pytest.raises(ValueError, match="state"):
        p.load_state_dict({"version": 99})


def test_bad_arguments_are_clear_errors():
    m, x = mnist1d_cnn(channels=8), data()[0][:2]
    with pytest.raises(TypeError, match="schedule"):
        sc.Pruner(m, x, 0.5)
    with pytest.raises(ValueError, match="granularity"):
        sc.Pruner(m, x, OneShot(1, 0.5), granularity="rows")
    with pytest.raises(ValueError, match="criterion"):
        sc.Pruner(m, x, OneShot(1, 0.5), criterion="nope")
    with pytest.raises(ValueError, match="ignore"):
        sc.Pruner(m, x, OneShot(1, 0.5), ignore=["conv9"])
    with pytest.raises(ValueError, match="final sparsity must be 0.5"):
        sc.Pruner(m, x, OneShot(1, 0.7), granularity="2:4")
    with pytest.raises(ValueError, match="data_steps"):
        sc.Pruner(m, x, OneShot(1, 0.5), data_steps=0)
    assert not any(torch.nn.utils.parametrize.is_parametrized(mod) for mod in m.modules())


def test_ignore_and_step_past_the_end_keep_the_final_mask():
    m = mnist1d_cnn(channels=8)
    pr = sc.Pruner(m, data()[0][:2], OneShot(2, 0.5), ignore=["conv1", "fc"])
    train(m, pr, torch.optim.SGD(m.parameters(), lr=0.1), 3)
    masks = {n: t.clone() for n, t in pr.masks.items()}
    assert not {"conv1.weight", "fc.weight"} & set(masks)
    train(m, pr, torch.optim.SGD(m.parameters(), lr=0.1), 5)
    assert all(torch.equal(masks[n], pr.masks[n]) for n in masks) and pr.sparsity == pytest.approx(0.5, abs=0.01)


def test_constant_reselects_at_a_fixed_sparsity():
    m = mnist1d_cnn(channels=8)
    pr = sc.Pruner(m, data()[0][:2], Constant(0.5, begin_step=1, frequency=2))
    seen = []
    train(m, pr, torch.optim.SGD(m.parameters(), lr=0.5), 9, check=lambda t: seen.append(pr.sparsity))
    assert all(s == pytest.approx(0.5, abs=0.01) for s in seen)


def test_lottery_ticket_rewinds_kept_weights_to_the_rewind_step():
    m = lenet_300_100(in_features=40)
    x = torch.randn(16, 40)
    y = torch.randint(0, 10, (16,))
    sched = LotteryTicket(Polynomial(0.0, 0.8, begin_step=4, end_step=8, frequency=2), rewind_step=2)
    pr = sc.Pruner(m, x[:2], sched)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    kept = {}
    for t in range(1, 10):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pr.step()
        if t == 2:
            kept = {n: p.detach().clone() for n, p in plain_parameters(m).items()}
        if t == 8:
            w = effective(m)
            for n, value in kept.items():
                expect = value * pr.masks[n] if n in pr.masks else value
                assert torch.equal(w[n], expect), n
    assert pr.sparsity == pytest.approx(0.8, abs=0.01)
    assert math.isclose(pr.target, 0.8)


def _lenet_run(regrow, steps=12, poke=None):
    """LeNet-300-100 on random digits-shaped data, Adam, a polynomial schedule with events at 2, 5, 8, 11;
    (sparsity 0 at 2), ``poke(pruner, t)`` may edit stored weights after step t. Checks at every step that
    masked weights read as exactly zero and the sparsity is the schedule's."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 784, generator=g), torch.randint(0, 10, (64,), generator=g)
    model = lenet_300_100(seed=0)
    sched = Polynomial(0.0, 0.9, begin_step=2, end_step=11, frequency=3)
    pr = sc.Pruner(model, x[:2], sched, scope="global", regrow=regrow)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for t in range(1, steps + 1):
        loss = F.cross_entropy(model(x[t % 4 * 16:(t % 4 + 1) * 16]), y[t % 4 * 16:(t % 4 + 1) * 16])
        opt.zero_grad()
        loss.backward()
        opt.step()
        pr.step()
        seen = effective(model)
        for n, m in pr.masks.items():
            assert torch.count_nonzero(seen[n][~m]) == 0
        assert pr.sparsity == pytest.approx(sched.sparsity_at(t), abs=3 / 266_200)
        history.append({n: m.clone() for n, m in pr.masks.items()})
        if poke:
            poke(pr, t)
    return pr, history


def test_regrow_brings_back_a_pruned_weight_that_outranks_live_ones():
    stored = {}

    def poke(pr, t):  # after the first event that prunes, give one pruned fc2 weight a large stored value
        if t == 5:
            w = pr.model.fc2.parametrizations.weight.original
            i = int(torch.nonzero(~pr.masks["fc2.weight"].flatten())[0])
            with torch.no_grad():
                w.view(-1)[i] = 10.0
            stored.update(index=i)

    pr, history = _lenet_run(True, poke=poke)
    i = stored["index"]
    assert not history[4]["fc2.weight"].flatten()[i] and history[7]["fc2.weight"].flatten()[i]
    assert float(pr.model.fc2.weight.detach().flatten()[i]) != 0.0  # back, with its stored (then trained) value

    _, history = _lenet_run(False, poke=poke)  # default: pruned stays pruned, whatever its stored value
    assert not history[-1]["fc2.weight"].flatten()[stored["index"]]
    for h0, h1 in itertools.pairwise(history):
        assert all(not (h1[n] & ~h0[n]).any() for n in h0)


def test_regrow_is_part_of_the_state_and_checked():
    m, x = mnist1d_cnn(channels=8), data()[0][:2]
    with pytest.raises(ValueError, match="regrow must be True or False"):
        sc.Pruner(m, x, OneShot(1, 0.5), regrow="yes")
    p = sc.Pruner(m, x, OneShot(1, 0.5))
    other = sc.Pruner(mnist1d_cnn(channels=8), x, OneShot(1, 0.5), regrow=True)
    with pytest.raises(ValueError, match="regrow"):
        p.load_state_dict(other.state_dict())
    old = p.state_dict()
    del old["regrow"]  # a state saved before the option existed resumes as regrow=False
    p.load_state_dict(old)


@pytest.mark.parametrize("regrow", [True, False])
def test_regrow_of_a_removed_channel(regrow):
    m = mnist1d_cnn(channels=8)
    pr = sc.Pruner(m, data()[0][:2], Polynomial(0.25, 0.5, begin_step=1, end_step=3, frequency=2),
                   granularity="channel", regrow=regrow)
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    train(m, pr, opt, 1)
    gone = int(torch.nonzero(~pr.masks["conv2.weight"].flatten(1).any(1))[0])
    with torch.no_grad():  # make the removed channel the strongest of its layer
        m.conv2.parametrizations.weight.original[gone] = 10.0
    train(m, pr, opt, 2)
    back = bool(pr.masks["conv2.weight"][gone].any())  # its input columns follow conv1's channels
    assert back == regrow and pr.sparsity == pytest.approx(0.5, abs=1 / 8)
    assert torch.count_nonzero(m.conv2.weight[~pr.masks["conv2.weight"]]) == 0
