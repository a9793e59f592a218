import pytest
import torch
from torchvision.models import mobilenet_v3_small, resnet18

import secateurs as sc

X = torch.randn(1, 3, 32, 32)


@pytest.fixture(scope="module")
def net():
    return resnet18().eval()


def test_not_a_module():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        sc.plan("resnet", X)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        sc.trace(lambda x: x, X)


def test_forward_failure_shows_original_error(net):
    with pytest.raises(ValueError, match=r"forward failed.*RuntimeError.*channels"):
        sc.trace(net, torch.randn(1, 5, 32, 32))


def test_bad_example_inputs_type(net):
    with pytest.raises(TypeError, match="example_inputs must be"):
        sc.plan(net, 3.0)


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, float("nan"), "0.5", True])
def test_ratio_outside_range(net, ratio):
    with pytest.raises(ValueError, match=r"ratio must be a number in \[0, 1\)"):
        sc.plan(net, X, ratio=ratio)


def test_unknown_criterion_lists_valid_names(net):
    with pytest.raises(ValueError, match=r"criterion must be one of \[.*'l1', 'l2'.*'random'"):
        sc.plan(net, X, criterion="magic")


def test_unknown_granularity_lists_valid_names(net):
    with pytest.raises(ValueError,
                       match=r"granularity must be one of \['channel', 'head', 'unstructured', 'N:M', 'expert'\]"):
        sc.plan(net, X, granularity="atoms")


def test_bad_scope_and_round_to(net):
    with pytest.raises(ValueError, match="scope must be one of"):
        sc.plan(net, X, scope="galactic")
    with pytest.raises(ValueError, match="round_to must be a positive integer"):
        sc.plan(net, X, round_to=0)


def test_ignore_names_missing_module(net):
    with pytest.raises(ValueError, match=r"ignore names module 'layer9', which the model does not have"):
        sc.plan(net, X, ignore=["layer9"])
    with pytest.raises(TypeError, match="ignore must be a list"):
        sc.plan(net, X, ignore="layer1")


def test_ratios_bad_key_and_value(net):
    with pytest.raises(ValueError, match="ratios names module 'nope'"):
        sc.plan(net, X, ratios={"nope": 0.2})
    with pytest.raises(ValueError, match=r"ratios\['layer1'\] must be a number"):
        sc.plan(net, X, ratios={"layer1": 2})


def test_plan_on_other_architecture(net):
    p = sc.plan(net, X, ratio=0.5)
    with pytest.raises(ValueError, match="plan does not fit this model"):
        sc.apply(mobilenet_v3_small(), p)
    with pytest.raises(TypeError, match="plan must be a secateurs Plan"):
        sc.apply(net, {"groups": []})
    with pytest.raises(ValueError, match="mode must be one of"):
        sc.apply(net, p, mode="shred")


def test_malformed_plan_json():
    with pytest.raises(ValueError, match="not valid JSON"):
        sc.Plan.from_json("{")
    with pytest.raises(ValueError, match="version"):
        sc.Plan.from_json("{}")


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(ratios=torch.zeros(2)), TypeError, r"ratios must be a dict \(module name -> ratio\) or None, got Tensor"),
    (dict(group_ratios=[0.5]), TypeError, r"group_ratios must be a dict \(group id -> ratio\) or None, got list"),
    (dict(graph="g"), TypeError, r"graph must be a Graph made by sc.trace\(model, example_inputs\) or None, got str"),
    (dict(verify=torch.ones(2)), ValueError, r"verify must be True or False, got tensor\(\[1\., 1\.\]\)"),
    (dict(verify="no"), ValueError, "verify must be True or False, got 'no'"),  # was read as True
])
def test_wrong_types_are_named_before_any_work(net, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sc.plan(net, X, 0.3, **kwargs)


def test_finalize_and_plan_text_name_what_they_take():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got dict"):
        sc.finalize({})
    with pytest.raises(TypeError, match=r"Plan.from_json takes the JSON text \(str or bytes\), got dict"):
        sc.Plan.from_json({"version": 2})
