"""save/load of a model masked by ``apply(mode="mask")`` with a channel or head plan: saved physically pruned,
as ``load`` rebuilds it from the plan (masks baked in, then the masked channels sliced away)."""
import pytest
import torch

import secateurs as sc
from secateurs.measure.params import is_masked
from tests.helpers import outputs
from tests.prune.nets import ATTN_X, CNN_X, ResidualCNN, SelfAttention


def _cnn():
    torch.manual_seed(0)
    return ResidualCNN().eval()


def _attention():
    torch.manual_seed(0)
    return SelfAttention().eval()


CASES = {"cnn-channel": (_cnn, CNN_X, "channel"), "attention-head": (_attention, ATTN_X, "head")}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("compressed", [False, True])
def test_masked_model_saves_and_loads_as_the_pruned_model(case, compressed, tmp_path):
    build, x, granularity = CASES[case]
    model = build()
    plan = sc.plan(model, x, 0.5, granularity=granularity)
    masked = sc.apply(model, plan, mode="mask")
    sc.save(masked, plan, tmp_path, compressed=compressed)
    loaded = sc.load(build(), tmp_path)
    assert not is_masked(loaded)
    assert torch.equal(outputs(loaded, x)[0], outputs(sc.apply(model, plan), x)[0])
    torch.testing.assert_close(outputs(loaded, x)[0], outputs(masked, x)[0], atol=1e-5, rtol=1e-4)
    assert masked._secateurs_plan is plan  # the user's model is left masked


def test_saving_a_masked_model_with_another_plan_is_refused(tmp_path):
    model = _cnn()
    plan, other = (sc.plan(model, CNN_X, r) for r in (0.5, 0.25))
    with pytest.raises(ValueError, match="masked .* by a different plan"):
        sc.save(sc.apply(model, plan, mode="mask"), other, tmp_path)
    sc.save(sc.apply(model, plan, mode="mask"), sc.Plan.from_json(plan.to_json()), tmp_path)  # same plan, via JSON
    assert torch.equal(outputs(sc.load(_cnn(), tmp_path), CNN_X)[0], outputs(sc.apply(model, plan), CNN_X)[0])
