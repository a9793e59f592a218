"""sensitivity(): each group pruned alone, its quality and savings; the model is never touched."""
from __future__ import annotations

import json
import math

import pytest
import torch

import secateurs as sc
from secateurs.examples import models
from secateurs.measure import count_macs, count_params
from secateurs.search.sensitivity import Sensitivity, sensitivity

RATIOS = (0.25, 0.5, 0.75)


def test_one_entry_per_group_and_ratio(setup):
    model, x, _, sens = setup
    g = sc.trace(model, x)
    assert [s.id for s in sens.groups] == [gr.id for gr in g.groups if gr.kind == "channel"]
    assert [s.label for s in sens.groups] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert sens.ratios == RATIOS
    assert sens.dense_macs == count_macs(model, x).total and sens.dense_params == count_params(model)
    for s in sens.groups:
        for d in (s.quality, s.macs_saved, s.params_saved, s.removed):
            assert list(d) == [0.0, *RATIOS]
        assert s.quality[0.0] == sens.baseline
        assert s.macs_saved[0.0] == s.params_saved[0.0] == s.removed[0.0] == 0
        assert [s.removed[r] for r in RATIOS] == [math.floor(r * s.size) for r in RATIOS]
        assert all(s.quality[r] <= sens.baseline for r in RATIOS)  # fidelity: pruning never helps
        for saved in (s.macs_saved, s.params_saved):
            vals = [saved[r] for r in (0.0, *RATIOS)]
            assert vals == sorted(vals) and vals[-1] > 0
        assert s.skipped is None


def test_baseline_and_ratio_zero_equal_the_dense_model(setup):
    model, x, evaluate, sens = setup
    assert sens.baseline == evaluate(model) == 0.0
    same = sc.apply(model, sc.plan(model, x, 0.0, group_ratios={2: 0.0}))
    assert evaluate(same) == sens.group(2).quality[0.0]


def test_entries_are_what_pruning_that_group_alone_gives(setup):
    model, x, evaluate, sens = setup
    small = sc.apply(model, sc.plan(model, x, 0.0, group_ratios={1: 0.5}))
    s = sens.group(1)
    assert s.quality[0.5] == evaluate(small)
    assert s.macs_saved[0.5] == count_macs(model, x).total - count_macs(small, x).total
    assert s.params_saved[0.5] == count_params(model) - count_params(small)
    # conv2's output channels feed the widest layers: it saves the most MACs; conv5 the fewest
    at = {t.label: t.macs_saved[0.75] for t in sens.groups}
    assert max(at, key=at.get) == "conv2" and min(at, key=at.get) == "conv5"


def test_model_untouched_even_by_an_evaluate_that_mutates(setup):
    _, x, _, _ = setup
    model = models.mnist1d_cnn(channels=8, seed=1).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def rude(m):  # scores, then vandalises the model it was given (and runs it in train mode)
        m.train()
        with torch.no_grad():
            q = float(m(x).sum())
            for p in m.parameters():
                p.zero_()
        return q

    sensitivity(model, x, rude, ratios=(0.5,), quiet=True)
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_deterministic(setup):
    model, x, evaluate, sens = setup
    again = sensitivity(model, x, evaluate, quiet=True)
    assert again.to_dict() == sens.to_dict()


def test_to_dict_is_json_and_round_trips(setup):
    *_, sens = setup
    d = sens.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back["curves"] == {s.label: {str(r): s.quality[r] for r in (0.0, *RATIOS)} for s in sens.groups}
    assert list(back["curves"]["conv3"]) == ["0.0", "0.25", "0.5", "0.75"]
    assert Sensitivity.from_dict(back) == sens
    assert Sensitivity.from_json(sens.to_json()) == sens
    assert sens.curves()["conv1"][0.5] == sens.group(0).quality[0.5]


def test_str_is_a_table(setup):
    *_, sens = setup
    text = str(sens)
    lines = text.splitlines()
    assert "baseline quality" in lines[0] and "l2" in lines[0]
    assert "q@0.25" in lines[1] and "MACs saved@0.75" in lines[1]
    assert len(lines) == 2 + len(sens.groups)
    assert all(label in text for label in ("conv1", "conv5"))


def test_ratio_that_removes_nothing_is_not_evaluated(setup):
    model, x, evaluate, _ = setup
    calls = []

    def counting(m):
        calls.append(1)
        return evaluate(m)

    s = sensitivity(model, x, counting, ratios=(0.01, 0.5), quiet=True)
    assert len(calls) == 1 + len(s.groups)  # baseline + one per group (0.01 of 16 channels removes none)
    assert all(g.quality[0.01] == s.baseline and g.removed[0.01] == 0 and g.macs_saved[0.01] == 0 for g in s.groups)


def test_plan_kwargs_and_graph_are_used(setup):
    model, x, evaluate, _ = setup
    g = sc.trace(model, x)
    s = sensitivity(model, x, evaluate, ratios=(0.5,), graph=g, round_to=4, ignore=["conv5"], quiet=True)
    # conv5's weights hold group 3 (its inputs) and group 4 (its outputs): both are left out
    assert [t.label for t in s.groups] == ["conv1", "conv2", "conv3"]
    assert all(t.removed[0.5] == 8 for t in s.groups)
    assert s.settings["plan_kwargs"] == {"round_to": 4, "ignore": ["conv5"]}
    s3 = sensitivity(model, x, evaluate, ratios=(0.3,), round_to=4, quiet=True)
    assert all(t.removed[0.3] == 4 for t in s3.groups)  # floor(4.8) = 4 removed, 12 kept: a multiple of 4


def test_progress_bar_unless_quiet(setup, capsys):
    model, x, evaluate, _ = setup
    sensitivity(model, x, evaluate, ratios=(0.5,), quiet=True)
    assert "sensitivity" not in capsys.readouterr().err
    sensitivity(model, x, evaluate, ratios=(0.5,))
    assert "sensitivity" in capsys.readouterr().err


@pytest.mark.parametrize("ratios", [(0.0,), (1.0,), (0.5, 1.2), ("0.5",), (), (float("nan"),), (True,)])
def test_bad_ratios(setup, ratios):
    model, x, evaluate, _ = setup
    with pytest.raises((ValueError, TypeError), match="ratios"):
        sensitivity(model, x, evaluate, ratios=ratios, quiet=True)


def test_errors(setup):
    model, x, evaluate, _ = setup
    with pytest.raises(TypeError, match="evaluate must be a callable"):
        sensitivity(model, x, 0.5, quiet=True)
    with pytest.raises(TypeError, match="evaluate must return a number"):
        sensitivity(model, x, lambda m: "good", quiet=True)
    with pytest.raises(ValueError, match="finite"):
        sensitivity(model, x, lambda m: float("nan"), quiet=True)
    with pytest.raises(ValueError, match="sets \\['ratio'\\] itself"):
        sensitivity(model, x, evaluate, ratio=0.3, quiet=True)
    with pytest.raises(ValueError, match="granularity"):
        sensitivity(model, x, evaluate, granularity="unstructured", quiet=True)
    with pytest.raises(ValueError, match="no prunable head groups"):
        sensitivity(model, x, evaluate, granularity="head", quiet=True)
