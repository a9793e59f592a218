"""compare_latency (interleaved timing), the busy-machine warning, masked sizes and the Jupyter table."""
from __future__ import annotations

import itertools
import sys
import time
import warnings
from dataclasses import asdict
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
from secateurs.measure import DEFAULT_THREADS, Latency, LatencyRatio, compare_latency, latency_ratio
from secateurs.measure.latency import SPREAD_WARNING
from secateurs.measure.params import size_bytes


class Sleeper(nn.Module):
    """A fake model whose forward takes ``seconds`` and records the order it ran in."""

    def __init__(self, seconds: float, log: list[str], name: str) -> None:
        super().__init__()
        self.seconds, self.log, self.name = seconds, log, name
        self.linear = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append(self.name)
        time.sleep(self.seconds)
        return self.linear(x)


def test_interleaved_and_orders_slow_after_fast() -> None:
    log: list[str] = []
    models = {"fast": Sleeper(0.001, log, "fast"), "slow": Sleeper(0.012, log, "slow")}
    out = compare_latency(models, torch.zeros(1, 2), rounds=4, warmup=1)
    assert set(out) == {"fast", "slow"} and all(isinstance(v, Latency) for v in out.values())
    assert out["slow"].p10_ms > out["fast"].p90_ms and out["slow"].median_ms > 10
    assert out["fast"].runs == 4 and out["fast"].threads == DEFAULT_THREADS
    # warm-up once each, then A B | B A | A B | B A: never all of one model first
    assert log == ["fast", "slow", "fast", "slow", "slow", "fast", "fast", "slow", "slow", "fast"]
    assert not out["fast"].overlaps(out["slow"]) and out["fast"].overlaps(out["fast"])


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="models must be a non-empty mapping"):
        compare_latency({}, torch.zeros(1))
    with pytest.raises(TypeError, match=r"models\['a'\] must be a torch.nn.Module"):
        compare_latency({"a": 3}, torch.zeros(1))
    with pytest.raises(ValueError, match="rounds must be an integer >= 1"):
        compare_latency({"a": nn.Identity()}, torch.zeros(1), rounds=0)


def test_measure_warns_when_timings_are_unsteady(monkeypatch: pytest.MonkeyPatch) -> None:
    class Jittery(nn.Module):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            Jittery.calls += 1
            time.sleep(0.02 if Jittery.calls % 2 else 0.0005)
            return x

    with pytest.warns(UserWarning, match="latency is unsteady.*machine is busy"):
        sc.measure(Jittery(), torch.zeros(1), warmup=0, runs=6)
    steady = Latency(median_ms=5.0, p10_ms=4.0, p90_ms=4.0 * SPREAD_WARNING, runs=6, batch_size=1, threads=1)
    monkeypatch.setattr(sys.modules["secateurs.measure.measurement"], "measure_latency", lambda *a, **k: steady)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sc.measure(nn.Linear(2, 2), torch.zeros(1, 2), runs=6).latency == steady


def test_masked_model_reports_the_deployed_size() -> None:
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(2, 16)
    masked = sc.apply(model, sc.plan(model, x, 0.5, granularity="unstructured"), mode="mask")
    m = sc.measure(masked, x, latency=False)
    assert m.masked and m.size_bytes == size_bytes(model) < size_bytes(masked)
    assert "the model is masked" in str(m)
    dense = sc.measure(model, x, latency=False)
    assert not dense.masked and "masked" not in str(dense)


def test_measurement_renders_an_escaped_html_table() -> None:
    m = sc.Measurement(params=10, macs=20, macs_by_kind={"<conv>": 20}, size_bytes=40)
    out = m._repr_html_()
    assert out.startswith("<table") and "<th" in out and "&lt;conv&gt;" in out and "<conv>" not in out


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 4), rounds=st.integers(1, 6))
def test_every_model_runs_once_per_round_in_alternating_order(n: int, rounds: int) -> None:
    log: list[str] = []
    names = [f"m{i}" for i in range(n)]
    out = compare_latency({name: Sleeper(0.0, log, name) for name in names}, torch.zeros(1, 2), rounds=rounds,
                          warmup=0)
    assert list(out) == names
    assert all(v.runs == rounds and v.p10_ms <= v.median_ms <= v.p90_ms for v in out.values())
    assert log == [name for i in range(rounds) for name in (names if i % 2 == 0 else names[::-1])]


def test_interleaved_latency_ranks_a_bigger_model_slower(one_thread):
    small = nn.Sequential(nn.Linear(64, 64)).eval()
    big = nn.Sequential(*(nn.Linear(64, 64) for _ in range(40))).train()
    out = {k: asdict(v) for k, v in compare_latency({"small": small, "big": big}, torch.randn(8, 64), rounds=9,
                                                      warmup=2, threads=1).items()}
    assert out["big"]["median_ms"] > out["small"]["median_ms"]
    assert out["big"]["runs"] == 9 and out["big"]["threads"] == 1 and out["big"]["batch_size"] == 8
    assert out["big"]["p10_ms"] <= out["big"]["median_ms"] <= out["big"]["p90_ms"]
    assert big.training and not small.training  # train/eval flags restored


def test_latency_ratio_pairs_the_two_times_of_each_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load that changes from round to round (1x or 5x here) scales both times of a round alike: the per-round
    ratio stays 2 while each model's own times spread over 5x (a fake clock: no real timing in a unit test)."""
    log: list[str] = []
    clock = [0.0]
    load = itertools.cycle([1, 1, 5, 5, 1, 1, 5, 5, 5, 5, 1, 1, 5, 5, 1, 1])
    fake_time = SimpleNamespace(perf_counter=lambda: clock[0])
    monkeypatch.setattr(sys.modules["secateurs.measure.latency"], "time", fake_time)

    class Loaded(Sleeper):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.log.append(self.name)
            clock[0] += self.seconds * next(load)
            return self.linear(x)

    slow, fast = Loaded(0.004, log, "slow"), Loaded(0.002, log, "fast")
    r = latency_ratio(slow, fast, torch.zeros(1, 2), rounds=8, warmup=0)
    assert isinstance(r, LatencyRatio) and r.rounds == 8
    assert (r.p10, r.median, r.p90) == pytest.approx((2.0, 2.0, 2.0))
    times = compare_latency({"slow": Loaded(0.004, log, "s"), "fast": Loaded(0.002, log, "f")}, torch.zeros(1, 2),
                            rounds=8, warmup=0)
    assert times["slow"].p90_ms / times["slow"].p10_ms == pytest.approx(5.0)  # each model's own times: 5x apart
    assert log[:16] == ["slow", "fast", "fast", "slow"] * 4  # interleaved as compare_latency does
    with pytest.raises(TypeError, match="reference must be a torch.nn.Module"):
        latency_ratio(slow, "fast", torch.zeros(1, 2))
    with pytest.raises(ValueError, match="forward of reference failed on example_inputs"):
        latency_ratio(nn.Linear(2, 2), nn.Linear(3, 2), torch.zeros(1, 2))
