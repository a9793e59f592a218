"""Every torchvision classification model prunes with default arguments (CI runs one per family)."""
import pytest
import torch
import torchvision

import secateurs as sc
from tests.helpers import outputs
from tests.zoo.check import check, example_input

CI_SUBSET = ["alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s", "googlenet",
             "inception_v3", "maxvit_t", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf",
             "regnet_y_400mf", "resnet18", "resnext50_32x4d", "shufflenet_v2_x0_5", "squeezenet1_0",
             "swin_t", "swin_v2_t", "vgg11_bn", "vit_b_16", "wide_resnet50_2"]
ALL = torchvision.models.list_models(module=torchvision.models)


def test_subset_covers_every_family():
    family = lambda n: n.split("_")[0].rstrip("0123456789").replace("resnext", "resnext")  # noqa: E731
    assert {family(n) for n in ALL} <= {family(n) for n in CI_SUBSET} | {"vgg"}
    assert len(ALL) == 80


@pytest.mark.parametrize("name", CI_SUBSET)
def test_prune_ci_subset(name):
    check(name)


@pytest.mark.zoo_full
@pytest.mark.parametrize("name", ALL)
def test_prune_full_zoo(name):
    check(name)


EQUIV = ["resnet18", "mobilenet_v3_small", "densenet121", "regnet_y_400mf", "efficientnet_b0",
         "shufflenet_v2_x0_5", "squeezenet1_0", "googlenet"]


@pytest.mark.parametrize("name", EQUIV)
def test_masked_equals_physical_on_zoo(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = example_input(name)
    p = sc.plan(model, x, ratio=0.3)
    masked, physical = sc.apply(model, p, mode="mask"), sc.apply(model, p)
    a, b = outputs(masked, x)[0], outputs(physical, x)[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
