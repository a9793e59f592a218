"""Every new criterion, through sc.plan + sc.apply on resnet18 with a small batch."""
import pytest
import torch

import secateurs as sc

from .common import IMAGE, ce_loss, image_batches

NEW = ["taylor", "snip", "hessian", "movement", "bn_scale", "fpgm", "lamp"]
DATA = {"taylor", "snip", "hessian", "movement"}


def test_all_are_registered():
    assert set(NEW) <= set(sc.CRITERIA)
    assert {n for n in NEW if sc.get_criterion(n).needs_data} == DATA
    for n in NEW:
        doc = type(sc.get_criterion(n)).__doc__
        assert doc and any(str(y) in doc for y in (1990, 2017, 2019, 2020, 2021)), n  # names its paper


@pytest.mark.parametrize("name", NEW)
def test_plan_and_apply_resnet18(resnet, name):
    data = {"batches": image_batches(n=1, size=2), "loss_fn": ce_loss} if name in DATA else {}
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    p = sc.plan(resnet, IMAGE, ratio=0.5, criterion=name, **data)
    assert p.removals() and not p.skipped
    assert all(len(r) == g["size"] // 2 for g in p.groups for r in [g["remove"]])
    small = sc.apply(resnet, p)
    assert small.layer1[0].conv1.out_channels == 32 and small.fc.out_features == 1000
    assert sum(q.numel() for q in small.parameters()) < 0.5 * sum(q.numel() for q in resnet.parameters())
    with torch.no_grad():
        assert small(IMAGE).shape == (1, 1000)
    assert all(torch.equal(before[k], v) for k, v in resnet.state_dict().items())
    again = sc.plan(resnet, IMAGE, ratio=0.5, criterion=name, **data)
    assert again.to_json() == p.to_json()  # same inputs, same plan
