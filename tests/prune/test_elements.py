"""Unstructured and N:M sparsity: masks as parametrizations that survive training and state_dicts."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

import secateurs as sc
from secateurs.prune.elements import check_nm, keep_top, unpack

X = torch.randn(4, 1, 28, 28)


def lenet():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 24 * 24, 64), nn.ReLU(), nn.Linear(64, 10))


def weights(model):
    return {n: m.weight for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def test_local_unstructured_hits_ratio_in_every_layer():
    m = lenet()
    masked = sc.prune(m, X, ratio=0.8, granularity="unstructured")
    for w in weights(masked).values():
        assert (w == 0).sum().item() == int(0.8 * w.numel())
    assert all(not parametrize.is_parametrized(x) for x in m.modules())  # the input is untouched


def test_global_unstructured_total_ratio_and_floor():
    m = lenet()
    with torch.no_grad():
        m[0].weight.mul_(1e-3)  # a layer of tiny weights: global magnitude would empty it
    masked = sc.prune(m, X, ratio=0.95, granularity="unstructured", scope="global")
    ws = weights(masked)
    total = sum(w.numel() for w in ws.values())
    zeros = sum((w == 0).sum().item() for w in ws.values())
    assert zeros / total == pytest.approx(0.95, abs=0.01)
    assert (ws["0"] != 0).sum().item() >= 1 and (ws["0"] != 0).float().mean() >= 0.01


@pytest.mark.parametrize("pattern,n,m", [("2:4", 2, 4), ("4:8", 4, 8), ("1:4", 1, 4)])
def test_n_m_pattern_holds_per_block_and_bad_layers_are_reported(pattern, n, m):
    model = lenet()
    p = sc.plan(model, X, granularity=pattern)
    assert [s["tensor"] for s in p.skipped] == ["0.weight"]  # 1 input channel: not a multiple of M
    masked = sc.apply(model, p, mode="mask")
    for entry in p.masks.values():
        mask = unpack(entry["bits"], entry["shape"])
        assert check_nm(mask, n, m)
        assert mask.float().mean().item() == pytest.approx(n / m)
    assert masked(X).shape == (4, 10)


@pytest.mark.parametrize("bad", ["4:4", "5:4", "0:4", "2:1"])
def test_n_m_needs_n_below_m(bad):
    with pytest.raises(ValueError, match="N:M needs 0 < N < M"):
        sc.plan(lenet(), X, granularity=bad)


@pytest.mark.parametrize("opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    lambda p: torch.optim.Adam(p, lr=0.01),
    lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
])
def test_masked_weights_stay_exactly_zero_through_training(opt):
    masked = sc.prune(lenet(), X, ratio=0.7, granularity="unstructured")
    zero = {n: (w == 0) for n, w in weights(masked).items()}
    optimizer = opt(masked.parameters())
    y = torch.randint(0, 10, (4,))
    for _ in range(15):
        optimizer.zero_grad()
        nn.functional.cross_entropy(masked(X), y).backward()
        optimizer.step()
    for n, w in weights(masked).items():
        assert torch.all(w[zero[n]] == 0)
        assert (w[~zero[n]] != 0).any()


def test_state_dict_round_trip_and_finalize():
    m = lenet()
    p = sc.plan(m, X, ratio=0.6, granularity="unstructured")
    a = sc.apply(m, p, mode="mask")
    with torch.no_grad():
        a[5].weight.data  # noqa: B018 - reading works through the parametrization
    b = sc.apply(lenet(), sc.Plan.from_json(p.to_json()), mode="mask")
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(X), b(X))
    out = a(X)
    sc.finalize(a)
    assert not any(parametrize.is_parametrized(x) for x in a.modules())
    assert not any("parametrizations" in k or "mask" in k for k in a.state_dict())
    torch.testing.assert_close(a(X), out)


def test_user_named_parameters_and_errors():
    m = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    x = torch.randn(3, 8)
    p = sc.plan(m, x, ratio=0.5, granularity="unstructured", params=["1.weight"])
    assert "1.weight" in p.masks
    with pytest.raises(ValueError, match="params names parameter 'nope'"):
        sc.plan(m, x, granularity="unstructured", params=["nope"])
    with pytest.raises(ValueError, match="ratios .* apply to scope='local'"):
        sc.plan(m, x, granularity="unstructured", scope="global", ratios={"0": 0.2})
    with pytest.raises(ValueError, match="mode must be 'mask' for a plan of element masks"):
        sc.apply(m, p)
    with pytest.raises(ValueError, match="params .* applies to element granularities"):
        sc.plan(m, x, params=["1.weight"])


def test_element_plans_are_deterministic():
    a = sc.plan(lenet(), X, ratio=0.5, granularity="unstructured", criterion="random", seed=4).to_json()
    b = sc.plan(lenet(), X, ratio=0.5, granularity="unstructured", criterion="random", seed=4).to_json()
    assert a == b


def _sorted_keep(s: torch.Tensor, keep: int) -> torch.Tensor:
    """The definition keep_top implements by selection: the first ``keep`` of a stable descending sort."""
    mask = torch.zeros(s.numel(), dtype=torch.bool)
    mask[torch.argsort(s.flatten().double(), descending=True, stable=True)[:max(keep, 0)]] = True
    return mask.view(s.shape)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([-2.0, -0.0, 0.0, 0.5, 1.0, 3.0, math.inf, -math.inf]) | st.floats(-5, 5),
                min_size=1, max_size=60), st.integers(-2, 62), st.booleans())
def test_keep_top_is_the_stable_descending_sort_by_selection(values, keep, rows):
    """Ties (many, by construction), signed zeros and infinities: the same mask as the sort, in its shape."""
    s = torch.tensor(values)
    if rows and s.numel() % 2 == 0:
        s = s.view(2, -1)
    got = keep_top(s, keep)
    assert got.dtype == torch.bool and got.shape == s.shape
    assert torch.equal(got, _sorted_keep(s, keep))
    assert int(got.sum()) == min(max(keep, 0), s.numel())


def test_keep_top_nan_is_kept_first_like_the_sort():
    s = torch.tensor([0.5, float("nan"), 2.0, float("nan"), 1.0])
    assert keep_top(s, 2).tolist() == [False, True, False, True, False]
    assert keep_top(s, 3).tolist() == [False, True, True, True, False]
