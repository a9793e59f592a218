"""taylor, snip, hessian: scores against hand computations, and data handling."""
import copy

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.criteria import Context, get_criterion

from .common import IMAGE, ce_loss, image_batches, mlp, mse_loss, snapshot, unchanged

DATA_CRITERIA = ["taylor", "snip", "hessian", "movement"]


def regression_batches(n=3, size=4, d_in=8, d_out=3, seed=1, zero_col=None):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(size, d_in, generator=gen)
        if zero_col is not None:
            x[:, zero_col] = 0
        out.append((x, torch.randn(size, d_out, generator=gen)))
    return out


def hand_grads(model, batches, loss_fn):
    """Per-batch gradients the plain way, on a copy."""
    m = copy.deepcopy(model)
    out = []
    for b in batches:
        m.zero_grad()
        loss_fn(m, b).backward()
        out.append({n: p.grad.detach().clone().double() for n, p in m.named_parameters()})
    return out


def names_of(model):
    return [n for n, _ in model.named_parameters()]


def test_taylor_weight_with_zero_gradient_scores_zero():
    model = mlp()
    batches = regression_batches(zero_col=5)  # input feature 5 is always 0: d loss / d W1[:, 5] = 0
    s = get_criterion("taylor").elements(model, ["0.weight"], Context(batches=batches, loss_fn=mse_loss))
    w = s["0.weight"]
    assert torch.all(w[:, 5] == 0)
    assert torch.all(torch.cat([w[:, :5], w[:, 6:]], 1) > 0)


def test_taylor_elements_are_mean_abs_w_times_grad():
    model, batches = mlp(), regression_batches()
    s = get_criterion("taylor").elements(model, names_of(model), Context(batches=batches, loss_fn=mse_loss))
    grads = hand_grads(model, batches, mse_loss)
    for n, p in model.named_parameters():
        want = sum((p.detach().double() * g[n]).abs() for g in grads) / len(grads)
        torch.testing.assert_close(s[n].double(), want)


def test_taylor_groups_follow_the_paper_signed_sum_over_coupled_weights():
    model, batches = mlp(), regression_batches()
    graph = sc.trace(model, batches[0][0])
    (g,) = graph.groups  # the hidden neurons: Linear 0 rows + bias, Linear 2 columns
    s = get_criterion("taylor").groups(model, graph, Context(batches=batches, loss_fn=mse_loss))[g.id]
    w = {n: p.detach().double() for n, p in model.named_parameters()}
    want = 0
    for gr in hand_grads(model, batches, mse_loss):
        signed = ((w["0.weight"] * gr["0.weight"]).sum(1) + w["0.bias"] * gr["0.bias"]
                  + (w["2.weight"] * gr["2.weight"]).sum(0))
        want = want + signed.abs()
    torch.testing.assert_close(s, want / len(batches))


def test_snip_sums_to_one_and_is_normalised_connection_sensitivity():
    model, batches = mlp(), regression_batches()
    names = ["0.weight", "2.weight"]
    s = get_criterion("snip").elements(model, names, Context(batches=batches, loss_fn=mse_loss))
    assert sum(float(v.sum()) for v in s.values()) == pytest.approx(1.0, abs=1e-12)
    grads = hand_grads(model, batches, mse_loss)
    params = dict(model.named_parameters())
    sens = {n: (params[n].detach().double() * sum(g[n] for g in grads) / len(grads)).abs() for n in names}
    total = sum(v.sum() for v in sens.values())
    for n in names:
        torch.testing.assert_close(s[n].double(), sens[n] / total)


def test_hessian_is_half_mean_squared_gradient_times_w_squared():
    model, batches = mlp(), regression_batches()
    s = get_criterion("hessian").elements(model, names_of(model), Context(batches=batches, loss_fn=mse_loss))
    grads = hand_grads(model, batches, mse_loss)
    for n, p in model.named_parameters():
        fisher = sum(g[n].square() for g in grads) / len(grads)
        torch.testing.assert_close(s[n].double(), 0.5 * fisher * p.detach().double().square())


def test_hessian_groups_sum_the_coupled_saliencies():
    model, batches = mlp(), regression_batches()
    graph = sc.trace(model, batches[0][0])
    ctx = Context(batches=batches, loss_fn=mse_loss)
    crit = get_criterion("hessian")
    el = crit.elements(model, names_of(model), ctx)
    want = el["0.weight"].sum(1) + el["0.bias"] + el["2.weight"].sum(0)
    torch.testing.assert_close(crit.groups(model, graph, ctx)[0], want.double())


def small_cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


@pytest.mark.parametrize("name", ["taylor", "snip", "hessian"])
def test_gradient_criteria_leave_the_model_alone_even_in_train_mode(name):
    model = small_cnn().train()
    model[8].weight.requires_grad_(False)  # frozen stays frozen
    before = snapshot(model)
    graph = sc.trace(model, IMAGE)
    scores = get_criterion(name).groups(model, graph, Context(batches=image_batches(classes=10), loss_fn=ce_loss))
    assert unchanged(model, before)  # BN running statistics included
    assert all(p.grad is None for p in model.parameters())
    assert not model[8].weight.requires_grad and model[0].weight.requires_grad and model.training
    assert all(float(s.sum()) > 0 for s in scores.values())


@pytest.mark.parametrize("name", DATA_CRITERIA)
def test_data_criteria_without_data_say_what_is_missing(name):
    model = mlp()
    crit = get_criterion(name)
    assert crit.needs_data
    graph = sc.trace(model, torch.randn(2, 8))
    for ctx in (Context(), Context(batches=regression_batches()), Context(loss_fn=mse_loss)):
        with pytest.raises(ValueError, match="batches.*loss_fn"):
            crit.elements(model, ["0.weight"], ctx)
        with pytest.raises(ValueError, match="batches.*loss_fn"):
            crit.groups(model, graph, ctx)
    with pytest.raises(ValueError, match="batches.*loss_fn"):
        sc.plan(model, torch.randn(2, 8), ratio=0.5, criterion=name)


@pytest.mark.parametrize("name", DATA_CRITERIA)
def test_data_criteria_reject_empty_batches_and_bad_losses(name):
    model = mlp()
    crit = get_criterion(name)
    with pytest.raises(ValueError, match="no batch"):
        crit.elements(model, ["0.weight"], Context(batches=[], loss_fn=mse_loss))
    with pytest.raises(ValueError, match="scalar"):
        crit.elements(model, ["0.weight"], Context(batches=regression_batches(), loss_fn=lambda m, b: m(b[0])))
    with pytest.raises(ValueError, match="does not depend"):
        crit.elements(model, ["0.weight"], Context(batches=regression_batches(),
                                                   loss_fn=lambda m, b: mse_loss(m, b).detach()))


def test_batches_may_be_a_one_shot_generator():
    model = mlp()
    batches = (b for b in regression_batches())
    s = get_criterion("taylor").elements(model, ["0.weight"], Context(batches=batches, loss_fn=mse_loss))
    assert s["0.weight"].shape == model[0].weight.shape and float(s["0.weight"].sum()) > 0


def test_taylor_ranks_a_dead_neuron_last():
    model = mlp()
    with torch.no_grad():  # hidden neuron 3 never fires: no gradient reaches it, whatever its weights
        model[0].weight[3] = 0
        model[0].bias[3] = -10
        model[2].weight[:, 3] = 5.0
    batches = regression_batches()
    graph = sc.trace(model, batches[0][0])
    s = get_criterion("taylor").groups(model, graph, Context(batches=batches, loss_fn=mse_loss))[0]
    assert float(s[3]) == 0 and int(torch.argmin(s)) == 3
    p = sc.plan(model, batches[0][0], ratio=0.1, criterion="taylor", batches=batches, loss_fn=mse_loss)
    assert p.removals() == {0: [3]}
    assert sc.plan(model, batches[0][0], ratio=0.1, criterion="l1").removals() != {0: [3]}


def test_named_parameter_must_exist():
    with pytest.raises(KeyError, match="nope"):
        get_criterion("hessian").elements(mlp(), ["nope"], Context(batches=regression_batches(), loss_fn=mse_loss))
