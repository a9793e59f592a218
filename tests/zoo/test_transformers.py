"""Hugging Face transformers (small random configs, offline): heads and MLP neurons removed for real."""
import pytest
import torch
import transformers as T

import secateurs as sc


def bert():
    return T.BertForSequenceClassification(T.BertConfig(
        hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, vocab_size=120))


def gpt2():
    return T.GPT2LMHeadModel(T.GPT2Config(n_embd=64, n_inner=160, n_layer=2, n_head=4, vocab_size=120,
                                          bos_token_id=0, eos_token_id=0))


def llama():
    return T.LlamaForCausalLM(T.LlamaConfig(
        hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=4, vocab_size=120, bos_token_id=0, eos_token_id=0, pad_token_id=0))


MLP = {"bert": "intermediate.dense", "gpt2": "mlp.c_fc", "llama": "mlp.up_proj"}
HEADS = {"bert": 4, "gpt2": 4, "llama": 4}  # llama: 4 key/value heads, each with 2 query heads


def _mlp_keys(model, key):
    return {n: 0.3 for n, _ in model.named_modules() if n.endswith(key)}


@pytest.mark.parametrize("kind,make", [("bert", bert), ("gpt2", gpt2), ("llama", llama)])
def test_heads_and_mlp_pruned(kind, make):
    torch.manual_seed(0)
    model = make().eval()
    x = {"input_ids": torch.randint(0, 120, (2, 9)), "attention_mask": torch.ones(2, 9, dtype=torch.long)}
    heads = sc.plan(model, x, ratio=0.25, granularity="head")
    head_groups = [g for g in heads.groups if g["remove"]]
    assert len(head_groups) == 2 and all(len(g["remove"]) == HEADS[kind] // 4 for g in head_groups)
    fewer_heads = sc.apply(model, heads)
    mlp = sc.plan(fewer_heads, x, ratio=0.0, ratios=_mlp_keys(fewer_heads, MLP[kind]))
    small = sc.apply(fewer_heads, mlp)
    mlp_groups = [g for g in mlp.groups if g["remove"]]
    assert len(mlp_groups) == 2 and all(len(g["remove"]) == 48 for g in mlp_groups)  # 30% of 160
    with torch.no_grad():
        ref, out = model(**x).logits, small(**x).logits
    assert out.shape == ref.shape
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    if kind != "bert":
        gen = small.generate(x["input_ids"][:1], max_new_tokens=5, do_sample=False, pad_token_id=0)
        assert gen.shape == (1, 14)


def test_gpt2_head_masks_match_surgery():
    torch.manual_seed(0)
    model = gpt2().eval()
    x = {"input_ids": torch.randint(0, 120, (1, 6))}
    p = sc.plan(model, x, ratio=0.5, granularity="head")
    with torch.no_grad():
        a = sc.apply(model, p, mode="mask")(**x).logits
        b = sc.apply(model, p)(**x).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
