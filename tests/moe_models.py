"""Tiny mixture-of-experts causal LMs from transformers configs (random weights, offline) for the MoE tests."""
import torch
import transformers as T

COMMON = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=120,
              bos_token_id=0, eos_token_id=0, pad_token_id=0)


def mixtral(**kw) -> T.PreTrainedModel:
    cfg = dict(COMMON, intermediate_size=96, num_local_experts=4, num_experts_per_tok=2)
    return T.MixtralForCausalLM(T.MixtralConfig(**dict(cfg, **kw))).eval()


def qwen2_moe(**kw) -> T.PreTrainedModel:
    cfg = dict(COMMON, intermediate_size=96, moe_intermediate_size=48, shared_expert_intermediate_size=96,
               num_experts=4, num_experts_per_tok=2)
    return T.Qwen2MoeForCausalLM(T.Qwen2MoeConfig(**dict(cfg, **kw))).eval()


def qwen3_moe(**kw) -> T.PreTrainedModel:
    cfg = dict(COMMON, intermediate_size=96, moe_intermediate_size=48, head_dim=16, num_experts=4,
               num_experts_per_tok=2, norm_topk_prob=True)
    return T.Qwen3MoeForCausalLM(T.Qwen3MoeConfig(**dict(cfg, **kw))).eval()


def gpt_oss(**kw) -> T.PreTrainedModel:
    """Experts stored transposed (experts x in x out), with biases and interleaved gate/up columns."""
    cfg = dict(COMMON, intermediate_size=48, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
               layer_types=["full_attention", "full_attention"])
    return T.GptOssForCausalLM(T.GptOssConfig(**dict(cfg, **kw))).eval()


def deepseek_v3(**kw) -> T.PreTrainedModel:
    """Sigmoid router with a score-correction bias and group-limited routing (one group unless ``n_group`` says)."""
    cfg = dict(COMMON, intermediate_size=96, moe_intermediate_size=48, n_routed_experts=4, num_experts_per_tok=2,
               n_group=1, topk_group=1, first_k_dense_replace=0, n_shared_experts=1, kv_lora_rank=16,
               q_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16)
    return T.DeepseekV3ForCausalLM(T.DeepseekV3Config(**dict(cfg, **kw))).eval()


def glm4_moe(**kw) -> T.PreTrainedModel:
    cfg = dict(COMMON, intermediate_size=96, moe_intermediate_size=48, head_dim=16, n_routed_experts=4,
               num_experts_per_tok=2, n_group=1, topk_group=1, first_k_dense_replace=0, n_shared_experts=1)
    return T.Glm4MoeForCausalLM(T.Glm4MoeConfig(**dict(cfg, **kw))).eval()


def phimoe(**kw) -> T.PreTrainedModel:
    """Experts picked by sparsemixer: ``max``, a ``scatter`` masking the first pick, ``max`` again, ``cat``."""
    cfg = dict(COMMON, intermediate_size=96, head_dim=16, num_local_experts=4, num_experts_per_tok=2)
    return T.PhimoeForCausalLM(T.PhimoeConfig(**dict(cfg, **kw))).eval()


FAMILIES = {"mixtral": mixtral, "qwen2_moe": qwen2_moe, "qwen3_moe": qwen3_moe}


def tokens(n: int = 9, seed: int = 0) -> dict:
    return {"input_ids": torch.randint(0, 120, (1, n), generator=torch.Generator().manual_seed(seed))}


def moe_blocks(model) -> list:
    """The sparse MoE blocks (each with a ``gate`` router and fused ``experts``), in layer order."""
    return [layer.mlp for layer in model.model.layers]
