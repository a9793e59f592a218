"""Structural masks (``apply(mode="mask")`` of channel and head plans) are bool keep-masks: a quarter of a
float mask's bytes, with masked outputs, ``finalize``, measurements and saved models exactly as with the
float 0/1 masks built before (rebuilt here as the reference). Saving masked models: tests/io/test_saving_masked.py."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import secateurs as sc
from secateurs.graph import layout as L
from secateurs.measure import effective_parameters, size_bytes
from secateurs.prune.surgery import Mask
from tests.helpers import outputs


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


class HeadAttention(nn.Module):
    """Hand-written multi-head attention (the head count lives in ``self.heads``) with an MLP after it."""

    def __init__(self, dim: int = 24, heads: int = 4):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 32), nn.GELU(), nn.Linear(32, dim))

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (f(x).view(b, t, self.heads, self.head_dim).transpose(1, 2) for f in (self.q, self.k, self.v))
        y = nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, -1)
        x = x + self.proj(y)
        return x + self.mlp(x)


def _cnn():
    torch.manual_seed(0)
    model = SmallCNN()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so a wrong mask shows
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return model.eval(), torch.randn(2, 3, 10, 10), "channel"


def _attention():
    torch.manual_seed(0)
    return HeadAttention().eval(), torch.randn(2, 6, 24), "head"


CASES = {"cnn-channel": _cnn, "attention-head": _attention}


@pytest.fixture(params=list(CASES))
def case(request):
    model, x, granularity = CASES[request.param]()
    plan = sc.plan(model, x, 0.5, granularity=granularity)
    assert plan.removals()  # the plan prunes something
    return model, x, plan


def _masks(model):
    return {f"{n}.{a}": plist[0].mask for n, m in model.named_modules() if parametrize.is_parametrized(m)
            for a, plist in m.parametrizations.items()}


def _float_reference(model, plan):
    """``model`` masked the way ``apply(mode="mask")`` did before: float 0/1 masks, products over dimensions."""
    keep = {g["id"]: torch.tensor(sorted(set(range(g["size"])) - set(g["remove"])))
            for g in plan.groups if g["remove"]}
    ref = copy.deepcopy(model)
    params = dict(ref.named_parameters())
    for name, dims in plan.layouts.items():
        if name not in params:
            continue
        p, mask, touched = params[name], torch.ones_like(params[name]), False
        for d, tree in dims.items():
            if L.groups_in(tree) & keep.keys():
                m = torch.zeros(p.shape[int(d)], dtype=p.dtype)
                m[L.kept(tree, keep)] = 1
                shape = [1] * p.dim()
                shape[int(d)] = -1
                mask, touched = mask * m.view(shape), True
        if touched:
            mod_name, _, attr = name.rpartition(".")
            parametrize.register_parametrization(ref.get_submodule(mod_name), attr, Mask(mask), unsafe=True)
    return ref


def test_mask_buffers_are_bool_and_a_quarter_of_the_weights(case):
    model, _, plan = case
    masked = sc.apply(model, plan, mode="mask")
    masks = _masks(masked)
    assert masks and all(m.dtype == torch.bool for m in masks.values())
    weights = effective_parameters(masked)
    assert all(m.shape == weights[n].shape for n, m in masks.items())
    mask_bytes = sum(m.numel() * m.element_size() for m in masks.values())
    assert 4 * mask_bytes == sum(weights[n].numel() * weights[n].element_size() for n in masks)


def test_bool_masks_equal_the_float_masks_and_the_model_is_untouched(case):
    model, _, plan = case
    before = copy.deepcopy(model.state_dict())
    bools, floats = _masks(sc.apply(model, plan, mode="mask")), _masks(_float_reference(model, plan))
    assert bools.keys() == floats.keys()
    assert all(torch.equal(bools[n], floats[n].bool()) for n in bools)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_masked_output_equals_removed_and_the_float_reference(case):
    model, x, plan = case
    masked = sc.apply(model, plan, mode="mask")
    out = outputs(masked, x)[0]
    assert torch.equal(out, outputs(_float_reference(model, plan), x)[0])  # w * bool == w * float 0/1, exactly
    torch.testing.assert_close(out, outputs(sc.apply(model, plan), x)[0], atol=1e-5, rtol=1e-4)


def test_finalize_gives_the_float_reference_weights(case):
    model, _, plan = case
    baked = sc.finalize(sc.apply(model, plan, mode="mask"))
    ref = sc.finalize(_float_reference(model, plan))
    assert not any(parametrize.is_parametrized(m) for m in baked.modules())
    state, expected = baked.state_dict(), ref.state_dict()
    assert state.keys() == expected.keys()
    assert all(state[k].dtype == expected[k].dtype and torch.equal(state[k], expected[k]) for k in state)


def test_measurements_and_sparsity_are_those_of_the_float_masks(case):
    model, x, plan = case
    masked, ref = sc.apply(model, plan, mode="mask"), _float_reference(model, plan)
    ref._secateurs_plan = plan  # as apply attaches it: measure reports the MACs once applied
    a, b = (sc.measure(m, x, latency=False).to_dict() for m in (masked, ref))
    assert a == b and a["masked"]
    assert sc.sparsity(masked).to_dict() == sc.sparsity(ref).to_dict()
    assert size_bytes(masked) < size_bytes(ref)  # the masks themselves are smaller


def test_state_dicts_with_float_or_bool_masks_load_into_a_masked_model(case, tmp_path):
    """A masked model's state dict (``torch.save``d, or sent back by a sweep worker) holds the masks: one
    written with float masks loads into today's bool buffers, and a bool one round-trips."""
    model, x, plan = case
    ref = _float_reference(model, plan)
    torch.save(ref.state_dict(), tmp_path / "float.pt")
    torch.save(sc.apply(model, plan, mode="mask").state_dict(), tmp_path / "bool.pt")
    for file in ("float.pt", "bool.pt"):
        target = sc.apply(model, plan, mode="mask")
        target.load_state_dict(torch.load(tmp_path / file, weights_only=True))
        assert all(m.dtype == torch.bool for m in _masks(target).values())
        assert torch.equal(outputs(target, x)[0], outputs(ref, x)[0])



def test_bool_masks_keep_a_bfloat16_models_dtype():
    model, x, _ = _attention()
    plan = sc.plan(model, x, 0.5, granularity="head")
    model, x = model.to(torch.bfloat16), x.to(torch.bfloat16)
    masked, ref = sc.apply(model, plan, mode="mask"), _float_reference(model, plan)
    assert all(m.dtype == torch.bool for m in _masks(masked).values())
    assert all(w.dtype == torch.bfloat16 for w in effective_parameters(masked).values())
    assert torch.equal(outputs(masked, x)[0], outputs(ref, x)[0])
    assert outputs(masked, x)[0].dtype == torch.bfloat16
