"""Argument checks shared by every public API: numbers in intervals, integers in ranges (numpy scalars too)."""
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
from secateurs._inputs import check_int, check_real, check_round_to, is_int, is_real
from secateurs.train.schedules import Polynomial, Schedule

INTERVALS = ["[0, 1)", "(0, 1)", "[0, 1]", "(0, inf)", "[0, inf)", "[0, inf]", "(-inf, inf)", "[-inf, inf]"]


def _inside(x: float, interval: str) -> bool:
    """The definition, spelled out for each interval used."""
    return {"[0, 1)": 0 <= x < 1, "(0, 1)": 0 < x < 1, "[0, 1]": 0 <= x <= 1, "(0, inf)": 0 < x < math.inf,
            "[0, inf)": 0 <= x < math.inf, "[0, inf]": 0 <= x <= math.inf, "(-inf, inf)": math.isfinite(x),
            "[-inf, inf]": not math.isnan(x)}[interval]


@given(st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 1.0, -0.0, math.inf, -math.inf]),
       st.sampled_from(INTERVALS))
def test_is_real_matches_the_interval(x, interval):
    assert is_real(x, interval) == _inside(x, interval)
    with np.errstate(over="ignore"):  # a float64 past float32's range becomes inf, as numpy casts it
        y = np.float32(x)
    assert is_real(y, interval) == _inside(float(y), interval)


@given(st.integers(-5, 5), st.integers(-5, 5), st.none() | st.integers(-5, 5))
def test_is_int_matches_the_range(v, low, high):
    want = v >= low and (high is None or v <= high)
    assert is_int(v, low, high) == want
    assert is_int(np.int64(v), low, high) == want


@pytest.mark.parametrize("value", [True, False, "0.5", None, [0.5], torch.tensor([0.5]), torch.tensor(True),
                                   np.bool_(True)])
def test_non_numbers_are_refused(value):
    assert not is_real(value, "[-inf, inf]")
    assert not is_int(value, -10)


def test_messages_name_the_parameter_the_interval_and_the_value():
    with pytest.raises(ValueError, match=r"^ratio must be a number in \[0, 1\), got 1\.5$"):
        check_real(1.5, "ratio", "[0, 1)")
    with pytest.raises(ValueError, match=r"^opset must be an integer in 7\.\.9, got 10$"):
        check_int(10, "opset", 7, 9)
    with pytest.raises(ValueError, match=r"^steps must be an integer >= 1, got 0$"):
        check_int(0, "steps", 1)
    with pytest.raises(ValueError, match=r"got \[0, 0, 0.*\.\.\.$"):  # a huge value (from a file) is cut short
        check_real([0] * 1000, "quality")
    with pytest.raises(ValueError, match="not an interval"):
        is_real(0.5, "0..1")


def test_numpy_scalars_come_back_as_python_numbers():
    assert type(check_real(np.float32(0.25), "r", "[0, 1)")) is float
    assert type(check_int(np.int64(3), "n", 1)) is int
    assert check_real(torch.tensor(0.25), "r", "[0, 1)") == 0.25 and check_int(torch.tensor(3), "n", 1) == 3
    assert not is_real(torch.tensor(1.5), "[0, 1)") and not is_int(torch.tensor(2.0), 0)  # a float is no integer
    assert check_round_to(np.int64(8), "round_to") == 8 and type(check_round_to(np.int64(8), "round_to")) is int
    assert check_round_to("auto", "round_to") == "auto"
    for bad in ("Auto", np.array([8, 8]), 0):
        with pytest.raises(ValueError, match="round_to must be a positive integer or 'auto'"):
            check_round_to(bad, "round_to")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 4)).eval()


def test_plan_takes_numpy_and_tensor_numbers_as_their_python_values():
    """A ratio from ``np.linspace`` (float32 arrays give np.float32) or a 0-d tensor plans as the Python float."""
    model, x = _net(), torch.randn(1, 3, 8, 8)
    ratio = np.float32(0.5)
    a = sc.plan(model, x, ratio, round_to=np.int64(4))
    b = sc.plan(model, x, float(ratio), round_to=4)
    assert [g["remove"] for g in a.groups] == [g["remove"] for g in b.groups]
    assert a.settings["ratio"] == b.settings["ratio"] and type(a.settings["ratio"]) is float
    assert sc.plan(model, x, torch.tensor(0.5), round_to=torch.tensor(4)).to_json() == b.to_json()  # 0-d tensors
    gid = a.groups[0]["id"]
    c = sc.plan(model, x, 0.5, ratios={"0": np.float32(0.25)}, group_ratios={np.int64(gid): np.float64(0.75)},
                seed=np.int64(3), criterion="random")
    d = sc.plan(model, x, 0.5, ratios={"0": 0.25}, group_ratios={gid: 0.75}, seed=3, criterion="random")
    assert c.to_json() == d.to_json()  # numpy values stored as Python numbers: the plan stays JSON
    with pytest.raises(ValueError, match=r"ratio must be a number in \[0, 1\), got np\.float32\(1\.0\)"):
        sc.plan(model, x, np.float32(1.0))
    with pytest.raises(ValueError, match=r"ratios\['0'\] must be a number in \[0, 1\)"):
        sc.plan(model, x, 0.3, ratios={"0": 1.2})
    with pytest.raises(ValueError, match=r"seed must be an integer in"):
        sc.plan(model, x, 0.3, seed="1")


def test_schedules_take_numpy_values():
    s = Polynomial(initial_sparsity=np.float64(0.0), final_sparsity=np.float32(0.5), begin_step=np.int64(0),
                   end_step=10, frequency=np.int32(2), power=np.float32(3.0))
    assert s.sparsity_at(10) == pytest.approx(0.5)
    assert Schedule.from_dict(json.loads(json.dumps(s.to_dict()))) == s  # stored as Python numbers: JSON as before
    assert type(s.final_sparsity) is float and type(s.frequency) is int
    with pytest.raises(ValueError, match=r"Polynomial\.power must be a number in \(0, inf\)"):
        Polynomial(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=10, power=math.inf)
