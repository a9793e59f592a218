"""sc.posttrain.prune: block-by-block magnitude / Wanda / SparseGPT / OWL on real (random) models."""
import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
from secateurs.posttrain.owl import owl_sparsities
from secateurs.posttrain.wanda import select, wanda_scores
from secateurs.prune.elements import check_nm, unpack

from .conftest import Stack, token_batches


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method,sparsity", [("magnitude", 0.5), ("wanda", "2:4"), ("sparsegpt", 0.5),
                                             ("sparsegpt", "2:4")])
def test_hf_models_masked_exactly_and_model_untouched(hf, method, sparsity):
    kind, model = hf
    before = _state(model)
    batches = token_batches()
    out, plan = sc.posttrain.prune(model, batches, method, sparsity, progress=False)
    assert _same(before, _state(model))
    assert len(plan.masks) == 12 if kind == "bert" else len(plan.masks) in (8, 14)
    params = dict(sc.finalize(copy.deepcopy(out)).named_parameters())
    for name, entry in plan.masks.items():
        mask = unpack(entry["bits"], entry["shape"])
        w = params[name]
        assert bool((w[~mask] == 0).all())
        if sparsity == "2:4":
            m2 = mask.t() if kind == "gpt2" else mask  # GPT-2's Conv1D stores (in, out)
            assert check_nm(m2, 2, 4) and math.isclose(float(m2.float().mean()), 0.5)
        else:
            assert abs(float(mask.float().mean()) - 0.5) < 0.01
    assert all("outside the repeated blocks" in s["reason"] or "tied" in s["reason"] for s in plan.skipped)
    with torch.no_grad():
        y = out(**batches[0])[0]
    assert torch.isfinite(y).all()
    assert plan.settings["method"] == method


def test_wanda_per_row_and_magnitude_per_layer():
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    norms = torch.tensor([4.0, 1.0, 1.0, 1.0])
    keep = select(wanda_scores(w, norms), 0.5, None, per_row=True)
    assert keep.tolist() == [[True, False, False, True], [True, False, False, True]]
    keep = select(w.abs(), 0.5, None, per_row=False)
    assert keep.tolist() == [[False] * 4, [True] * 4]


def _manual_wanda(model, batches, sparsity):
    """Reference: prune block 0 on dense inputs, then block 1 on block 0's *pruned* outputs, etc."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        xs = [ref.inp(b) for b in batches]
        for block in ref.blocks:
            x_up = torch.cat(xs)
            h = torch.relu(block.up(x_up))
            for lin, x in ((block.up, x_up), (block.down, h)):
                keep = select(wanda_scores(lin.weight, x.norm(dim=0)), sparsity, None, per_row=True)
                lin.weight.mul_(keep)
            xs = [block(x) for x in xs]
    return ref


def test_blocks_are_pruned_on_the_pruned_outputs_of_the_blocks_before(stack, stack_batches):
    out, plan = sc.posttrain.prune(stack, stack_batches, "wanda", 0.5, progress=False)
    ref = _manual_wanda(stack, stack_batches, 0.5)
    sc.finalize(out)
    for i in range(3):
        for lin in ("up", "down"):
            assert torch.allclose(out.blocks[i].get_submodule(lin).weight, ref.blocks[i].get_submodule(lin).weight)
    assert plan.settings["blocks"] == "blocks"
    assert {s["tensor"] for s in plan.skipped} == {"inp.weight", "head.weight"}


def test_sparsegpt_beats_wanda_beats_magnitude_on_output_error(stack, stack_batches):
    test = torch.randn(64, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = stack(test)
        pruned = {m: sc.posttrain.prune(stack, stack_batches, m, 0.6, progress=False)[0]
                  for m in ("magnitude", "wanda", "sparsegpt")}
        errs = {m: float(((p(test) - ref) ** 2).mean()) for m, p in pruned.items()}
    assert errs["sparsegpt"] < errs["wanda"] < errs["magnitude"], errs


def test_finalize_sparsity_measure_save_roundtrip(stack, stack_batches, tmp_path):
    out, plan = sc.posttrain.prune(stack, stack_batches, "sparsegpt", 0.5, progress=False)
    x = stack_batches[0]
    s = sc.sparsity(out)
    assert s.layers["blocks.0.up.weight"].sparsity == 0.5 and s.layers["head.weight"].sparsity == 0
    sc.measure(out, x, latency=False)
    sc.save(out, plan, tmp_path)
    loaded = sc.load(Stack(), tmp_path)
    with torch.no_grad():
        assert torch.allclose(loaded(x), out(x), atol=1e-6)
    assert sc.Plan.from_json(plan.to_json()).masks == plan.masks


def test_inplace_prunes_the_given_model(stack, stack_batches):
    out, _ = sc.posttrain.prune(stack, stack_batches, "wanda", "2:4", inplace=True, progress=False)
    assert out is stack
    assert float((stack.blocks[0].up.weight == 0).float().mean()) == 0.5


def test_whole_model_is_one_block_without_a_module_list_conv_pruned_and_nm_misfit_skipped():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv1d(8, 8, 3, stride=2), nn.Flatten(),
                          nn.Linear(8 * 9, 5)).eval()
    batches = [torch.randn(6, 3, 20) for _ in range(2)]
    out, plan = sc.posttrain.prune(model, batches, "sparsegpt", "2:4", progress=False)
    assert set(plan.masks) == {"2.weight", "4.weight"}
    assert plan.skipped == [{"tensor": "0.weight", "reason": "input dimension 3 is not a multiple of 4"}]
    assert check_nm(unpack(plan.masks["2.weight"]["bits"], [8, 8, 3]), 2, 4)
    with torch.no_grad():
        assert torch.isfinite(out(batches[0])).all()


def test_im2col_columns_reproduce_the_convolution():
    from secateurs.posttrain.calibration import columns, weight_2d
    torch.manual_seed(0)
    for conv, x in ((nn.Conv1d(3, 5, 3, padding=2, stride=2, dilation=2), torch.randn(2, 3, 11)),
                    (nn.Conv2d(3, 5, (3, 2), padding=(1, 0), stride=(1, 2), padding_mode="reflect"),
                     torch.randn(2, 3, 7, 6))):
        y = conv(x) - conv.bias.view(1, -1, *([1] * (x.dim() - 2)))
        cols = columns(conv, x) @ weight_2d(conv).t()  # (N * L, out)
        assert torch.allclose(cols, y.movedim(1, -1).reshape(-1, 5), atol=1e-5)


def test_sparsegpt_safe_on_duplicated_and_zero_features():
    from secateurs.posttrain.calibration import Stats
    from secateurs.posttrain.sparsegpt import sparsegpt
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 32, generator=g)  # fewer samples than features: X^T X is singular
    x[:, 1] = x[:, 0]
    x[:, 2] = 0.0
    x[:, 3:9] = x[:, 3:4]
    stats = Stats(32, hessian=True)
    stats.add(x)
    w = torch.randn(8, 32, generator=g)
    h = stats.take_hessian()
    with pytest.warns(UserWarning, match="ill-conditioned"):
        new, keep = sparsegpt(w.clone(), h.clone(), 0.5, None, damp=0.0, layer="fc")
    assert torch.isfinite(new).all() and bool((new[~keep] == 0).all())
    new, keep = sparsegpt(w.clone(), h.clone(), None, (2, 4), blocksize=8)
    assert torch.isfinite(new).all() and check_nm(keep, 2, 4) and float(new[:, 2].abs().max()) == 0.0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=12), st.floats(0.2, 0.78), st.floats(0.01, 0.1))
def test_owl_sparsities_keep_the_mean(ratios, target, lam):
    s = owl_sparsities(ratios, target, lam)
    assert abs(sum(s) / len(s) - target) < 1e-9
    assert max(s) - min(s) <= 2 * lam + 1e-9
    order = sorted(range(len(s)), key=lambda i: ratios[i])
    assert all(s[a] >= s[b] - 1e-12 for a, b in zip(order, order[1:]))  # more outliers, less sparse


def test_owl_end_to_end_mean_sparsity_equals_target(stack_batches):
    torch.manual_seed(0)
    model = Stack(n=4).eval()
    with torch.no_grad():
        model.blocks[2].up.weight[:, 0] *= 30  # one block with outliers
    # magnitude picks per layer, so the achieved sparsity is not blurred by per-row rounding
    out, plan = sc.posttrain.prune(model, stack_batches, "magnitude", 0.5, owl=True, progress=False)
    per_block = plan.settings["unit_sparsity"]
    assert abs(sum(per_block) / 4 - 0.5) < 1e-9 and len(set(per_block)) > 1
    assert min(per_block) == per_block[2]
    zeros = sum(float((unpack(e["bits"], e["shape"]) == 0).sum()) for e in plan.masks.values())
    total = sum(math.prod(e["shape"]) for e in plan.masks.values())
    assert abs(zeros / total - 0.5) < 2e-3


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_padding_tokens_stay_out_of_the_statistics(method):
    from .conftest import hf_model
    model = hf_model("bert")
    g = torch.Generator().manual_seed(3)
    mask = torch.ones(4, 16, dtype=torch.long)
    mask[:, 10:] = 0
    ids = torch.randint(0, 100, (4, 16), generator=g)
    other = ids.clone()
    other[:, 10:] = torch.randint(0, 100, (4, 6), generator=g)  # different tokens behind the padding
    plans = [sc.posttrain.prune(model, [{"input_ids": i, "attention_mask": mask}], method, 0.5, progress=False)[1]
             for i in (ids, other)]
    assert plans[0].masks == plans[1].masks
    unmasked = sc.posttrain.prune(model, [{"input_ids": other}], method, 0.5, progress=False)[1]
    assert unmasked.masks != plans[0].masks


def test_numpy_arguments_prune_as_their_python_values(stack, stack_batches):
    """``np.float32`` sparsities and damping (a sweep's ``np.linspace``) give the same masks and a JSON plan."""
    import numpy as np
    a, pa = sc.posttrain.prune(stack, stack_batches, "sparsegpt", np.float32(0.5), damp=np.float32(0.01),
                               blocksize=np.int64(128), progress=False)
    b, pb = sc.posttrain.prune(stack, stack_batches, "sparsegpt", 0.5, damp=float(np.float32(0.01)), progress=False)
    assert pa.to_json() == pb.to_json()
    assert _same(_state(a), _state(b))
