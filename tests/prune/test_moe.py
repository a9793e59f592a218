"""Pruning mixture-of-experts causal LMs: residual width, expert neurons and whole experts."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import secateurs as sc
from secateurs.graph import Group
from secateurs.prune.planner import _fitted
from tests.moe_models import FAMILIES, gpt_oss, mixtral, moe_blocks, qwen3_moe, tokens


def _params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def _logits(m, x):
    with torch.no_grad():
        return m(**x).logits


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_channels_with_defaults_shrink_residual_and_expert_neurons(family, one_thread):
    model = FAMILIES[family]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = tokens()
    p = sc.plan(model, x, 0.3)
    small = sc.apply(model, p)
    assert not [s for s in p.skipped if "id" in s]  # verification dropped nothing
    assert _params(small) < 0.72 * _params(model)
    for blk, orig in zip(moe_blocks(small), moe_blocks(model)):
        e, h, i = blk.experts.down_proj.shape
        assert (e, h % 8, i % 8) == (4, 0, 0) and h < 64 and i < orig.experts.intermediate_dim
        assert blk.experts.gate_up_proj.shape == (4, 2 * i, h)
        assert (blk.experts.hidden_dim, blk.experts.intermediate_dim, blk.gate.hidden_dim) == (h, i, h)
    assert _logits(small, x).shape == _logits(model, x).shape
    gen = small.generate(x["input_ids"], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert gen.shape == (1, 13)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input model untouched


def test_removed_expert_neurons_that_were_zero_change_nothing(one_thread):
    """Neurons i of every expert go with their gate and up rows and down column: exactly, when they were zero."""
    model = mixtral()
    gone = [3, 10, 17, 30, 41, 55, 60, 90]
    with torch.no_grad():
        for blk in moe_blocks(model):
            w = blk.experts.gate_up_proj
            w[:, gone] = 0
            w[:, [96 + i for i in gone]] = 0
            blk.experts.down_proj[:, :, gone] = 0
    x = tokens()
    g = sc.trace(model, x)
    neurons = [grp.id for grp in g.groups if grp.size == 96]
    p = sc.plan(model, x, 0.0, group_ratios={gid: 8 / 96 for gid in neurons}, graph=g)
    assert all(p.groups[gid]["remove"] == gone for gid in neurons)
    small = sc.apply(model, p)
    assert small.model.layers[0].mlp.experts.down_proj.shape == (4, 64, 88)
    torch.testing.assert_close(_logits(small, x), _logits(model, x), atol=1e-5, rtol=1e-4)


def test_transposed_biased_interleaved_experts_prune_exactly(one_thread):
    """GPT-OSS: gate_up_proj is (experts, hidden, 2 x inner) with gate and up interleaved, plus biases."""
    model = gpt_oss()
    gone = [1, 6, 9, 20, 27, 33, 40, 47]
    with torch.no_grad():
        for blk in moe_blocks(model):
            cols = [2 * i for i in gone] + [2 * i + 1 for i in gone]
            blk.experts.gate_up_proj[:, :, cols] = 0
            blk.experts.gate_up_proj_bias[:, cols] = 0
            blk.experts.down_proj[:, gone] = 0
    x = tokens()
    g = sc.trace(model, x)
    neurons = [grp.id for grp in g.groups if grp.size == 48]
    assert len(neurons) == 2 and len([grp for grp in g.groups if grp.kind == "expert"]) == 2
    small = sc.apply(model, sc.plan(model, x, 0.0, group_ratios={gid: 8 / 48 for gid in neurons}, graph=g))
    experts = small.model.layers[1].mlp.experts
    assert experts.gate_up_proj.shape == (4, 64, 80) and experts.gate_up_proj_bias.shape == (4, 80)
    assert (experts.down_proj.shape, experts.intermediate_size, experts.hidden_size) == ((4, 40, 64), 40, 64)
    torch.testing.assert_close(_logits(small, x), _logits(model, x), atol=1e-5, rtol=1e-4)
    fewer = sc.prune(model, x, 0.5, granularity="expert")
    assert [blk.router.weight.shape[0] for blk in moe_blocks(fewer)] == [2, 2]
    assert fewer.generate(x["input_ids"], max_new_tokens=2, do_sample=False, pad_token_id=0).shape == (1, 11)


def _never_pick(gate, expert: int) -> None:
    """Make an original router behave as if ``expert`` were not there (its logit at -inf)."""
    def forward(hidden):
        logits = F.linear(hidden.reshape(-1, gate.hidden_dim), gate.weight)
        logits[:, expert] = float("-inf")
        top, idx = torch.topk(F.softmax(logits.float(), dim=-1), gate.top_k, dim=-1)
        top = top / top.sum(dim=-1, keepdim=True)
        return logits, top.to(logits.dtype), idx

    gate.forward = forward


@pytest.mark.parametrize("make,impl", [(mixtral, "grouped_mm"), (qwen3_moe, "grouped_mm"), (mixtral, "batched_mm")])
def test_removing_an_expert_equals_a_router_that_never_picks_it(make, impl, one_thread):
    model = make()
    model.set_experts_implementation(impl)
    x = tokens(12)
    g = sc.trace(model, x)
    experts = [grp.id for grp in g.groups if grp.kind == "expert"]
    p = sc.plan(model, x, 0.25, granularity="expert", graph=g)
    gone = [p.groups[gid]["remove"] for gid in experts]
    assert all(len(r) == 1 for r in gone)
    small = sc.apply(model, p)
    for blk, (_,) in zip(moe_blocks(small), gone):
        assert blk.gate.weight.shape == (3, 64) and blk.experts.gate_up_proj.shape[0] == 3
        assert blk.gate.num_experts == blk.experts.num_experts == 3
    for blk, (e,) in zip(moe_blocks(model), gone):
        _never_pick(blk.gate, e)
    torch.testing.assert_close(_logits(small, x), _logits(model, x), atol=1e-5, rtol=1e-4)
    gen = small.generate(x["input_ids"], max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert gen.shape == (1, 15)


@pytest.mark.parametrize("k,ratio,scope,left", [(2, 0.9, "local", 2), (3, 0.5, "local", 3), (1, 0.5, "local", 2),
                                                 (2, 0.9, "global", 2)])
def test_each_router_keeps_at_least_top_k_experts(k, ratio, scope, left, one_thread):
    model = mixtral(num_experts_per_tok=k)
    x = tokens()
    p = sc.plan(model, x, ratio, granularity="expert", scope=scope)
    small = sc.apply(model, p)
    assert [blk.gate.weight.shape[0] for blk in moe_blocks(small)] == [left, left]
    assert _logits(small, x).shape == (1, 9, 120)


def test_expert_plan_round_trips_and_rejects_tampering(one_thread):
    model = qwen3_moe()
    x = tokens()
    p = sc.plan(model, x, 0.5, granularity="expert")
    text = p.to_json()
    again = sc.Plan.from_json(text)
    torch.manual_seed(0)
    twin = qwen3_moe()
    twin.load_state_dict(model.state_dict())
    torch.testing.assert_close(_logits(sc.apply(twin, again), x), _logits(sc.apply(model, p), x))

    data = json.loads(text)
    gid = next(grp["id"] for grp in data["groups"] if grp["kind"] == "expert" and grp["remove"])
    bogus = json.loads(text)
    bogus["groups"][gid]["kind"] = "mixture"
    with pytest.raises(ValueError,
                       match=r"group \d+ has kind 'mixture', expected one of \['channel', 'head', 'expert'\]"):
        sc.Plan.from_json(json.dumps(bogus))
    relabelled = json.loads(text)
    relabelled["groups"][gid]["kind"] = "channel"  # would let mode="mask" zero experts: the seal catches it
    with pytest.raises(ValueError, match="structure .* differs from the one recorded"):
        sc.Plan.from_json(json.dumps(relabelled))
    greedy = json.loads(text)
    greedy["groups"][gid]["remove"] = [0, 1, 2]  # editable, but leaves 1 expert for top_k=2
    with pytest.raises(ValueError, match=r"leaves 1 experts in model.layers.\d.mlp.gate, which picks top_k=2"):
        sc.apply(model, sc.Plan.from_json(json.dumps(greedy)))


def test_eager_experts_lose_residual_width_and_neurons(one_thread):
    model = mixtral()
    model.set_experts_implementation("eager")
    x = tokens()
    small = sc.prune(model, x, 0.3)
    assert [blk.experts.down_proj.shape for blk in moe_blocks(small)] == [(4, 45, 68)] * 2  # no grouped_mm alignment
    assert [blk.gate.weight.shape for blk in moe_blocks(small)] == [(4, 45)] * 2
    assert small.generate(x["input_ids"], max_new_tokens=2, do_sample=False, pad_token_id=0).shape == (1, 11)


def test_aligned_groups_reject_edited_misaligned_removals(one_thread):
    model = qwen3_moe()
    p = sc.plan(model, tokens(), 0.3)
    data = json.loads(p.to_json())
    aligned = [grp for grp in data["groups"] if grp.get("multiple")]
    assert aligned and all(grp["multiple"] == 8 and (grp["size"] - len(grp["remove"])) % 8 == 0 for grp in aligned)
    grp = aligned[0]
    grp["remove"] = grp["remove"][:-1]  # an edit that keeps one more: rows no longer 16-byte aligned
    with pytest.raises(ValueError, match=rf"group {grp['id']} keeps \d+ of \d+ elements; .* needs a multiple of 8"):
        sc.Plan.from_json(json.dumps(data))
    unaligned = json.loads(p.to_json())
    del next(g for g in unaligned["groups"] if g["id"] == grp["id"])["multiple"]
    with pytest.raises(ValueError, match="structure .* differs from the one recorded"):
        sc.Plan.from_json(json.dumps(unaligned))


def test_mask_mode_refuses_to_remove_experts(one_thread):
    model = mixtral()
    p = sc.plan(model, tokens(), 0.25, granularity="expert")
    with pytest.raises(ValueError, match="mode 'mask' cannot remove whole experts"):
        sc.apply(model, p, mode="mask")


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 64), multiple=st.sampled_from([1, 4, 8]), round_to=st.sampled_from([1, 2, 3]),
       floor=st.integers(1, 8), data=st.data())
def test_fitted_removals_keep_floors_and_multiples(size, multiple, round_to, floor, data):
    n = data.draw(st.integers(0, size - 1))
    scores = torch.tensor(data.draw(st.lists(st.floats(0, 1), min_size=size, max_size=size)))
    asked = sorted(torch.argsort(scores, stable=True)[:n].tolist())
    g = Group(0, size, "expert", [("w", 0, "out")], multiple=multiple)
    out = _fitted([g], {0: asked} if asked else {}, {0: scores}, round_to, {0: (floor, "gate")})
    kept = size - len(out.get(0, []))
    step = math.lcm(multiple, round_to)
    assert kept == size or (kept % step == 0 and kept >= floor)
    assert kept >= size - n
    assert out.get(0, []) == sorted(torch.argsort(scores, stable=True)[:size - kept].tolist())


def test_llama4_experts_hold_hidden_before_inner(one_thread):
    """Llama4's fused experts are (E, hidden, 2 inner) / (E, inner, hidden) with no ``is_transposed`` flag:
    surgery reads the orientation off ``gate_up_proj``, so ``hidden_size`` stays right and the width prunes."""
    from tests.zoo.hf_check import build
    model, x, _ = build("llama4_text")
    experts = model.model.layers[0].feed_forward.experts
    small = sc.prune(model, x, 0.3, outputs=["logits"])
    pruned = small.model.layers[0].feed_forward.experts
    assert pruned.hidden_size == pruned.gate_up_proj.shape[1] < experts.hidden_size
    with torch.no_grad():
        assert small(**x).logits.shape == model(**x).logits.shape
