"""Hugging Face transformers (small random configs, offline): heads and MLP neurons removed for real.

The default run covers a representative set of families (decoders with and without grouped-query
attention, encoders, encoder-decoders, vision); `pytest -m hf_full` runs every family transformers
maps to a causal-LM, seq2seq-LM, masked-LM or image-classification head (tests/zoo/hf_check.py).
"""
import importlib.util
import warnings

import pytest
import torch
import transformers as T

import secateurs as sc
from secateurs.measure import count_params
from tests.zoo.hf_check import check, families, ok, removed


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


# -- outputs=["logits"]: hidden states returned next to the logits no longer pin the hidden width ----------

def _seq2seq_inputs():
    g = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(3, 96, (1, 8), generator=g),
            "decoder_input_ids": torch.randint(3, 96, (1, 4), generator=g)}


def t5():
    return T.T5ForConditionalGeneration(T.T5Config(vocab_size=96, d_model=64, d_kv=16, d_ff=128, num_layers=2,
                                                   num_heads=4, decoder_start_token_id=0, pad_token_id=0))


def marian():
    return T.MarianMTModel(T.MarianConfig(vocab_size=96, d_model=64, encoder_layers=2, decoder_layers=2,
                                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                                          decoder_ffn_dim=128, max_position_embeddings=64, pad_token_id=0,
                                          decoder_start_token_id=0))


def bart():  # also reads inputs_embeds[:, :, -1] for its shape
    return T.BartForConditionalGeneration(T.BartConfig(vocab_size=96, d_model=64, encoder_layers=2, decoder_layers=2,
                                                       encoder_attention_heads=4, decoder_attention_heads=4,
                                                       encoder_ffn_dim=128, decoder_ffn_dim=128,
                                                       max_position_embeddings=64))


@pytest.mark.parametrize("make", [t5, marian, bart])
def test_encoder_decoder_prunes_its_hidden_width_with_logits_as_the_only_output(make, one_thread):
    torch.manual_seed(0)
    model, x = make().eval(), _seq2seq_inputs()
    every = sc.plan(model, x, 0.3)  # encoder_last_hidden_state is returned too: the width stays
    p = sc.plan(model, x, 0.3, outputs=["logits"])
    small = sc.apply(model, p)
    n0, n_every, n1 = count_params(model), count_params(sc.apply(model, every)), count_params(small)
    assert 1 - n1 / n0 >= 0.36 and n_every - n1 >= 0.1 * n0, (n0, n_every, n1)
    with torch.no_grad():
        ref, out = model(**x), small(**x)
    assert out.logits.shape == ref.logits.shape
    assert out.encoder_last_hidden_state.shape[-1] < ref.encoder_last_hidden_state.shape[-1]  # documented
    gen = small.generate(x["input_ids"], max_new_tokens=3, do_sample=False)
    assert gen.shape[0] == 1 and 2 <= gen.shape[1] <= 4


def test_clip_prunes_with_logits_per_image_only(one_thread):
    torch.manual_seed(0)
    cfg = T.CLIPConfig(text_config=dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, max_position_embeddings=16),
                       vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, image_size=32, patch_size=8),
                       projection_dim=16)
    model = T.CLIPModel(cfg).eval()
    x = {"input_ids": torch.randint(3, 96, (2, 7)), "pixel_values": torch.randn(1, 3, 32, 32)}
    p = sc.plan(model, x, 0.3, outputs=["logits_per_image"])
    small = sc.apply(model, p)
    assert 1 - count_params(small) / count_params(model) >= 0.25
    with torch.no_grad():
        assert small(**x).logits_per_image.shape == (1, 2)
    with pytest.raises(ValueError, match=r"'logits'.*logits_per_image"):
        sc.trace(model, x, outputs=["logits"])


def test_wav2vec2_prunes_through_its_weight_normalised_positional_conv(one_thread):
    torch.manual_seed(0)
    cfg = T.Wav2Vec2Config(vocab_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=128, conv_dim=(32, 32), conv_stride=(5, 2), conv_kernel=(10, 3),
                           num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    model, x = T.Wav2Vec2ForCTC(cfg).eval(), torch.randn(1, 800)
    g = sc.trace(model, x, outputs=["logits"])
    assert not g.unsupported, [str(u) for u in g.unsupported]
    small = sc.apply(model, sc.plan(model, x, 0.3, graph=g))
    assert 1 - count_params(small) / count_params(model) >= 0.4
    with torch.no_grad():
        assert small(x).logits.shape == model(x).logits.shape
    assert small.wav2vec2.masked_spec_embed.shape[0] == small.wav2vec2.encoder.pos_conv_embed.conv.weight.shape[0]


# -- the zoo: one tiny model per family ------------------------------------------------------------------

SUBSET = ["gpt2", "llama", "qwen2", "bert", "deberta-v2", "t5", "bart", "marian", "vit", "beit",
          "gemma3", "clip"]  # gemma3: text and image, sub-configs; clip: a vision head on a two-tower config


def _assert_row(row):
    assert "build" not in row, row["build"]
    assert row["untouched"], "the input model was modified"
    for g in ("channel", "head"):
        assert "error" not in row[g], (g, row[g]["error"])
    assert removed(row["channel"]) >= 0.2, row["channel"]
    assert ok(row)


@pytest.mark.parametrize("family", SUBSET)
def test_family(family, one_thread):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _assert_row(check(family, 0.3))


# Families whose transformers modules need a package that cannot be installed here (docs/hf_zoo.md says why).
NEEDS = {"dinat": "natten"}


@pytest.mark.hf_full
@pytest.mark.parametrize("family", sorted(families()))
def test_every_family(family, one_thread):
    if family in NEEDS and importlib.util.find_spec(NEEDS[family]) is None:
        pytest.skip(f"{family} needs the {NEEDS[family]} package, which does not install beside this torch")
    _assert_row(check(family, 0.3))
