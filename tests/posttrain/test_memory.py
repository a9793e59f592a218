"""What keeps post-training pruning's memory bounded, as structural facts (no timing, no RSS): boolean
masks, SparseGPT in place, one set of block activations, statistics taken in pieces."""
import copy
import gc
import weakref

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import secateurs as sc
from secateurs.posttrain import calibration as C
from secateurs.posttrain.sparsegpt import inverse_cholesky, sparsegpt
from secateurs.prune.elements import check_nm, unpack
from secateurs.prune.surgery import Mask

from .conftest import Stack, hf_model, token_batches


def _masks(model):
    return {f"{n}.{a}": f.mask for n, m in model.named_modules() if parametrize.is_parametrized(m)
            for a, plist in m.parametrizations.items() for f in plist if isinstance(f, Mask)}


@pytest.mark.parametrize("method,sparsity", [("magnitude", 0.5), ("wanda", "2:4"), ("sparsegpt", 0.6)])
def test_masks_are_bool_and_the_model_finalizes_measures_saves_and_loads(stack, stack_batches, tmp_path, method,
                                                                         sparsity):
    out, plan = sc.posttrain.prune(stack, stack_batches, method, sparsity, progress=False)
    masks = _masks(out)
    assert set(masks) == set(plan.masks) and len(masks) == 6
    assert all(m.dtype == torch.bool for m in masks.values())  # 1 byte per weight, not a float's 4
    x = stack_batches[0]
    with torch.no_grad():
        y = out(x)
    s = sc.sparsity(out)
    want = 0.5 if sparsity == "2:4" else sparsity
    assert all(abs(s.layers[n].sparsity - want) < 0.02 for n in masks)
    sc.save(out, plan, tmp_path / "dense")
    sc.save(out, plan, tmp_path / "packed", compressed=True)
    for d in ("dense", "packed"):
        loaded = sc.load(Stack(), tmp_path / d)
        with torch.no_grad():
            assert torch.allclose(loaded(x), y, atol=1e-6)
    baked = sc.finalize(copy.deepcopy(out))
    assert not _masks(baked) and all(p.dtype == torch.float32 for p in baked.parameters())
    for n, m in masks.items():
        w = baked.get_submodule(n.rsplit(".", 1)[0]).weight
        assert bool((w[~m] == 0).all()) and torch.equal(unpack(plan.masks[n]["bits"], list(w.shape)), m)
        if sparsity == "2:4":
            assert check_nm(m, 2, 4)
    with torch.no_grad():
        assert torch.allclose(baked(x), y, atol=1e-6)


def test_bool_masks_train_and_stay_zero(stack, stack_batches):
    """A bool-masked model fine-tunes: gradients flow through ``w * mask`` and pruned weights read as zero."""
    out, _ = sc.posttrain.prune(stack, stack_batches, "wanda", 0.5, progress=False)
    opt = torch.optim.SGD(out.parameters(), lr=0.1)
    for b in stack_batches:
        opt.zero_grad()
        out(b).pow(2).mean().backward()
        opt.step()
    for n, m in _masks(out).items():
        w = out.get_submodule(n.rsplit(".", 1)[0]).weight
        assert w.dtype == torch.float32 and bool((w[~m] == 0).all())


def _sparsegpt_reference(w, h, sparsity, nm, blocksize, damp):
    """The algorithm as first written here (copies of every block, float64 inverse without ``out=``)."""
    w, h = w.clone(), h.clone()
    rows, cols = w.shape
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    hd = h.double() + damp * float(torch.diag(h).mean()) * torch.eye(cols, dtype=torch.float64)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hd)), upper=True).float()
    keep = torch.ones_like(w, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1, q1, err1 = w[:, i1:i2].clone(), torch.zeros(rows, i2 - i1), torch.zeros(rows, i2 - i1)
        hinv1 = hinv[i1:i2, i1:i2]
        d = torch.diag(hinv1)
        gone = torch.zeros(rows, i2 - i1, dtype=torch.bool)
        if nm is None:
            n_drop = int(sparsity * gone.numel())
            gone.view(-1)[torch.argsort((w1 ** 2 / d ** 2).flatten(), stable=True)[:n_drop]] = True
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                low = torch.topk(w1[:, i:i + nm[1]] ** 2 / d[i:i + nm[1]] ** 2, nm[1] - nm[0], dim=1, largest=False)
                gone.scatter_(1, i + low.indices, True)
            q = w1[:, i].clone()
            q[gone[:, i]] = 0
            q1[:, i] = q
            e = (w1[:, i] - q) / d[i]
            w1[:, i:] -= e.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            err1[:, i] = e
        w[:, i1:i2] = q1
        keep[:, i1:i2] = ~gone
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w * keep, keep


@pytest.mark.parametrize("sparsity,nm", [(0.5, None), (None, (2, 4))])
def test_sparsegpt_in_place_equals_the_copying_reference(sparsity, nm):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 48, generator=g) * torch.linspace(0.1, 3, 48)
    x[:, 5] = 0.0  # a dead input
    h = 2 * x.t() @ x / 200
    w = torch.randn(20, 48, generator=g)
    ref_w, ref_keep = _sparsegpt_reference(w, h, sparsity, nm, blocksize=16, damp=0.01)
    mine, hh = w.clone(), h.clone()
    new, keep = sparsegpt(mine, hh, sparsity, nm, blocksize=16, damp=0.01)
    assert new is mine  # updated in place, no copy returned
    assert torch.equal(keep, ref_keep) and torch.allclose(new, ref_w, atol=1e-5)
    assert bool((new[~keep] == 0).all()) and bool((new[:, 5] == 0).all())


def test_sparsegpt_prunes_a_transposed_view_in_place():
    """GPT-2's Conv1D weight is (in, out): SparseGPT works on its transpose, a view, and writes through it."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(100, 16, generator=g)
    stored = torch.randn(16, 8, generator=g)  # (in, out)
    expect, _ = sparsegpt(stored.t().contiguous(), 2 * x.t() @ x / 100, 0.5, None)
    new, keep = sparsegpt(stored.t(), 2 * x.t() @ x / 100, 0.5, None)
    assert new.data_ptr() == stored.data_ptr() and torch.allclose(stored.t(), expect)
    with pytest.raises(TypeError, match="float32"):
        sparsegpt(stored.double(), torch.eye(8), 0.5, None)


def test_inverse_cholesky_is_the_upper_factor_of_the_inverse_written_over_h():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 24, generator=g)
    h = x.t() @ x
    damped = h.double() + 0.01 * float(h.diag().mean()) * torch.eye(24, dtype=torch.float64)
    u = inverse_cholesky(h, 0.01, "fc")
    assert u.data_ptr() == h.data_ptr() and u.dtype == torch.float32
    assert torch.equal(u, u.triu()) and bool((u.diag() > 0).all())
    assert torch.allclose(u.double().t() @ u.double(), torch.linalg.inv(damped), rtol=1e-4, atol=1e-6)


def test_all_finite_sees_nan_and_both_infinities():
    x = torch.randn(50, 7)
    assert C.all_finite(x) and C.all_finite(torch.empty(0, 3))
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = x.clone()
        y[31, 4] = bad
        assert not C.all_finite(y) and not C.all_finite(y.t())


def test_advance_replaces_each_input_by_its_output():
    """The next block's inputs overwrite this block's in the same list: the inputs are freed as it goes."""
    torch.manual_seed(0)
    block = nn.Linear(6, 6)
    calls = [C.Call((torch.randn(4, 6),), {}) for _ in range(3)]
    expect = [block(c.hidden()).detach() for c in calls]
    inputs = [weakref.ref(c.hidden()) for c in calls]
    with torch.no_grad():
        C.advance(block, calls)
    gc.collect()
    assert all(r() is None for r in inputs)
    assert all(torch.allclose(c.hidden(), e) for c, e in zip(calls, expect))


def test_statistics_taken_in_pieces_equal_the_whole_input_without_padding(monkeypatch):
    torch.manual_seed(0)
    lin = nn.Linear(8, 3)
    x = torch.randn(5, 7, 8)
    am = torch.ones(5, 7, dtype=torch.long)
    am[1, 4:] = 0
    am[3, 2:] = 0
    batches = [{"input_ids": torch.zeros(5, 7, dtype=torch.long), "attention_mask": am}]
    tokens = C.Tokens(batches)
    monkeypatch.setattr(C, "CHUNK", 16)  # two samples (2 x 7 x 8 = 112 elements) would already be too many

    def run():
        tokens.current = tokens.masks[0]
        lin(x)

    stats = C.collect({"lin": lin}, run, hessian=True, tokens=tokens)["lin"]
    real = x[am.bool()]
    assert stats.rows == real.shape[0] == 5 * 7 - 3 - 5
    assert torch.allclose(stats.norms(), real.norm(dim=0), atol=1e-6)
    assert torch.allclose(stats.take_hessian(), 2 * real.t() @ real / real.shape[0], atol=1e-5)
    with pytest.raises(RuntimeError, match="already taken"):
        stats.take_hessian()


def test_magnitude_checks_every_batch_but_keeps_no_activations(stack, stack_batches):
    work = copy.deepcopy(stack)
    assert C.first_inputs(work, work.blocks[0], stack_batches, keep=False) == []
    assert len(C.first_inputs(work, work.blocks[0], stack_batches)) == len(stack_batches)
    bad = [b.clone() for b in stack_batches]
    bad[2][0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"batch 2"):
        sc.posttrain.prune(stack, bad, "magnitude", 0.5, progress=False)


def test_hf_gpt2_conv1d_pruned_in_place_matches_its_masks():
    model = hf_model("gpt2")
    out, plan = sc.posttrain.prune(model, token_batches(), "sparsegpt", 0.5, progress=False)
    masks = _masks(out)
    assert masks and all(m.dtype == torch.bool for m in masks.values())
    for n, m in masks.items():
        mod = out.get_submodule(n.rsplit(".", 1)[0])
        assert bool((mod.parametrizations.weight.original[~m] == 0).all())
