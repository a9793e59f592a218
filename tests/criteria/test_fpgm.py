"""fpgm: redundant filters (near the layer's geometric median) go first, whatever their norm."""

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.criteria import Context, get_criterion
from secateurs.criteria.fpgm import distance_sums

X = torch.randn(1, 3, 16, 16)


def cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 4, 3, padding=1)).eval()


def conv_group(graph):
    return next(g for g in graph.groups if ("0.weight", 0, "out") in g.tensors)


def test_duplicated_filters_go_before_distinct_ones_even_when_larger():
    torch.manual_seed(0)
    model = cnn()
    with torch.no_grad():
        big = torch.randn(3, 3, 3) * 3  # five copies of one large filter ...
        for i in (1, 3, 4, 6, 7):
            model[0].weight[i] = big
        for i in (0, 2, 5):  # ... and three distinct, smaller ones
            model[0].weight[i] = torch.randn(3, 3, 3) * 0.5
    graph = sc.trace(model, X)
    g = conv_group(graph)
    p = sc.plan(model, X, ratio=0.5, criterion="fpgm", graph=graph)
    assert p.removals()[g.id] == [1, 3, 4, 6]  # four of the five copies; one survives
    assert sc.plan(model, X, ratio=0.5, criterion="l2", graph=graph).removals()[g.id] != [1, 3, 4, 6]
    assert set(sc.plan(model, X, ratio=0.3, criterion="l2", graph=graph).removals()[g.id]) <= {0, 2, 5}


def test_filter_at_the_geometric_median_scores_lowest():
    torch.manual_seed(1)
    w = torch.randn(7, 4, 3, 3)
    centre = torch.randn(4, 3, 3) * 5
    w[:3] = centre + w[:3]
    w[3:6] = 2 * centre - w[:3]  # symmetric around `centre`: it is the geometric median of them all
    w[6] = centre
    s = distance_sums(w)
    assert int(torch.argmin(s)) == 6
    assert w[6].norm() > w[:6].flatten(1).norm(dim=1).min()  # not the smallest filter


def test_distance_sums_by_hand():
    w = torch.randn(5, 2, 3)
    f = w.flatten(1).double()
    want = torch.stack([sum((f[i] - f[j]).norm() for j in range(5) if j != i) for i in range(5)])
    torch.testing.assert_close(distance_sums(w), want)
    torch.testing.assert_close(distance_sums(w.transpose(0, 2).contiguous(), dim=2), want)


def test_groups_sum_over_the_producing_layers_of_a_residual_group(resnet):
    graph = sc.trace(resnet, torch.randn(1, 3, 32, 32))
    scores = get_criterion("fpgm").groups(resnet, graph, Context())
    params = dict(resnet.named_parameters())
    stem = next(g for g in graph.groups if ("conv1.weight", 0, "out") in g.tensors)
    producers = [n for n, d, r in stem.tensors if r == "out" and n in params and params[n].dim() == 4]
    assert producers == ["conv1.weight", "layer1.0.conv2.weight", "layer1.1.conv2.weight"]
    torch.testing.assert_close(scores[stem.id], sum(distance_sums(params[n]) for n in producers))


def test_elements_ask_for_a_channel_granularity():
    model = cnn()
    with pytest.raises(ValueError, match="filters, not single weights.*channel granularity"):
        get_criterion("fpgm").elements(model, ["0.weight"], Context())


def test_heads_are_scored_through_their_rows():
    model = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    x = torch.randn(1, 5, 16)
    wrapper = _SelfAttention(model)
    graph = sc.trace(wrapper, x)
    heads = [g for g in graph.groups if g.kind == "head"]
    assert heads
    scores = get_criterion("fpgm").groups(wrapper, graph, Context())
    assert all(scores[g.id].shape == (g.size,) and bool((scores[g.id] > 0).all()) for g in heads)
    p = sc.plan(wrapper, x, ratio=0.5, criterion="fpgm", granularity="head")
    assert sc.apply(wrapper, p)(x).shape == x.shape


class _SelfAttention(nn.Module):
    def __init__(self, mha):
        super().__init__()
        self.mha = mha

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]
