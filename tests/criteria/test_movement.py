"""movement: S = -sum_t w_t g_t along plain SGD on a copy; the user's model never moves."""
import copy

import torch
from torch import nn

import secateurs as sc
from secateurs.criteria import Context, get_criterion

from .common import IMAGE, ce_loss, image_batches, mse_loss, snapshot, unchanged


def teacher_batches(w_true, n=5, size=512, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(size, w_true.shape[1], generator=gen)
        out.append((x, x @ w_true.T))
    return out


def test_weights_moving_away_from_zero_outscore_weights_moving_towards_it():
    # Student starts at 0.5 everywhere; the teacher wants weights 0..3 at 2 (away from 0) and 4..7 at 0.
    w_true = torch.tensor([[2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0]])
    model = nn.Linear(8, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.5)
    before = snapshot(model)
    s = get_criterion("movement").elements(model, ["weight"], Context(batches=teacher_batches(w_true),
                                                                       loss_fn=mse_loss))["weight"][0]
    away, toward = s[:4], s[4:]
    assert float(away.min()) > 0 > float(toward.max())
    assert unchanged(model, before) and model.weight.grad is None
    # Magnitude sees no difference at all: every weight is 0.5.
    assert torch.equal(model.weight.abs()[0, :4], model.weight.abs()[0, 4:])


def test_movement_equals_the_hand_computed_sum_over_sgd_steps():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    gen = torch.Generator().manual_seed(2)
    batches = [(torch.randn(5, 4, generator=gen), torch.randn(5, 2, generator=gen)) for _ in range(3)]
    crit = get_criterion("movement")
    names = ["0.weight", "2.weight", "2.bias"]
    got = crit.elements(model, names, Context(batches=batches, loss_fn=mse_loss))
    work = copy.deepcopy(model)
    want = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in work.named_parameters()}
    for b in batches:
        work.zero_grad()
        mse_loss(work, b).backward()
        with torch.no_grad():
            for n, p in work.named_parameters():
                want[n] -= p.double() * p.grad.double()
                p -= crit.lr * p.grad
    for n in names:
        torch.testing.assert_close(got[n], want[n])


def test_lr_is_a_class_attribute_and_changes_the_path(monkeypatch):
    crit = get_criterion("movement")
    assert type(crit).lr == 1e-2
    w_true = torch.tensor([[2.0, -1.0, 0.0]])
    model = nn.Linear(3, 1, bias=False)
    batches = teacher_batches(w_true, n=4)
    slow = crit.elements(model, ["weight"], Context(batches=batches, loss_fn=mse_loss))["weight"]
    monkeypatch.setattr(type(crit), "lr", 0.2)
    fast = crit.elements(model, ["weight"], Context(batches=batches, loss_fn=mse_loss))["weight"]
    assert not torch.allclose(slow, fast)


def test_users_resnet_is_unchanged_even_in_train_mode(resnet):
    model = copy.deepcopy(resnet).train()
    before = snapshot(model)
    graph = sc.trace(model, IMAGE)
    scores = get_criterion("movement").groups(model, graph, Context(batches=image_batches(), loss_fn=ce_loss))
    assert unchanged(model, before) and all(p.grad is None for p in model.parameters()) and model.training
    assert set(scores) == {g.id for g in graph.groups}
    assert all(s.shape == (g.size,) and torch.isfinite(s).all() for g, s in zip(graph.groups, scores.values()))


def test_movement_prunes_the_hidden_neurons_training_drives_to_zero():
    # Hidden neuron j = tanh(x_j). Teacher: only neurons 0..3 of 8 matter (outgoing weights +-2, the
    # others 0). The student starts with every outgoing weight at 0.5 in size: every neuron has the
    # same magnitudes, so l1 cannot tell them apart, but training grows 0..3 away from zero and
    # shrinks 4..7 towards it.
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    signs = torch.sign(torch.randn(2, 8))
    with torch.no_grad():
        teacher[0].weight.copy_(torch.eye(8))
        teacher[0].bias.zero_()
        teacher[2].weight.copy_(2 * signs)
        teacher[2].weight[:, 4:] = 0
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student[2].weight.copy_(0.5 * signs)
    before = snapshot(student)
    gen = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(10):
        x = torch.randn(64, 8, generator=gen)
        batches.append((x, teacher(x).detach()))
    p = sc.plan(student, batches[0][0], ratio=0.5, criterion="movement", batches=batches, loss_fn=mse_loss)
    assert p.removals() == {0: [4, 5, 6, 7]}
    assert unchanged(student, before)
