"""Tracing mixture-of-experts layers: routing, expert histograms and grouped_mm (rules/moe.py)."""
import copy

import pytest
import torch

import secateurs as sc
from tests.moe_models import (
    FAMILIES,
    deepseek_v3,
    glm4_moe,
    gpt_oss,
    mixtral,
    phimoe,
    qwen2_moe,
    tokens,
)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_experts_router_and_residual_are_groups(family, one_thread):
    model = FAMILIES[family]()
    g = sc.trace(model, tokens())
    experts = [x for x in g.groups if x.kind == "expert"]
    assert len(experts) == 2 and all(x.size == 4 for x in experts)
    for layer, grp in enumerate(experts):
        pre = f"model.layers.{layer}.mlp."
        assert {(n, d) for n, d, _ in grp.tensors} == {
            (pre + "gate.weight", 0), (pre + "experts.gate_up_proj", 0), (pre + "experts.down_proj", 0)}
        assert {(s["module"], s["attr"]) for s in g.syncs if grp.id in sc.graph.layout.groups_in(s["layouts"][0])} \
            == {(pre + "gate", "num_experts"), (pre + "experts", "num_experts")}
    inner = 96 if family == "mixtral" else 48
    neurons = [x for x in g.groups if x.size == inner and any("experts" in n for n, _, _ in x.tensors)]
    assert len(neurons) == 2 and all(x.multiple == 8 for x in neurons)
    layout = g.layouts["model.layers.0.mlp.experts.gate_up_proj"]
    assert layout[1] == ["cat", [["g", neurons[0].id, inner], ["g", neurons[0].id, inner]]]  # gate and up halves
    residual = next(x for x in g.groups if any(n == "model.embed_tokens.weight" for n, _, _ in x.tensors))
    assert residual.multiple == 8
    assert ("model.layers.1.mlp.experts.down_proj", 1, "out") in residual.tensors
    assert not any("grouped_mm" in u.reason or "topk" in u.reason for u in g.unsupported)


def test_batched_mm_traces_like_grouped_mm(one_thread):
    """batched_mm gathers each token's expert weights (``weights[expert_ids]``) and runs bmm: same groups."""
    grouped = sc.trace(qwen2_moe(), tokens())
    model = qwen2_moe()
    model.set_experts_implementation("batched_mm")
    batched = sc.trace(model, tokens())
    assert [(g.kind, g.size, sorted(g.tensors)) for g in batched.groups] == \
        [(g.kind, g.size, sorted(g.tensors)) for g in grouped.groups]
    assert all(g.multiple == 1 for g in batched.groups)  # bmm needs no alignment
    assert sorted(map(str, batched.unsupported)) == sorted(map(str, grouped.unsupported))


@pytest.mark.parametrize("family", sorted(FAMILIES) + ["gpt_oss"])
def test_eager_experts_trace_and_prune_like_grouped_mm(family, one_thread):
    """The eager loop (one_hot -> nonzero -> ``gate_up_proj[expert_idx]`` -> linear) gives the grouped path's groups;
    expert neurons and whole experts prune to the model the batched path gives (no grouped_mm alignment either)."""
    def make(impl):
        torch.manual_seed(0)
        m = dict(FAMILIES, gpt_oss=gpt_oss)[family]()
        m.set_experts_implementation(impl)
        return m

    grouped, eager = sc.trace(make("grouped_mm"), tokens()), sc.trace(make("eager"), tokens())
    assert [(g.kind, g.size, sorted(g.tensors)) for g in eager.groups] == \
        [(g.kind, g.size, sorted(g.tensors)) for g in grouped.groups]
    assert sorted(map(str, eager.unsupported)) == sorted(map(str, grouped.unsupported))
    for kw in ({"ratio": 0.3}, {"ratio": 0.5, "granularity": "expert"}):
        ref = sc.prune(make("batched_mm"), tokens(), **kw)
        small = sc.prune(make("eager"), tokens(), **kw)
        before, after, want = (m.model.layers[0].mlp.experts for m in (make("eager"), small, ref))
        assert after.gate_up_proj.shape == want.gate_up_proj.shape != before.gate_up_proj.shape
        assert after.num_experts == want.num_experts
        ref.set_experts_implementation("eager")
        with torch.no_grad():
            torch.testing.assert_close(small(**tokens(7, 5)).logits, ref(**tokens(7, 5)).logits)


def test_topk_outside_a_router_keeps_its_dimension(one_thread):
    """top-k over channels that no expert weights follow: those channels are not pruned."""
    class Pick(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)

        def forward(self, x):
            h = self.a(x)
            top, _ = h.topk(3, dim=-1)
            return self.b(h) + top.sum(-1, keepdim=True)

    g = sc.trace(Pick().eval(), torch.randn(2, 8))
    assert not [x for x in g.groups if x.size == 16]
    assert any(u.reason.startswith("top-k routing") for u in g.unsupported)


def test_trace_leaves_model_untouched(one_thread):
    model = mixtral()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attrs = {n: dict(vars(m)) for n, m in model.named_modules()}
    sc.trace(model, tokens())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for n, m in model.named_modules():
        assert {k: type(v) for k, v in vars(m).items()} == {k: type(v) for k, v in attrs[n].items()}


def _never_picked(model, plan):
    """A copy of ``model`` whose routers can never pick the experts ``plan`` removes (score-correction bias -inf)."""
    ref = copy.deepcopy(model)
    for g in plan.groups:
        if g["kind"] == "expert" and g["remove"]:
            gate = ref.get_submodule(g["producers"][0].rsplit(".", 1)[0] + ".gate")
            gate.e_score_correction_bias.data[g["remove"]] = -1e9
    return ref


@pytest.mark.parametrize("make", [deepseek_v3, glm4_moe])
def test_corrected_sigmoid_routers_lose_whole_experts_soundly(make, one_thread):
    """The score-correction bias goes with its experts; ``scores.gather(1, ids)`` follows the renumbered ids."""
    torch.manual_seed(0)
    model = make()
    for layer in model.model.layers:
        layer.mlp.gate.e_score_correction_bias.normal_(0, 0.1)
        layer.mlp.gate.weight.data.normal_(0, 0.5)
    plan = sc.plan(model, tokens(), 0.5, granularity="expert")
    assert [len(g["remove"]) for g in plan.groups if g["kind"] == "expert"] == [2, 2]
    small = sc.apply(model, plan)
    gate = small.model.layers[0].mlp.gate
    assert gate.weight.shape == (2, 64) and gate.e_score_correction_bias.shape == (2,) and gate.num_experts == 2
    with torch.no_grad():
        torch.testing.assert_close(small(**tokens()).logits, _never_picked(model, plan)(**tokens()).logits)


def test_group_limited_routing_keeps_its_experts_and_says_why(one_thread):
    """n_group > 1 views experts as equal groups: no plan keeps them equal, so experts stay, with the reason."""
    g = sc.trace(deepseek_v3(n_group=2, topk_group=1), tokens())
    assert not [x for x in g.groups if x.kind == "expert"]
    assert any(u.reason.startswith("group-limited routing in model.layers.0.mlp.gate (num_group=2)")
               for u in g.unsupported)


def test_sparsemixer_router_loses_whole_experts_soundly(one_thread):
    """PhiMoE picks with max/scatter/max/cat: the ids follow the experts; the pruned model equals the original
    whose router logits are -inf for the removed experts (never picked)."""
    from transformers.models.phimoe.modeling_phimoe import sparsemixer
    torch.manual_seed(0)
    model = phimoe()
    plan = sc.plan(model, tokens(), 0.5, granularity="expert")
    assert [len(g["remove"]) for g in plan.groups if g["kind"] == "expert"] == [2, 2]
    small = sc.apply(model, plan)
    router = small.model.layers[0].mlp.router
    assert router.weight.shape == (2, 64) and router.num_experts == small.model.layers[0].mlp.experts.num_experts == 2
    ref = copy.deepcopy(model)
    for g in plan.groups:
        if g["kind"] == "expert":
            r = ref.get_submodule(g["producers"][0].rsplit(".", 1)[0] + ".router")

            def forward(h, r=r, gone=g["remove"]):
                logits = torch.nn.functional.linear(h, r.weight)
                logits[..., gone] = float("-inf")
                return (logits, *sparsemixer(logits, jitter_eps=r.router_jitter_noise, training=False, top_k=2))
            r.forward = forward
    with torch.no_grad():
        torch.testing.assert_close(small(**tokens()).logits, ref(**tokens()).logits)


def test_nonzero_over_channels_keeps_them(one_thread):
    """Only experts' ids flow out of nonzero(); positions of ordinary channels would be renumbered by pruning."""
    class Picks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)
            self.table = torch.nn.Parameter(torch.randn(16, 4))

        def forward(self, x):
            h = self.a(x)
            idx = (h[0] > 0).nonzero()
            return self.b(h) + self.table[idx[:, 0]].sum(0)

    g = sc.trace(Picks().eval(), torch.randn(1, 8))
    assert not [x for x in g.groups if x.size == 16]
    assert any(u.reason.startswith("positions of nonzero entries") for u in g.unsupported)
