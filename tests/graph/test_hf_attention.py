"""Hugging Face attention variants the tracer must follow (tiny configs, random weights, batch 1).

Each family: the trace finds the head groups the architecture has, both granularities prune at ratio
0.3 (forward, output shape, masks equal surgery, ``generate`` for causal LMs) and the input model is
left untouched.
"""
import pickle

import pytest
import torch
import transformers as T
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
from secateurs.graph.sizes import Prod, Size
from secateurs.graph.space import Space

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=2, bos_token_id=0,
             eos_token_id=0, pad_token_id=0)


def _ids(n: int = 7, pad: int = 0, decoder: bool = False) -> dict:
    x = {"input_ids": torch.randint(1, 120, (1, n)), "attention_mask": torch.ones(1, n, dtype=torch.long)}
    x["attention_mask"][0, :pad] = 0
    if decoder:
        x["decoder_input_ids"] = torch.randint(1, 120, (1, 5))
    return x


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prunes(model: nn.Module, x: dict, granularity: str, ratio: float = 0.3, generate: bool = True, **kw):
    """Plan and apply; check shapes, generate, that ``model`` is untouched and, for heads (exact groups:
    no normalisation spans them), that masks and surgery agree."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = sc.plan(model, x, ratio=ratio, granularity=granularity, **kw)
    small, masked = sc.apply(model, plan), sc.apply(model, plan, mode="mask")
    with torch.no_grad():
        ref, out, out_masked = model(**x).logits, small(**x).logits, masked(**x).logits
    assert out.shape == ref.shape
    if granularity == "head":
        torch.testing.assert_close(out, out_masked, atol=1e-5, rtol=1e-4)
    state = model.state_dict()
    assert state.keys() == before.keys() and all(torch.equal(before[k], state[k]) for k in state)
    if generate:
        gen = small.generate(x["input_ids"], attention_mask=x["attention_mask"], max_new_tokens=3,
                             do_sample=False, pad_token_id=0)
        assert gen.shape[0] == 1 and gen.shape[1] >= 3
    return plan, small


def head_groups(graph) -> list:
    return [g for g in graph.groups if g.kind == "head"]


# -- tracer crashes: keyword arguments, a weight's transpose ------------------------------------------
def test_bloom_baddbmm_with_keyword_arguments():
    """BLOOM calls ``alibi.baddbmm(batch1=q, batch2=k)``; its heads are pinned by the ALiBi slopes, made
    in code for ``num_heads`` heads (an ``arange``: removing heads would change the slopes of the kept ones),
    and say so, while head_dim and the MLP prune."""
    model = T.BloomForCausalLM(T.BloomConfig(vocab_size=120, hidden_size=64, n_layer=2, n_head=4)).eval()
    x = _ids()
    graph = sc.trace(model, x)
    inner = [g for g in graph.groups if "transformer.h.0.self_attention.query_key_value" in g.producers]
    assert len(inner) == 1 and inner[0].size == 16  # head_dim: q.k contracted by the keyword baddbmm
    plan, small = prunes(model, x, "channel")
    assert 0 < len(plan.removals()[inner[0].id]) < 16
    assert small.transformer.h[0].self_attention.head_dim == 16 - len(plan.removals()[inner[0].id])
    assert {s["attr"] for s in plan.syncs} == {"head_dim", "normalized_shape"}  # not hidden_size by its value
    heads, _ = prunes(model, x, "head")
    assert not heads.removals() and any("created in code" in s["reason"] and "ALiBi slopes" in s["reason"]
                                        for s in heads.skipped)


class _TransposedLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T  # Falcon's FalconLinear without a bias


def test_matmul_by_a_weights_transpose_is_a_layer():
    model = nn.Sequential(_TransposedLinear(8, 16, bias=False), nn.ReLU(), _TransposedLinear(16, 8, bias=False))
    graph = sc.trace(model, torch.randn(1, 3, 8))
    assert [(g.size, sorted(g.tensors)) for g in graph.groups] == [
        (16, [("0.weight", 0, "out"), ("2.weight", 1, "in")])]


def test_falcon_mlp_prunes():
    model = T.FalconForCausalLM(T.FalconConfig(vocab_size=120, hidden_size=64, num_hidden_layers=2,
                                               num_attention_heads=4, bos_token_id=0, eos_token_id=0)).eval()
    x = _ids()
    graph = sc.trace(model, x)
    mlp = [g for g in graph.groups if any(p.endswith("mlp.dense_h_to_4h") for p in g.producers)]
    assert len(mlp) == 2 and all(g.size == 256 for g in mlp)
    plan, small = prunes(model, x, "channel")
    assert all(len(plan.removals()[g.id]) == 76 for g in mlp)  # 30% of 256
    assert _params(small) < 0.7 * _params(model)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_falcon_multi_query_heads_prune(attn):
    """Falcon's fused ``query_key_value`` is viewed as ``num_heads + 2`` heads, queries ``[..., :-2, :]``, key
    and value ``[..., [-2], :]`` / ``[[-1]]``: the positions counted from the end fix the shared key/value
    head only, so query heads prune, and the pruned model is the dense one without them."""
    torch.manual_seed(0)
    model = T.FalconForCausalLM(T.FalconConfig(vocab_size=120, hidden_size=64, num_hidden_layers=2,
                                               num_attention_heads=4, bos_token_id=0, eos_token_id=0,
                                               attn_implementation=attn)).eval()
    x = _ids()
    graph = sc.trace(model, x)
    assert [g.size for g in head_groups(graph)] == [4, 4]
    plan, small = prunes(model, x, "head", ratio=0.5)
    assert {s["attr"] for s in plan.syncs} == {"num_heads"}
    removed = {}
    for i, (old, new) in enumerate(zip(model.transformer.h, small.transformer.h)):
        a = new.self_attention
        assert a.num_heads == 2 and a.query_key_value.out_features == (2 + 2) * 16 and a.head_dim == 16
        kept = _kept_blocks(old.self_attention.query_key_value.weight[:64], a.query_key_value.weight[:32], 16)
        assert len(kept) == 2
        removed[f"transformer.h.{i}.self_attention.dense"] = sorted(set(range(4)) - set(kept))
    dense = _without_heads(model, removed, 16)
    with torch.no_grad():
        torch.testing.assert_close(small(**x).logits, dense(**x).logits, atol=1e-5, rtol=1e-4)


# -- grouped-query attention: SDPA, eager, padded ------------------------------------------------------
def _llama(attn: str, **kw) -> nn.Module:
    cfg = dict(SMALL, num_attention_heads=8, num_key_value_heads=4, attn_implementation=attn)
    cfg.update(kw)
    return T.LlamaForCausalLM(T.LlamaConfig(**cfg)).eval()


def _gqa_plan(model: nn.Module, x: dict):
    """A plan that removes a key/value head, and a query head per key/value head, in every layer."""
    graph = sc.trace(model, x)
    ratios = {g.id: 0.25 if g.size == 4 else 0.5 for g in head_groups(graph)}
    return graph, sc.plan(model, x, ratio=0.0, granularity="head", group_ratios=ratios, graph=graph)


@pytest.mark.parametrize("attn,pad", [("sdpa", 0), ("eager", 0), ("sdpa", 2)])
def test_gqa_heads_found_under_every_attention_path(attn, pad):
    """``enable_gqa`` SDPA, eager ``repeat_kv`` (a reshape to ``num_key_value_heads * n_rep``) and SDPA
    with a padding mask (``repeat_kv`` again) give the same groups: 4 key/value heads and 2 query heads
    per key/value head, per layer."""
    torch.manual_seed(0)
    model = _llama(attn)
    x = _ids(pad=pad)
    graph, plan = _gqa_plan(model, x)
    assert sorted((g.size, len(g.tensors)) for g in head_groups(graph)) == [(2, 2)] * 2 + [(4, 4)] * 2
    assert not graph.unsupported or all("slice end" in u.reason for u in graph.unsupported)  # rotary halves
    assert {s["attr"] for s in plan.syncs} == {"num_key_value_groups"}


def test_gqa_plans_and_pruned_models_identical_across_attention_paths():
    torch.manual_seed(0)
    base = _llama("sdpa")
    plans, outs = [], []
    for attn, pad in (("sdpa", 0), ("eager", 0), ("sdpa", 2)):
        model = _llama(attn)
        model.load_state_dict(base.state_dict())
        plan = _gqa_plan(model, _ids(pad=pad))[1]
        plans.append((plan.groups, plan.layouts, plan.syncs))
        small = sc.apply(model, plan)
        assert all(m.num_key_value_groups == 1 for n, m in small.named_modules() if n.endswith("self_attn"))
        for run_as in ("sdpa", "eager"):  # the pruned model runs on either path, with or without padding
            small.config._attn_implementation = run_as
            for p in (0, 2):
                torch.manual_seed(1)
                with torch.no_grad():
                    outs.append(small(**_ids(pad=p)).logits)
    assert plans[0] == plans[1] == plans[2]
    for i in range(0, len(outs), 2):
        torch.testing.assert_close(outs[i], outs[i % 4], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(outs[i + 1], outs[i % 4 + 1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_llama_gqa_both_granularities(attn):
    model = _llama(attn)
    x = _ids(pad=2)
    plan, small = prunes(model, x, "head", ratio=0.5)
    assert len(plan.removals()) == 2  # one budget for each layer's 8 query heads: 4 kv heads -> 2
    assert small.model.layers[0].self_attn.k_proj.out_features == 16
    prunes(model, x, "channel")


def test_gemma2_gqa_heads_prune():
    """Gemma2 always attends eagerly (soft-capping): its grouped-query heads used to vanish."""
    model = T.Gemma2ForCausalLM(T.Gemma2Config(**SMALL, num_attention_heads=8, num_key_value_heads=4,
                                               head_dim=8)).eval()
    x = _ids()
    assert len(head_groups(sc.trace(model, x))) == 4
    plan, small = prunes(model, x, "head", ratio=0.5)
    assert len(plan.removals()) == 2
    assert _params(small) < _params(model)
    prunes(model, x, "channel")


# -- products of tracked sizes -------------------------------------------------------------------------
def test_product_of_tracked_sizes_keeps_its_factors():
    kv, rep = Size(4, space=Space(4)), Size(2, attr=("attn", "num_key_value_groups"))
    p = kv * rep
    assert isinstance(p, Prod) and p == 8 and p.factors == (kv, rep)
    assert (p * Size(3, attr=("attn", "head_dim"))).factors[2] == 3
    assert type(3 * kv) is int and type(kv * 3) is int  # a number written in code is not followed
    assert type(pickle.loads(pickle.dumps(p))) is int


class _RepeatKV(nn.Module):
    """Grouped-query attention written as transformers' eager path writes it (expand, then reshape)."""

    def __init__(self, kv: int, rep: int, head_dim: int):
        super().__init__()
        self.num_key_value_groups, self.head_dim = rep, head_dim
        self.q = nn.Linear(12, kv * rep * head_dim)
        self.k, self.v = nn.Linear(12, kv * head_dim), nn.Linear(12, kv * head_dim)
        self.o = nn.Linear(kv * rep * head_dim, 12)

    def repeat(self, t: torch.Tensor) -> torch.Tensor:
        b, heads, n, d = t.shape
        t = t[:, :, None].expand(b, heads, self.num_key_value_groups, n, d)
        return t.reshape(b, heads * self.num_key_value_groups, n, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (f(x).view(b, n, -1, self.head_dim).transpose(1, 2) for f in (self.q, self.k, self.v))
        att = (q @ self.repeat(k).transpose(-1, -2)).softmax(-1) @ self.repeat(v)
        return self.o(att.transpose(1, 2).reshape(b, n, -1))


@settings(max_examples=12, deadline=None)
@given(kv=st.integers(1, 3), rep=st.integers(1, 3), head_dim=st.integers(2, 4))
def test_repeat_kv_heads_follow_for_any_counts(kv, rep, head_dim):
    model = nn.Sequential(_RepeatKV(kv, rep, head_dim), nn.ReLU(), nn.Linear(12, 3)).eval()
    x = torch.randn(1, 5, 12)
    graph = sc.trace(model, x)
    assert sorted(g.size for g in head_groups(graph)) == sorted(n for n in (kv, rep) if n > 1)
    plan = sc.plan(model, x, ratio=0.5, granularity="head", graph=graph)
    small = sc.apply(model, plan)
    with torch.no_grad():
        torch.testing.assert_close(small(x), sc.apply(model, plan, mode="mask")(x), atol=1e-5, rtol=1e-4)
    assert small[0].num_key_value_groups * small[0].k.out_features == small[0].q.out_features


# -- relative attention and shared position biases ----------------------------------------------------
def test_deberta_v2_relative_attention_heads():
    """DeBERTa-v2's c2p/p2c terms ``gather`` along relative positions: heads couple q, k, v and the
    position projections."""
    model = T.DebertaV2ForSequenceClassification(T.DebertaV2Config(
        **dict(SMALL, num_attention_heads=4), max_position_embeddings=64, relative_attention=True,
        pos_att_type=["p2c", "c2p"])).eval()
    x = {"input_ids": torch.randint(1, 120, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long)}
    x["attention_mask"][1, 5:] = 0
    heads = head_groups(sc.trace(model, x))
    assert len(heads) == 2 and all(g.size == 4 for g in heads)
    assert {p.rpartition(".")[2] for p in heads[0].producers} == {
        "query_proj", "key_proj", "value_proj", "pos_key_proj", "pos_query_proj"}
    plan, small = prunes(model, x, "head", ratio=0.5, generate=False)
    assert len(plan.removals()) == 2
    assert small.deberta.encoder.layer[0].attention.self.num_attention_heads == 2
    prunes(model, x, "channel", generate=False)


def test_t5_shared_position_bias_ties_heads_across_blocks():
    """Block 0 makes the position bias (learned for self-attention, zeros of ``n_heads`` for cross-attention)
    and later blocks add it: one head group per attention kind, cross-attention included."""
    model = T.T5ForConditionalGeneration(T.T5Config(vocab_size=120, d_model=64, d_kv=16, d_ff=128, num_layers=2,
                                                    num_heads=4, decoder_start_token_id=0, pad_token_id=0,
                                                    eos_token_id=1)).eval()
    x = _ids(pad=2, decoder=True)
    heads = head_groups(sc.trace(model, x))
    kinds = sorted(sorted({t.split(".")[0] + "." + t.split(".")[5] for t, _, _ in g.tensors if ".layer." in t})
                   for g in heads)
    assert kinds == [["decoder.EncDecAttention"], ["decoder.SelfAttention"], ["encoder.SelfAttention"]]
    plan, small = prunes(model, x, "head", ratio=0.5)
    assert len(plan.removals()) == 3
    assert small.decoder.block[1].layer[1].EncDecAttention.q.out_features == 32
    plan, small = prunes(model, x, "channel")
    kv = small.encoder.block[0].layer[0].SelfAttention.key_value_proj_dim  # d_kv follows its channels
    assert kv < 16 and small.encoder.block[0].layer[0].SelfAttention.q.out_features == 4 * kv


# -- values that collide -------------------------------------------------------------------------------
def test_stablelm_rotary_ndims_equal_to_kv_heads_is_not_resized():
    """``rotary_ndims`` (4) equals ``num_key_value_heads`` (4): pruning heads must not touch it."""
    model = T.StableLmForCausalLM(T.StableLmConfig(**SMALL, num_attention_heads=8, num_key_value_heads=4,
                                                   partial_rotary_factor=0.5)).eval()
    attn = model.model.layers[0].self_attn
    assert attn.rotary_ndims == attn.num_key_value_heads == 4
    x = _ids()
    plan, small = prunes(model, x, "head", ratio=0.5)
    assert len(plan.removals()) == 2
    pruned = small.model.layers[0].self_attn
    assert pruned.rotary_ndims == 4 and pruned.k_proj.out_features == 16
    prunes(model, x, "channel")


def _gpt2() -> nn.Module:
    return T.GPT2LMHeadModel(T.GPT2Config(n_embd=64, n_inner=128, n_layer=2, n_head=8, vocab_size=120,
                                          bos_token_id=0, eos_token_id=0)).eval()


@pytest.mark.parametrize("make", [_gpt2, lambda: _llama("eager")], ids=["gpt2", "llama-eager"])
def test_num_heads_equal_to_head_dim(make):
    """8 heads of 8 channels: a size 8 in a view is no longer matched to an attribute by its value, so
    heads prune and ``head_dim`` stays."""
    model = make()
    attn = next(m for n, m in model.named_modules() if n.endswith(("attn", "self_attn")) and hasattr(m, "head_dim"))
    assert attn.head_dim == 8 and getattr(attn, "num_heads", 8) == 8
    x = _ids(pad=2)
    plan, small = prunes(model, x, "head", ratio=0.5)
    assert plan.removals()
    pruned = [m for n, m in small.named_modules() if n.endswith(("attn", "self_attn")) and hasattr(m, "head_dim")]
    assert all(m.head_dim == 8 for m in pruned)
    assert all(s["attr"] != "head_dim" for s in plan.syncs)



# -- fused projections sliced at sizes read from the config ---------------------------------------------
def _phi3(attn: str) -> nn.Module:
    torch.manual_seed(0)
    return T.Phi3ForCausalLM(T.Phi3Config(**SMALL, num_attention_heads=4, num_key_value_heads=2,
                                          attn_implementation=attn)).eval()


def _kept_blocks(old: torch.Tensor, new: torch.Tensor, n: int) -> list[int]:
    """Which of ``old``'s blocks of ``n`` rows ``new`` still holds (a pruned projection keeps rows as they were)."""
    return [i for i in range(old.shape[0] // n) if any(
        torch.equal(old[i * n:(i + 1) * n], new[j * n:(j + 1) * n]) for j in range(new.shape[0] // n))]


def _without_heads(model: nn.Module, heads: dict[str, list[int]], head_dim: int) -> nn.Module:
    """A copy of ``model`` whose output projections (name -> heads) ignore the given heads' inputs."""
    dense = T.AutoModelForCausalLM.from_config(model.config).eval()
    dense.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, hs in heads.items():
            w = dense.get_submodule(name).weight
            for h in hs:
                w[:, h * head_dim:(h + 1) * head_dim] = 0
    return dense


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_phi3_fused_qkv_sliced_at_config_sizes_prunes_heads(attn):
    """Phi-3 slices its fused ``qkv_proj`` at ``self.config.num_attention_heads * head_dim`` (a config shared
    by every layer) and ``+ num_key_value_heads * head_dim``: the bounds follow the config's and the
    module's sizes, so heads prune, each pruned layer on its own copy of the config, and the pruned model
    is the dense one without the removed heads' contributions."""
    model = _phi3(attn)
    x = _ids(pad=2 if attn == "sdpa" else 0)
    graph = sc.trace(model, x)
    assert sorted(g.size for g in head_groups(graph)) == [2] * 4  # per layer: 2 kv heads, 2 queries per kv head
    plan, small = prunes(model, x, "head", ratio=0.5)
    assert {(s["module"], s["attr"]) for s in plan.syncs} >= {
        ("model.layers.0.self_attn", "config.num_attention_heads"), ("model.layers.0.self_attn", "num_key_value_heads")}
    removed = {}
    for i, (old, new) in enumerate(zip(model.model.layers, small.model.layers)):
        a = new.self_attn
        assert a.config is not small.config and a.config.num_attention_heads < 4
        assert a.qkv_proj.out_features == (a.config.num_attention_heads + 2 * a.num_key_value_heads) * 16
        kept = _kept_blocks(old.self_attn.qkv_proj.weight[:64],
                            a.qkv_proj.weight[:a.config.num_attention_heads * 16], 16)
        assert len(kept) == a.config.num_attention_heads
        removed[f"model.layers.{i}.self_attn.o_proj"] = sorted(set(range(4)) - set(kept))
    assert small.config.num_attention_heads == 4 == model.config.num_attention_heads
    assert all(layer.self_attn.config is model.config for layer in model.model.layers)  # the input's layers share it
    dense = _without_heads(model, removed, 16)
    with torch.no_grad():
        torch.testing.assert_close(small(**x).logits, dense(**x).logits, atol=1e-5, rtol=1e-4)


def test_config_syncs_are_validated():
    """A plan may set a config size only among the size attributes (``config.<attr>``), as on a module."""
    model, x = _phi3("sdpa"), _ids()
    plan = sc.plan(model, x, ratio=0.5, granularity="head")
    sync = next(s for s in plan.syncs if s["attr"] == "config.num_attention_heads")
    sync["attr"] = "config.rope_theta"
    with pytest.raises(ValueError, match=r"sets 'config.rope_theta'.*config.<attr>"):
        sc.apply(model, plan)


# -- multi-head latent attention (DeepSeek-V2/V3, MiniCPM3, GLM-4-MoE-Lite, Youtu) ------------------------
@pytest.mark.parametrize("version,q_lora_rank,attn", [(3, None, "eager"), (3, 32, "sdpa"), (2, 32, "eager")])
def test_deepseek_mla_heads_prune(version, q_lora_rank, attn):
    """MLA expands its latent key/value through ``kv_b_proj`` into heads and writes each head's keys into a
    new tensor with ``copy_`` (V3: the part without and the shared part with rotary embedding; V2 rotates
    through ``view_as_complex``): the heads of ``q_b_proj`` (or ``q_proj``), ``kv_b_proj`` and ``o_proj``
    form one group, the latents stay, and the pruned model is the dense one without the removed heads."""
    torch.manual_seed(0)
    config, causal_lm = (T.DeepseekV3Config, T.DeepseekV3ForCausalLM) if version == 3 else (
        T.DeepseekV2Config, T.DeepseekV2ForCausalLM)
    cfg = config(**SMALL, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=q_lora_rank,
                 kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
                 first_k_dense_replace=2, attn_implementation=attn)
    model = causal_lm(cfg).eval()
    x = _ids(pad=2)
    graph = sc.trace(model, x)
    q = "q_proj" if q_lora_rank is None else "q_b_proj"
    assert [(g.size, sorted(g.producers)) for g in head_groups(graph)][0] == (
        4, [f"model.layers.0.self_attn.{p}" for p in ("kv_b_proj", q)])
    plan, small = prunes(model, x, "head", ratio=0.5)
    removed = {}
    for i, (old, new) in enumerate(zip(model.model.layers, small.model.layers)):
        a, ref = new.self_attn, old.self_attn
        assert a.kv_b_proj.out_features == 2 * 16 and a.o_proj.in_features == 2 * 8
        assert a.kv_b_proj.in_features == 16 and a.kv_a_proj_with_mqa.out_features == 16 + 8  # latents kept
        kept = _kept_blocks(getattr(ref, q).weight, getattr(a, q).weight, 16)
        assert kept == _kept_blocks(ref.kv_b_proj.weight, a.kv_b_proj.weight, 16) and len(kept) == 2
        removed[f"model.layers.{i}.self_attn.o_proj"] = sorted(set(range(4)) - set(kept))
    dense = _without_heads(model, removed, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(**x).logits, dense(**x).logits, atol=1e-5, rtol=1e-4)
