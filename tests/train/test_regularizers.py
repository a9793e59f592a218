import copy

import pytest
import torch
import torch.nn.functional as F

import secateurs as sc
from secateurs.examples.models import lenet_300_100, mnist1d_cnn
from secateurs.train.regularizers import L1, L2, BNGammaL1, GroupLasso, group_norms, remove_groups_below

pytestmark = pytest.mark.usefixtures("one_thread")


def batches(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(32, 1, 40, generator=g), torch.randint(0, 10, (32,), generator=g)) for _ in range(n)]


def fit(model, reg, steps, sgd=False):
    if sgd:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = batches()
    for t in range(steps):
        x, y = data[t % len(data)]
        loss = F.cross_entropy(model(x), y) + reg(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_l1_l2_values_and_gradients():
    model = lenet_300_100(in_features=20)
    w = [model.fc1.weight, model.fc2.weight, model.fc3.weight]
    assert torch.allclose(L1(0.1)(model), 0.1 * sum(t.abs().sum() for t in w))
    assert torch.allclose(L2(0.1)(model), 0.1 * sum(t.square().sum() for t in w))
    L1(0.5)(model).backward()
    assert torch.equal(model.fc1.weight.grad, 0.5 * model.fc1.weight.sign()) and model.fc1.bias.grad is None
    assert torch.allclose(L2(1.0, params=["fc1.bias"])(model), model.fc1.bias.square().sum())


def test_regularisers_read_masked_weights_as_the_model_uses_them():
    model = lenet_300_100(in_features=20)
    pr = sc.Pruner(model, torch.randn(2, 20), sc.OneShot(0, 0.5))
    dense = sc.finalize(copy.deepcopy(model))
    assert pr.sparsity == pytest.approx(0.5, abs=0.01)
    assert torch.allclose(L1(1.0)(model), L1(1.0)(dense))


def test_group_norms_match_the_l2_criterion_and_count_every_coupled_slice():
    model = mnist1d_cnn(channels=8)
    x = torch.randn(2, 1, 40)
    graph = sc.trace(model, x)
    norms = group_norms(model, graph)
    ref = sc.get_criterion("l2").groups(model, graph, None)
    for gid, n in norms.items():
        assert torch.allclose(n.double(), ref[gid], atol=1e-5)
    g3 = next(g for g in graph.groups if "conv3" in g.producers)
    by_hand = (model.conv3.weight[2].square().sum() + model.conv3.bias[2] ** 2 + model.bn3.weight[2] ** 2
               + model.bn3.bias[2] ** 2 + model.conv4.weight[:, 2].square().sum()).sqrt()
    assert torch.allclose(norms[g3.id][2], by_hand)


def test_group_lasso_zeroes_whole_channels_and_removing_them_keeps_the_outputs():
    torch.manual_seed(0)
    reg_model = fit(mnist1d_cnn(channels=16), GroupLasso(mnist1d_cnn(channels=16), torch.randn(2, 1, 40), 0.05), 150,
                    sgd=True)
    plain = fit(mnist1d_cnn(channels=16), lambda m: torch.zeros(()), 150, sgd=True)
    x = batches(1, seed=5)[0][0]
    graph = sc.trace(reg_model, x[:2])
    small_norms = sum(int((n < 3e-2).sum()) for n in group_norms(reg_model, graph).values())
    assert small_norms > sum(int((n < 3e-2).sum()) for n in group_norms(plain, sc.trace(plain, x[:2])).values())
    reg_model.eval()
    before = reg_model(x)
    small = remove_groups_below(reg_model, x[:2], 3e-2, graph=graph)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in reg_model.parameters())
    assert small_norms >= 10
    after = small.eval()(x)
    assert (after - before).abs().max() < 1e-2 * before.abs().max()  # only the threshold's effect
    assert (after.argmax(1) == before.argmax(1)).float().mean() > 0.95
    untouched = remove_groups_below(reg_model, x[:2], 0.0, graph=graph)
    assert torch.equal(untouched.eval()(x), before)


def test_bn_gamma_l1_shrinks_gammas_for_slimming():
    slim = fit(mnist1d_cnn(channels=8), BNGammaL1(0.05), 60)
    plain = fit(mnist1d_cnn(channels=8), lambda m: torch.zeros(()), 60)

    def gammas(m):
        return sum(float(getattr(m, f"bn{i}").weight.abs().sum()) for i in range(1, 6))

    assert gammas(slim) < 0.7 * gammas(plain)
    small = sc.prune(slim, torch.randn(2, 1, 40), 0.5, criterion="bn_scale", scope="global")
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in slim.parameters())


@pytest.mark.parametrize("make", [lambda: L1(-0.1), lambda: L2(float("nan")), lambda: BNGammaL1(-1),
                                  lambda: GroupLasso(mnist1d_cnn(channels=4), torch.randn(2, 1, 40), -1e-3)])
def test_negative_weight_is_a_clear_error(make):
    with pytest.raises(ValueError, match=r"weight must be a number in \[0, inf\)"):
        make()


def test_other_bad_input():
    m = mnist1d_cnn(channels=4)
    with pytest.raises(ValueError, match="threshold"):
        remove_groups_below(m, torch.randn(2, 1, 40), -1.0)
    with pytest.raises(ValueError, match="no affine batch norm"):
        BNGammaL1(0.1)(lenet_300_100())
    with pytest.raises(ValueError, match="params names"):
        L1(0.1, params=["nope.weight"])(m)
    with pytest.raises(ValueError, match="ignore names module"):
        GroupLasso(m, torch.randn(2, 1, 40), 0.1, ignore=["conv9"])
