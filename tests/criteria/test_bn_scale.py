"""bn_scale: channels go in order of |gamma|; groups without batch norm fall back to scaled L1."""
import copy

import torch
from torch import nn

import secateurs as sc
from secateurs.criteria import Context, get_criterion
from secateurs.criteria.bn_scale import is_bn_weight

from .common import IMAGE, mlp


def set_gammas(model, graph, seed=0):
    """For each group, pick half of its channels and give them the smallest |gamma| on every coupled
    batch norm (random signs, so only the absolute value can sort them out). Returns the picks."""
    gen = torch.Generator().manual_seed(seed)
    chosen = {}
    params = dict(model.named_parameters())
    for g in graph.groups:
        bns = [n for n, _, r in g.tensors if r == "out" and is_bn_weight(model, n)]
        assert bns, f"every resnet18 group has a batch norm: {g}"
        pick = torch.randperm(g.size, generator=gen)[: g.size // 2]
        chosen[g.id] = sorted(pick.tolist())
        for n in bns:
            small = torch.zeros(g.size, dtype=torch.bool)
            small[pick] = True
            mag = torch.where(small, 0.01 + 0.09 * torch.rand(g.size, generator=gen),
                              0.5 + 1.5 * torch.rand(g.size, generator=gen))
            sign = torch.where(torch.rand(g.size, generator=gen) < 0.5, -1.0, 1.0)
            with torch.no_grad():
                params[n].copy_(mag * sign)
    return chosen


def test_resnet18_loses_exactly_the_channels_with_smallest_abs_gamma(resnet):
    model = copy.deepcopy(resnet)
    graph = sc.trace(model, IMAGE)
    chosen = set_gammas(model, graph)
    p = sc.plan(model, IMAGE, ratio=0.5, criterion="bn_scale", graph=graph)
    assert p.removals() == chosen and not p.skipped
    assert sc.plan(model, IMAGE, ratio=0.5, criterion="l2", graph=graph).removals() != chosen
    small = sc.apply(model, p)
    kept = [i for i in range(64) if i not in chosen[graph.groups[0].id]]
    assert torch.equal(small.bn1.weight, model.bn1.weight[kept])  # the stem group, by index
    assert small(IMAGE).shape == (1, 1000)


def test_group_score_is_the_mean_abs_gamma_of_the_coupled_batch_norms(resnet):
    model = copy.deepcopy(resnet)
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight)
    graph = sc.trace(model, IMAGE)
    scores = get_criterion("bn_scale").groups(model, graph, Context())
    params = dict(model.named_parameters())
    for g in graph.groups:
        bns = [params[n].detach().abs() for n, _, r in g.tensors if r == "out" and is_bn_weight(model, n)]
        torch.testing.assert_close(scores[g.id], (sum(bns) / len(bns)).double())
    residual = max(graph.groups, key=lambda g: sum(is_bn_weight(model, n) for n, _, _ in g.tensors))
    assert sum(is_bn_weight(model, n) for n, _, _ in residual.tensors) >= 3  # conv1's bn1 + 2 blocks


def test_without_batch_norm_it_is_l1():
    model = mlp()
    x = torch.randn(2, 8)
    graph = sc.trace(model, x)
    got = get_criterion("bn_scale").groups(model, graph, Context())
    want = get_criterion("l1").groups(model, graph, Context())
    for gid in want:
        torch.testing.assert_close(got[gid], want[gid])


def test_groups_without_batch_norm_are_rescaled_to_the_gamma_scale():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 6, 3), nn.ReLU(),  # no batch norm: falls back
                          nn.Conv2d(6, 4, 3)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.linspace(-0.4, 0.3, 8))
        model[3].weight.mul_(100)  # raw L1 sums here would dwarf every gamma
    x = torch.randn(1, 3, 12, 12)
    graph = sc.trace(model, x)
    scores = get_criterion("bn_scale").groups(model, graph, Context())
    bn_group = next(g for g in graph.groups if any(n == "1.weight" for n, _, _ in g.tensors))
    other = next(g for g in graph.groups if g is not bn_group)
    torch.testing.assert_close(scores[bn_group.id], model[1].weight.detach().abs().double())
    ref = model[1].weight.detach().abs().double().mean()
    torch.testing.assert_close(scores[other.id].mean(), ref)
    l1 = get_criterion("l1").groups(model, graph, Context())[other.id]
    assert torch.equal(torch.argsort(scores[other.id]), torch.argsort(l1))  # same order as L1


def test_elements_are_absolute_values():
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5))
    names = [n for n, _ in model.named_parameters()]
    s = get_criterion("bn_scale").elements(model, names, Context())
    for n, p in model.named_parameters():
        assert torch.equal(s[n], p.detach().abs())
