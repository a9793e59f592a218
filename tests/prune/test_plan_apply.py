import json

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v3_small, resnet18

import secateurs as sc
from tests.helpers import n_params, outputs

X = torch.randn(2, 3, 64, 64)


@pytest.fixture(scope="module")
def net():
    return resnet18().eval()


def test_ratio_zero_is_exactly_the_original(net):
    small = sc.prune(net, X, ratio=0.0)
    assert torch.equal(outputs(net, X)[0], outputs(small, X)[0])


def test_apply_returns_new_smaller_model_and_leaves_input_alone(net):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    p = sc.plan(net, X, ratio=0.5)
    small = sc.apply(net, p)
    assert small is not net and n_params(small) < n_params(net)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert small.layer1[0].conv1.out_channels == 32 and small.fc.out_features == 1000


def test_masked_equals_physical(net):
    p = sc.plan(net, X, ratio=0.4)
    masked, physical = sc.apply(net, p, mode="mask"), sc.apply(net, p)
    torch.testing.assert_close(outputs(masked, X)[0], outputs(physical, X)[0], atol=1e-5, rtol=1e-4)
    assert sc.measure(masked, X, latency=False).macs == sc.measure(physical, X, latency=False).macs


def test_zeroed_channels_are_exactly_what_l2_removes_and_outputs_hold(net):
    chosen = sc.plan(net, X, ratio=0.3, criterion="random", seed=3)
    zeroed = sc.finalize(sc.apply(net, chosen, mode="mask"))  # those channels now have all-zero weights
    again = sc.plan(zeroed, X, ratio=0.3, criterion="l2")
    assert again.removals() == chosen.removals()
    torch.testing.assert_close(outputs(zeroed, X)[0], outputs(sc.apply(zeroed, again), X)[0],
                               atol=1e-5, rtol=1e-4)


def test_plan_is_json_and_round_trips(net):
    p = sc.plan(net, X, ratio=0.5)
    text = p.to_json()
    assert "weight" in text and not any(isinstance(v, float) for v in json.loads(text)["groups"][0]["remove"])
    q = sc.Plan.from_json(text)
    torch.testing.assert_close(outputs(sc.apply(net, q), X)[0], outputs(sc.apply(net, p), X)[0])


@pytest.mark.parametrize("criterion", ["l1", "l2", "random"])
def test_same_seed_same_plan(net, criterion):
    a = sc.plan(net, X, ratio=0.5, criterion=criterion, seed=7).to_json()
    b = sc.plan(net, X, ratio=0.5, criterion=criterion, seed=7).to_json()
    assert a == b


def test_random_criterion_depends_on_seed(net):
    a = sc.plan(net, X, ratio=0.5, criterion="random", seed=1).removals()
    b = sc.plan(net, X, ratio=0.5, criterion="random", seed=2).removals()
    assert a != b


def test_round_to_keeps_multiples(net):
    small = sc.prune(net, X, ratio=0.37, round_to=8)
    widths = [m.out_channels for m in small.modules() if isinstance(m, nn.Conv2d)]
    assert all(w % 8 == 0 for w in widths)


def test_ratios_and_ignore(net):
    small = sc.prune(net, X, ratio=0.5, ratios={"layer4": 0.0}, ignore=["layer1.0.conv1"])
    assert small.layer4[1].conv1.out_channels == 512 and small.layer3[1].conv1.out_channels == 128
    assert small.layer1[0].conv1.weight.shape == net.layer1[0].conv1.weight.shape


def test_global_scope_respects_floor_and_ratio(net):
    p = sc.plan(net, X, ratio=0.6, scope="global")
    total = sum(g["size"] for g in p.groups)
    gone = sum(len(g["remove"]) for g in p.groups)
    assert 0.5 * total <= gone <= 0.6 * total + 1
    assert all(len(g["remove"]) < g["size"] for g in p.groups)
    assert len({len(g["remove"]) / g["size"] for g in p.groups if g["remove"]}) > 1  # not uniform


def test_no_group_pruned_to_zero():
    m = mobilenet_v3_small().eval()
    p = sc.plan(m, X, ratio=0.999)
    assert all(g["size"] - len(g["remove"]) >= 1 for g in p.groups)
    assert outputs(sc.apply(m, p), X)[0].shape == (2, 1000)


def test_head_granularity_only_touches_heads(net):
    assert sc.plan(net, X, ratio=0.5, granularity="head").removals() == {}


def test_group_ratios_set_single_groups(net):
    g = sc.trace(net, X)
    p = sc.plan(net, X, ratio=0.0, group_ratios={1: 0.5, 3: 0.25}, graph=g)
    assert {k: len(v) for k, v in p.removals().items()} == {1: 32, 3: 32}
    with pytest.raises(ValueError, match="group_ratios names group 99"):
        sc.plan(net, X, group_ratios={99: 0.5}, graph=g)
    with pytest.raises(ValueError, match=r"group_ratios\[1\] must be a number"):
        sc.plan(net, X, group_ratios={1: 1.5}, graph=g)
