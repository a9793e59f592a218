import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secateurs.train.schedules import Constant, Iterative, LotteryTicket, OneShot, Polynomial, Schedule

fractions = st.floats(0, 0.99, allow_nan=False)


@st.composite
def schedules(draw):
    kind = draw(st.sampled_from(["one_shot", "iterative", "polynomial", "lottery"]))
    if kind == "one_shot":
        return OneShot(draw(st.integers(0, 50)), draw(fractions))
    if kind == "iterative":
        return Iterative(draw(st.floats(0.01, 0.9)), draw(st.integers(1, 20)), draw(fractions),
                         draw(st.integers(0, 30)))
    a, b = sorted([draw(fractions), draw(fractions)])
    begin = draw(st.integers(0, 50))
    poly = Polynomial(a, b, begin, begin + draw(st.integers(0, 200)), draw(st.integers(1, 30)), draw(st.floats(0.5, 5)))
    if kind == "polynomial" or poly.end_step == 0:
        return poly
    return LotteryTicket(poly, draw(st.integers(0, poly.end_step - 1)))


@settings(max_examples=150, deadline=None)
@given(schedules())
def test_monotone_bounded_final_and_past_end(s):
    values = [s.sparsity_at(t) for t in range(s.end_step + 40)]
    assert all(0 <= v < 1 for v in values)
    assert all(a <= b + 1e-12 for a, b in zip(values, values[1:]))
    assert s.sparsity_at(s.end_step) == pytest.approx(s.final)
    assert all(v == pytest.approx(s.final) for v in values[s.end_step:])
    assert s.sparsity_at(10**9) == pytest.approx(s.final)
    # sparsity changes only at pruning events
    for t in range(1, len(values)):
        if values[t] != values[t - 1]:
            assert s.prunes_at(t)
    assert Schedule.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_polynomial_follows_zhu_gupta():
    s = Polynomial(0.0, 0.9, begin_step=100, end_step=1100, frequency=100)
    assert s.sparsity_at(99) == 0 and s.sparsity_at(100) == 0
    assert s.sparsity_at(600) == pytest.approx(0.9 * (1 - 0.5 ** 3))
    assert s.sparsity_at(650) == s.sparsity_at(600)  # constant between events
    assert s.prunes_at(600) and not s.prunes_at(650) and s.prunes_at(1100) and not s.prunes_at(1200)
    assert s.final == pytest.approx(0.9)


def test_iterative_removes_a_share_of_what_is_left():
    s = Iterative(ratio_per_prune=0.5, every=10, final_sparsity=0.8)
    assert [s.sparsity_at(t) for t in (9, 10, 20, 30, 99)] == [0, 0.5, 0.75, 0.8, 0.8]
    assert s.end_step == 30 and s.prunes_at(30) and not s.prunes_at(40)


def test_one_shot_and_constant():
    assert [OneShot(5, 0.7).sparsity_at(t) for t in (4, 5, 6)] == [0, 0.7, 0.7]
    c = Constant(0.5, begin_step=3, frequency=2)
    assert c.prunes_at(3) and c.prunes_at(5) and not c.prunes_at(4) and c.sparsity_at(2) == 0 and not c.monotone


@pytest.mark.parametrize("make, name", [
    (lambda: Polynomial(0.0, 0.5, begin_step=10, end_step=5), "Polynomial.end_step"),
    (lambda: Polynomial(0.0, 1.0, begin_step=0, end_step=5), "Polynomial.final_sparsity"),
    (lambda: Polynomial(0.0, -0.1, begin_step=0, end_step=5), "Polynomial.final_sparsity"),
    (lambda: Polynomial(0.6, 0.5, begin_step=0, end_step=5), "Polynomial.initial_sparsity"),
    (lambda: Polynomial(0.0, 0.5, begin_step=-1, end_step=5), "Polynomial.begin_step"),
    (lambda: Polynomial(0.0, 0.5, begin_step=0, end_step=5, frequency=0), "Polynomial.frequency"),
    (lambda: Polynomial(0.0, 0.5, begin_step=0, end_step=5, power=0), "Polynomial.power"),
    (lambda: OneShot(-1, 0.5), "OneShot.step"),
    (lambda: OneShot(1, float("nan")), "OneShot.sparsity"),
    (lambda: Iterative(0.0, 10, 0.5), "Iterative.ratio_per_prune"),
    (lambda: Iterative(0.2, 0, 0.5), "Iterative.every"),
    (lambda: Constant(1.5), "Constant.sparsity"),
    (lambda: LotteryTicket(OneShot(5, 0.5), rewind_step=5), "LotteryTicket.rewind_step"),
])
def test_bad_input_names_the_parameter(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_bad_dicts_and_steps():
    with pytest.raises(ValueError, match="kind"):
        Schedule.from_dict({"kind": "cosine"})
    with pytest.raises(ValueError, match="unknown fields"):
        Schedule.from_dict({"kind": "one_shot", "step": 1, "sparsity": 0.5, "extra": 1})
    with pytest.raises(ValueError, match="step"):
        OneShot(1, 0.5).sparsity_at(-1)
    with pytest.raises(TypeError, match="LotteryTicket.schedule"):
        LotteryTicket("poly", 0)
