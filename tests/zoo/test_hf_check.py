"""The Hugging Face zoo harness builds valid tiny models and inputs (tests/zoo/hf_check.py), families that
need settings beyond SMALL included."""
import math

import pytest

import secateurs as sc
from secateurs.measure import count_params
from tests.zoo.hf_check import (
    FED_BACK,
    _build,
    _drafted_generate,
    build,
    check,
    ok,
    tiny_config,
)


def test_reformer_axial_positions_fit_the_eight_token_input():
    """Training-mode tracing checks the axial position shape against the sequence length (8 tokens)."""
    cfg = tiny_config("reformer")
    assert math.prod(cfg.axial_pos_shape) == 8 and sum(cfg.axial_pos_embds_dim) == cfg.hidden_size == 64


def test_xlnet_is_traced_with_the_query_stream_generate_runs():
    """``generate`` predicts through XLNet's query stream (``mask_emb``): the example inputs run it too."""
    model, x, _ = build("xlnet")
    assert x["perm_mask"].shape == (1, 8, 8) and x["target_mapping"].shape == (1, 1, 8)
    assert model(**x).logits.shape[1] == 1  # one position predicted, from the query stream


@pytest.mark.parametrize("family", ["deepseek_v3", "axk1", "longcat_flash", "lfm2_moe", "qwen4_exp_text",
                                    "inkling_text", "inkling2_text"])
def test_moe_families_build_small_and_meet_the_targets(family, one_thread):
    """MLA rope dims follow qk_rope_head_dim; lfm2_moe gets layer types and an MoE layer; longcat 1 layer pair;
    qwen4_exp_text its indexer; inkling small sliding-window heads (inkling2: lm_head the small vocabulary)."""
    model, _, _ = _build(family, "small")  # the first level, not a fallback to default widths
    assert count_params(model) < 300_000
    row = check(family)
    assert ok(row), row


def test_qwen4_exp_text_builds_with_its_indexer_set(one_thread):
    model, _, _ = _build("qwen4_exp_text", "small")
    assert model.config.indexer_budget == 8 and count_params(model) < 300_000


AUDIO_TOWERS = {"granite_speech": "model.encoder.layers.0.conv.up_conv.weight",
                "qwen3_asr": "model.audio_tower.layers.0.fc1.weight",
                "omniasr": "model.audio_tower.subsampling.conv_layers.0.conv.weight",
                "voxtral_realtime": "model.audio_tower.layers.0.mlp.up_proj.weight"}


@pytest.mark.parametrize("family", sorted(AUDIO_TOWERS))
def test_audio_towers_are_fed_a_clip_they_take_and_traced(family, one_thread):
    """Each family gets the clip its tower takes (frames x features, a chunk of mel frames with its mask, a
    raw waveform, audio summed onto the text token by token) with its audio tokens, so the tower prunes."""
    model, x, _ = _build(family, "small")
    assert set(x) - {"input_ids", "attention_mask"}, "run on its text alone"
    g = sc.trace(model, x, outputs=["logits"])
    assert any(t == AUDIO_TOWERS[family] for grp in g.groups for t, _, _ in grp.tensors)
def test_sizes_named_after_a_sub_config_follow_its_small_value():
    """nemo_speechlm's diarization head reads ``audio_hidden_size``, which its validator wants equal to its
    sibling ``audio_config.hidden_size``: the harness shrinks both."""
    diarization = tiny_config("nemo_speechlm").audio_config.diarization_config
    assert diarization.head_config.audio_hidden_size == diarization.audio_config.hidden_size == 64


@pytest.mark.hf_full
@pytest.mark.parametrize("family, tower", [("phi4_multimodal", "model.embed_tokens_extend.audio_embed.encoder"),
                                           ("phi4_multimodal", "model.embed_tokens_extend.image_embed.img_processor"),
                                           ("nemo_speechlm", "model.audio_tower.asr_encoder"),
                                           ("vibevoice_asr", "model.semantic_tokenizer_encoder")])
def test_media_towers_are_fed_and_pruned(family, tower, one_thread):
    """The family's own media inputs reach its towers: channel pruning shrinks them too."""
    model, x, _ = build(family)
    small = sc.apply(model, sc.plan(model, x, 0.3, outputs=["logits"]))
    assert count_params(small.get_submodule(tower)) < count_params(model.get_submodule(tower))
def test_blt_builds_small_with_its_hash_tables_and_cache_depth():
    """BLT's byte n-gram hash tables (6 x 500002 rows by default) shrink; its forward builds caches from a depth
    the top config lacks."""
    model, _, _ = _build("blt", "small")
    assert count_params(model) < 1_000_000
    assert model.config.num_hidden_layers == model.config.decoder_config.num_hidden_layers


@pytest.mark.hf_full
def test_gemma3n_feeds_its_vision_and_audio_towers():
    """The test-size timm MobileNetV5 and the small conformer both run on the example inputs."""
    model, x, _ = _build("gemma3n", "small")
    assert count_params(model) < 2_000_000 and {"pixel_values", "input_features"} <= set(x)
    ran = []
    for tower in (model.model.vision_tower, model.model.audio_tower):
        tower.register_forward_hook(lambda mod, *_: ran.append(mod))
    model(**x)
    assert len(ran) == 2


def test_gemma4_drafter_keeps_the_hidden_state_it_feeds_back():
    """A drafter's last hidden state is read back at the main model's width: pruned with logits alone, the
    main model's assisted generate fails; kept as an output, it runs."""
    model, x, _ = _build("gemma4_assistant", "small")
    width = model.post_projection.out_features
    alone = sc.apply(model, sc.plan(model, x, 0.3, outputs=["logits"]))
    assert alone.post_projection.out_features < width
    with pytest.raises(RuntimeError):
        _drafted_generate(alone)
    kept = sc.apply(model, sc.plan(model, x, 0.3, outputs=["logits", *FED_BACK[type(model).__name__]]))
    assert kept.post_projection.out_features == width and count_params(kept) < count_params(model)
    assert _drafted_generate(kept).shape[-1] > x["attention_mask"].shape[1]
