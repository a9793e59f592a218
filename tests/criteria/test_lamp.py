"""lamp: scores comparable across layers; one global threshold never empties a layer."""
import torch
from torch import nn

import secateurs as sc
from secateurs.criteria import Context, get_criterion
from secateurs.criteria.lamp import lamp_normalise


def scaled_mlp():
    """Four linear layers; the second has weights a thousand times smaller than the others."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                      nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        m[2].weight.mul_(1e-3)
        m[2].bias.mul_(1e-3)
    return m.eval()


WEIGHTS = ["0.weight", "2.weight", "4.weight", "6.weight"]


def test_formula_by_hand():
    w = torch.tensor([[0.5, -2.0], [1.0, -0.1]])
    # sorted squares: 0.01, 0.25, 1, 4 (suffix sums 5.26, 5.25, 5, 4)
    want = torch.tensor([[0.25 / 5.25, 1.0], [1 / 5, 0.01 / 5.26]], dtype=torch.float64)
    torch.testing.assert_close(lamp_normalise(w.double().square()), want)
    assert torch.equal(lamp_normalise(torch.zeros(3)), torch.zeros(3, dtype=torch.float64))


def test_largest_weight_of_every_layer_scores_exactly_one(resnet):
    names = [n for n, p in resnet.named_parameters() if p.dim() > 1]
    s = get_criterion("lamp").elements(resnet, names, Context())
    params = dict(resnet.named_parameters())
    for n in names:
        top = params[n].detach().abs().flatten().argmax()
        assert float(s[n].flatten()[top]) == 1.0 and float(s[n].max()) == 1.0
        assert float(s[n].min()) > 0
    for n in ("conv1.weight", "layer2.0.downsample.0.weight", "fc.weight"):  # monotone in |w| (ties by position)
        order = torch.argsort(params[n].detach().flatten().double().square(), stable=True)
        assert bool((s[n].flatten()[order].diff() >= 0).all())


def _global_keep(scores, ratio):
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = int(ratio * flat.numel())
    threshold = flat.sort().values[k - 1]
    return {n: int((s > threshold).sum()) for n, s in scores.items()}


def test_one_global_threshold_never_empties_a_layer():
    model = scaled_mlp()
    lamp = _global_keep(get_criterion("lamp").elements(model, WEIGHTS, Context()), 0.9)
    l1 = _global_keep(get_criterion("l1").elements(model, WEIGHTS, Context()), 0.9)
    assert l1["2.weight"] == 0  # magnitude: the small-scale layer is emptied
    assert all(v > 0 for v in lamp.values()) and lamp["2.weight"] > 32


def test_global_unstructured_plan_keeps_the_small_scale_layer():
    model = scaled_mlp()
    x = torch.randn(2, 16)

    def kept(criterion):
        p = sc.plan(model, x, ratio=0.5, criterion=criterion, scope="global", granularity="unstructured")
        masked = sc.finalize(sc.apply(model, p, mode="mask"))
        return {n: int((p_.detach() != 0).sum()) for n, p_ in masked.named_parameters() if n in WEIGHTS}

    l1, lamp = kept("l1"), kept("lamp")
    assert l1["2.weight"] <= 0.02 * 1024  # plain l1: nearly empty (only the planner's floor is left)
    assert lamp["2.weight"] >= 0.25 * 1024
    assert all(v >= 0.25 * model.get_parameter(n).numel() for n, v in lamp.items() if n != "6.weight")


def test_groups_are_lamp_of_the_squared_l2_scores_and_top_out_at_one(resnet):
    graph = sc.trace(resnet, torch.randn(1, 3, 32, 32))
    got = get_criterion("lamp").groups(resnet, graph, Context())
    l2 = get_criterion("l2").groups(resnet, graph, Context())
    for gid, s in got.items():
        assert float(s.max()) == 1.0
        torch.testing.assert_close(s, lamp_normalise(l2[gid].square()))
        assert torch.equal(torch.argsort(s, stable=True), torch.argsort(l2[gid], stable=True))


def test_global_structured_plan_keeps_every_group():
    model = scaled_mlp()
    x = torch.randn(2, 16)
    p = sc.plan(model, x, ratio=0.5, criterion="lamp", scope="global")
    kept = {g["id"]: g["size"] - len(g["remove"]) for g in p.groups}
    assert all(k >= 8 for k in kept.values())
    assert sc.apply(model, p)(x).shape == (2, 4)
