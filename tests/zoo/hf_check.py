"""One Hugging Face zoo check, shared by tests/zoo/test_transformers.py and benchmarks/hf_zoo.py.

Every family comes from transformers' own auto mappings (causal LM, seq2seq LM, masked LM, image
classification), built from its config class with small sizes and random weights, and pruned at
batch 1 with ``outputs=["logits"]``: channels, then heads, each checked for shapes, ``generate``
(causal and seq2seq) and an untouched input model.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import transformers  # noqa: E402
from torch import nn  # noqa: E402
from transformers.models.auto import modeling_auto as MA  # noqa: E402
from transformers.models.auto.configuration_auto import CONFIG_MAPPING  # noqa: E402

import secateurs as sc  # noqa: E402
from secateurs.measure import count_params  # noqa: E402
from tests.zoo import tiny_timm  # noqa: E402

transformers.logging.set_verbosity_error()

KINDS = ("decoder", "moe", "encoder", "encoder-decoder", "vision")
VOCAB = 96
EXPERTS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")

# Size settings applied to every config that has the attribute (directly or through its attribute_map).
SMALL: dict[str, Any] = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 128, "head_dim": 16, "vocab_size": VOCAB, "max_position_embeddings": 128,
    "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4, "decoder_attention_heads": 4,
    "encoder_ffn_dim": 128, "decoder_ffn_dim": 128, "d_ff": 128, "d_kv": 16, "n_inner": 128, "ffn_dim": 128,
    "num_decoder_layers": 2, "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "moe_num_experts": 4,
    "num_experts_per_tok": 2, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 64,
    "n_shared_experts": 1, "first_k_dense_replace": 0, "kv_lora_rank": 16, "q_lora_rank": 32,
    "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16, "n_group": 1, "topk_group": 1,
    "embedding_size": 64, "projection_dim": 32, "rotary_dim": 8, "partial_rotary_factor": 0.5,
    "sliding_window": 64, "attention_window": 8, "max_window_layers": 2, "num_labels": 5,
    "image_size": 32, "patch_size": 4, "window_size": 4, "num_channels": 3, "embed_dim": 32, "hidden_dim": 64,
    "width_coefficient": 1.0, "depth_coefficient": 1.0, "entity_vocab_size": VOCAB, "vocab_size_per_layer_input": VOCAB,
    "hidden_size_per_layer_input": 16, "d_latents": 64, "num_latents": 16,
}
# Settings that configs derive from others or use in family-specific ways: left at their defaults on a retry.
DERIVED = {"head_dim", "d_kv", "rotary_dim", "partial_rotary_factor", "qk_rope_head_dim", "qk_nope_head_dim",
           "v_head_dim", "kv_lora_rank", "q_lora_rank", "embedding_size", "projection_dim", "hidden_dim", "window_size",
           "patch_size", "image_size", "embed_dim", "sliding_window", "attention_window", "num_key_value_heads",
           "n_group", "topk_group", "first_k_dense_replace", "max_window_layers", "shared_expert_intermediate_size",
           "n_shared_experts", "moe_intermediate_size"}
OPTIONAL = {"sliding_window", "attention_window", "q_lora_rank", "kv_lora_rank", "rotary_dim", "embedding_size",
            "projection_dim", "image_size", "patch_size", "window_size", "embed_dim", "hidden_dim",
            "num_labels"}  # None: off
DEPTH = {"num_hidden_layers", "encoder_layers", "decoder_layers", "num_decoder_layers", "vocab_size", "num_labels",
         "num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "num_experts_per_tok",
         "width_coefficient", "depth_coefficient"}
LEVELS = ("small", "sizes", "depth")  # what a retry keeps: all of SMALL, all but DERIVED, DEPTH only
MAX_PARAMS = 40_000_000  # a family whose default widths are larger than this at depth 2 is not built
LIST_SMALL = {"depths": 1, "hidden_sizes": (32, 64, 160, 256, 256), "embed_dims": (32, 64, 160, 256),
              "num_heads": (2, 4, 8, 16),  # per-stage settings of hierarchical vision models
              "axial_pos_shape": (2, 4), "axial_pos_embds_dim": (32, 32)}  # reformer: 8 positions, hidden 64
_INKLING = {"swa_num_attention_heads": 4, "swa_num_key_value_heads": 2, "swa_head_dim": 16}  # its sliding-window layers
# Per-family settings the generic sizes get wrong (consistent values for strict validators and derived sizes).
FAMILY_SETTINGS: dict[str, dict[str, Any]] = {
    "esm": {"pad_token_id": 1, "mask_token_id": 2},  # no default: the position ids need one
    "gemma3": {"mm_tokens_per_image": 16},  # 4x4 tokens pooled from the 8x8 patches of a 32x32 image
    "shieldgemma2": {"mm_tokens_per_image": 16, "yes_token_index": 4, "no_token_index": 5},
    # hybrid linear-attention models: one attention layer in the two, or their cache has no sequence length
    "bamba": {"attn_layer_indices": [1]},
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1},
    "lfm3": {"layer_types": ["conv", "full_attention"]},
    "granitemoehybrid": {"layer_types": ["linear_attention", "full_attention"]},
    "recurrent_gemma": {"block_types": ["recurrent", "attention"]},
    # sizes the generic settings get wrong
    **{f: {"audio_config.max_source_positions": 16}  # 32 mel frames
       for f in ("audioflamingo3", "glmasr", "qwen2_audio", "musicflamingo", "moss_transcribe_diarize")},
    "voxtral": {"audio_config.max_source_positions": 16, "audio_token_id": VOCAB - 2},  # no audio token by default
    "convnext": {"hidden_sizes": [32, 64], "depths": [1, 1]},  # one width per stage (2 stages)
    "convnextv2": {"hidden_sizes": [32, 64], "depths": [1, 1]},
    "efficientnet": {"hidden_dim": 1280},  # the top conv's width, round_filters(1280) at width 1.0
    "hiera": {"image_size": [32, 32]},  # position embeddings are sized by the image
    "xlstm": {"embedding_dim": 64, "qk_dim_factor": 1.0},
    "cohere_compass_text": {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 10000.0}}},
    "gemma3n_text": {"num_kv_shared_layers": 0},
    "gemma3n": {"text_config.num_kv_shared_layers": 0, "text_config.intermediate_size": [128, 128],
                # the timm vision tower's fusion output (2048 wide, fixed) pooled to 2 x 2 tokens per image
                "vision_config.hidden_size": tiny_timm.MOBILENETV5_FEATURES, "vision_soft_tokens_per_image": 4,
                "vision_config.model_args": {"msfa_output_resolution": 2},
                "audio_config.conf_num_hidden_layers": 2, "audio_soft_tokens_per_image": 4,
                # ids: 64 text (with per-layer inputs), then 16 vision and 16 audio ids, as in the full vocabulary
                "text_config.vocab_size_per_layer_input": 64, "vision_config.vocab_offset": 64,
                "vision_config.vocab_size": 16, "audio_config.vocab_offset": 80, "audio_config.vocab_size": 16,
                "image_token_id": 65, "audio_token_id": 81},
    "musicgen": {"decoder.num_codebooks": 1, "decoder.decoder_start_token_id": 2},  # ids: (batch x codebooks, tokens)
    "musicgen_melody": {"decoder.num_codebooks": 1, "decoder.decoder_start_token_id": 2},
    # strict validators: values consistent with the small sizes
    "gpt_neo": {"attention_types": [[["global", "local"], 1]]},
    "mamba2": {"num_heads": 8, "n_groups": 1},  # 8 heads x head_dim 16 = hidden 64 x expand 2
    "zaya": {"num_experts_per_tok": 1},
    "zamba": {"num_hidden_layers": 3,  # its shared block is tied across two hybrid layers
              "layers_block_type": ["linear_attention", "hybrid", "hybrid"]},
    "dots3_note_text": {"num_key_value_heads": 4, "layer_types": ["full_attention"] * 2},  # no 64-head sliding layers
    "dots3_note": {"text_config.num_key_value_heads": 4, "text_config.layer_types": ["full_attention"] * 2,
                   "vision_config.pyramid_num_routed": [0, 4], "vision_config.adapter_in_dim": 64,
                   "vision_config.adapter_out_dim": 64, "audio_config.adapter_out_dim": 64,
                   "audio_config.adapter_input_size": 64},
    # fields left None by default that the model reads anyway; MoE layers the 2 layers would lack
    "inkling_text": _INKLING,  # sliding-window layers have their own head settings; lm_head its own vocabulary
    "inkling2_text": dict(_INKLING, unpadded_vocab_size=VOCAB),
    "inkling2_loop_text": dict(_INKLING, unpadded_vocab_size=VOCAB),
    "lfm2_moe": {"layer_types": ["conv", "full_attention"], "num_dense_layers": 1},
    "qwen4_exp_text": {"indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": 16, "indexer_budget": 8,
                       "indexer_compress_ratio": 4, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
                       "linear_num_key_heads": 2, "linear_num_value_heads": 4, "hc_lowrank": 16},
    "longcat_flash": {"num_layers": 1, "zero_expert_num": 2},  # each layer holds two attention sublayers
    # audio towers: widths and windows that fit the small text model (projected width = text hidden 64)
    **{f: {"window_size": 10, "downsample_rate": 5,  # the projector's windows: 2 queries per 10 frames
           "encoder_config.context_size": 16, "encoder_config.max_pos_emb": 16, "encoder_config.input_dim": 32,
           "projector_config.encoder_hidden_size": 64} for f in ("granite_speech", "granite_speech_plus")},
    "qwen3_asr": {"audio_config.output_dim": 64, "audio_config.downsample_hidden_size": 32,
                  "audio_config.num_mel_bins": 32},
    "omniasr": {"audio_config.conv_dim": [64] * 7},
    # towers with their own width names: the conformer's convolutions add to its hidden width
    "phi4_multimodal": {"audio_config.num_blocks": 2, "audio_config.ext_pw_out_channel": 64,
                        "audio_config.depthwise_separable_out_channel": 64, "audio_config.nemo_conv_channels": 32,
                        "audio_config.bias_max_distance": 16, "vision_config.crop_size": 32},
    # its audio encoders project values to all heads (keys to the key-value heads): no grouped heads
    "nemo_speechlm": {"word_timestamp_config.blank_token_id": VOCAB - 1, "word_timestamp_config.num_key_value_heads": 4,
                      "audio_config.asr_config.num_key_value_heads": 4,
                      "audio_config.diarization_config.audio_config.num_key_value_heads": 4},
    # byte n-gram hash tables (6 x 500002 rows by default); the local models' view of the global width
    # speculative-decoding drafters: every layer reads the main model's keys and values (shared layers 0: the
    # config sets them to its depth), no per-layer inputs, MoE or double-wide MLP (its validator's rules)
    "gemma4_assistant": {"backbone_hidden_size": 64, "text_config.hidden_size_per_layer_input": 0,
                         "text_config.vocab_size_per_layer_input": 0, "text_config.enable_moe_block": False,
                         "text_config.use_double_wide_mlp": False, "text_config.num_kv_shared_layers": 0,
                         "text_config.global_head_dim": 32},  # full-attention layers' head width (512 by default)
    "gemma4_unified_assistant": {"backbone_hidden_size": 64, "text_config.num_kv_shared_layers": 0,
                                 "text_config.global_head_dim": 32},
    "blt": {"encoder_hash_byte_group_vocab": 128, "encoder_config.hidden_size_global": 64,
            "decoder_config.hidden_size_global": 64},
}
# VibeVoice ASR's acoustic and semantic tokenizers: 2 downsampling stages from 16 filters (channels double per
# stage: 7 stages from 32 filters end 2048 wide), 8 samples per audio token.
_VIBEVOICE_TOKENIZER = {"downsampling_ratios": [2, 4], "depths": [1, 1, 1], "num_filters": 16}
FAMILY_SETTINGS["vibevoice_asr"] = {f"{t}_tokenizer_encoder_config.{k}": v for t in ("acoustic", "semantic")
                                    for k, v in _VIBEVOICE_TOKENIZER.items()}
# The multimodal Qwen4-Exp's text sub-config needs its text model's settings.
FAMILY_SETTINGS["qwen4_exp"] = {f"text_config.{k}": v for k, v in FAMILY_SETTINGS["qwen4_exp_text"].items()}
# Per-family example inputs, from the tiny config (vision models that take patches rather than images).
FAMILY_INPUTS: dict[str, Callable[[Any], dict[str, torch.Tensor]]] = {
    "siglip2": lambda cfg: _patches(cfg.vision_config),
    "phi4_multimodal": lambda cfg: _phi4_media(cfg),
    "nemo_speechlm": lambda cfg: _stacked_audio(cfg, cfg.audio_config.asr_config.num_mel_bins),
    "vibevoice_asr": lambda cfg: _waveform(cfg),
    "gemma4_assistant": lambda cfg: _drafter_inputs(cfg),
    "gemma4_unified_assistant": lambda cfg: _drafter_inputs(cfg),
}
# Per-family audio clips, from the tiny config, for towers the Whisper-style mel clip does not fit (other
# layouts, raw waveforms, fixed chunk lengths); ``_with_audio`` adds the audio tokens they need.
FAMILY_AUDIO: dict[str, Callable[[Any], dict[str, torch.Tensor]]] = {
    **{f: lambda cfg: {"input_features": torch.randn(1, 40, cfg.encoder_config.input_dim)}  # (batch, frames, dim)
       for f in ("granite_speech", "granite_speech_plus")},
    "qwen3_asr": lambda cfg: _mel_clip(cfg.audio_config, 2 * cfg.audio_config.n_window, "input_features_mask"),
    "omniasr": lambda cfg: {"input_values": torch.randn(1, 1, _wave_samples(cfg.audio_config, 8))},
    "voxtral_realtime": lambda cfg: _mel_clip(cfg.audio_config, 8 * cfg.audio_length_per_tok),  # 8 text tokens
}
# Per-family inputs generate gets beside the ids and mask: the families fed an audio clip generate from it too
# (the pruned tower runs there as well); VoxtralRealtime streams one slice of audio per token, so its clip
# covers the prompt and the new tokens.
FAMILY_GENERATE: dict[str, Callable[[Any, dict[str, torch.Tensor], int], dict[str, torch.Tensor]]] = {
    **{f: lambda cfg, x, new: {k: v for k, v in x.items() if k not in ("input_ids", "attention_mask")}
       for f in FAMILY_AUDIO},
    "voxtral_realtime": lambda cfg, x, new: _mel_clip(cfg.audio_config,
                                                      (x["input_ids"].shape[1] + new) * cfg.audio_length_per_tok),
}
# Per-family media added to the generic inputs (towers the generic image and audio inputs do not feed).
FAMILY_MEDIA: dict[str, Callable[[Any, dict[str, torch.Tensor]], dict[str, torch.Tensor]]] = {
    "gemma3n": lambda cfg, x: _gemma3n_audio(cfg, x),
}
# Outputs that generation feeds back into the model, kept beside the logits: a Gemma 4 drafter's next step
# reads its last hidden state (at the main model's width) next to the main model's embedding of its token.
FED_BACK = {"Gemma4AssistantForCausalLM": ("last_hidden_state",),
            "Gemma4UnifiedAssistantForCausalLM": ("last_hidden_state",)}
# Per-family repairs of a built config (defaults that transformers itself leaves inconsistent).
FAMILY_FIXES: dict[str, Callable[[Any], None]] = {
    "dbrx": lambda cfg: _dbrx_attention(cfg.attn_config, cfg.rope_parameters["rope_theta"]),
    "blt": lambda cfg: _blt_cache_depth(cfg),
    "gemma3n": lambda cfg: setattr(cfg.vision_config, "architecture", tiny_timm.register()),
}
# Media placeholder ids out of the tiny vocabulary: its last ids (images, then audio).
MEDIA_IDS = {"image_token_id": VOCAB - 1, "image_token_index": VOCAB - 1, "audio_token_id": VOCAB - 2,
             "audio_token_index": VOCAB - 2}
SPECIAL_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "sep_token_id",
               "cls_token_id", "mask_token_id", "unk_token_id")


def _mapping(name: str) -> dict[str, str]:
    return dict(getattr(MA, name, {}))


@functools.lru_cache(maxsize=1)
def families() -> dict[str, tuple[str, str]]:
    """model_type -> (kind, model class name) for every family transformers maps to a task head."""
    causal = _mapping("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES")
    seq2seq = _mapping("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES")
    masked = _mapping("MODEL_FOR_MASKED_LM_MAPPING_NAMES")
    vision = _mapping("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES")
    out: dict[str, tuple[str, str]] = {}
    for t, cls in vision.items():
        out[t] = ("vision", cls)
    for t, cls in masked.items():
        if t not in seq2seq:
            out[t] = ("encoder", cls)
    for t, cls in causal.items():
        if t not in seq2seq and t not in masked:
            out[t] = ("moe" if _is_moe(t) else "decoder", cls)
    for t, cls in seq2seq.items():
        out[t] = ("encoder-decoder", cls)
    return {t: out[t] for t in sorted(out)}


def _is_moe(model_type: str) -> bool:
    try:
        cfg = CONFIG_MAPPING[model_type]()
    except Exception:  # noqa: BLE001 - a config that cannot be built with defaults is sorted out later
        return "moe" in model_type
    return any((getattr(cfg, k, None) or 0) > 1 for k in EXPERTS) or "moe" in model_type


def _default_config(model_type: str):
    """The family's default config; one whose defaults fail its own validator (gemma4_assistant) gets the
    family settings of its sub-configs at construction."""
    cls = CONFIG_MAPPING[model_type]
    try:
        return cls()
    except Exception:  # noqa: BLE001 - retried with the settings below; their error is the one reported
        subs = getattr(cls, "sub_configs", None) or {}
        settings = FAMILY_SETTINGS.get(model_type, {})
        return cls(**{name: _own(settings, f"{name}.") for name in subs if _own(settings, f"{name}.")})


def _get(cfg: Any, key: str) -> Any:
    try:
        return getattr(cfg, key, None)
    except Exception:  # noqa: BLE001 - per-layer attributes of some configs refuse a global read
        return None


def tiny_config(model_type: str, level: str = "small"):
    """The family's config with small sizes: every ``SMALL`` attribute it has (fewer on a retry ``level``,
    see ``LEVELS``), per-stage lists shrunk; a composite config's sub-configs (text, vision, audio, encoder,
    decoder...) each shrunk the same way."""
    base = _default_config(model_type)
    settings = FAMILY_SETTINGS.get(model_type, {})
    kw = {**_small_kwargs(base, level), **_shrunk_sub_configs(base, level, settings), **_own(settings, "")}
    cfg = type(base)(**kw)
    if model_type in FAMILY_FIXES:
        FAMILY_FIXES[model_type](cfg)
    return cfg


def _sub_configs(cfg: Any) -> list[Any]:
    """The sub-configs a composite config holds (text, vision, audio ...), those that are set."""
    subs = (_get(cfg, name) for name in getattr(cfg, "sub_configs", None) or {})
    return [sub for sub in subs if sub is not None and hasattr(sub, "to_dict")]


def _own(settings: dict[str, Any], path: str) -> dict[str, Any]:
    """The family settings of the (sub-)config at ``path`` ("" for the top; "text_config." for a sub-config)."""
    return {k[len(path):]: v for k, v in settings.items() if k.startswith(path) and "." not in k[len(path):]}


def _shrunk_sub_configs(cfg: Any, level: str, settings: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Each sub-config the config holds, rebuilt from its own class with the small sizes and the family
    settings named ``sub_config.key`` (recursively); the attributes its parent set on it beyond the
    class's own keep their values."""
    out: dict[str, Any] = {}
    for name in getattr(cfg, "sub_configs", None) or {}:
        sub = _get(cfg, name)
        if sub is None or not hasattr(sub, "to_dict"):
            continue
        here = f"{path}{name}."
        new = type(sub)(**{**_small_kwargs(sub, level), **_shrunk_sub_configs(sub, level, settings, here),
                           **_own(settings, here)})
        for key, value in vars(sub).items():
            if key not in vars(new):
                # per-layer settings for the default depth raise ValueError: the small config goes without
                with contextlib.suppress(ValueError):
                    setattr(new, key, value)
        out[name] = new
    return {**out, **_linked_sizes(cfg, out)}


def _linked_sizes(cfg: Any, subs: dict[str, Any]) -> dict[str, Any]:
    """Keeps sizes named after a sub-config (``audio_hidden_size`` for ``audio_config.hidden_size``) in step
    with it: on its sibling sub-configs (set in place) and on the config itself (returned), those still at
    the sub-config's default value take its small value, so validators that check the link pass."""
    out: dict[str, Any] = {}
    for name, new in subs.items():
        if not name.endswith("_config"):
            continue
        old = _get(cfg, name)
        for key, value in new.to_dict().items():
            was = _get(old, key)
            if not isinstance(value, int) or isinstance(value, bool) or value == was:
                continue
            linked = f"{name[:-len('_config')]}_{key}"
            for other in subs.values():
                if other is not new and linked in other.to_dict() and _get(other, linked) == was:
                    setattr(other, linked, value)
            if linked in cfg.to_dict() and _get(cfg, linked) == was:
                out[linked] = value
    return out


def _small_kwargs(base: Any, level: str) -> dict[str, Any]:
    """The small settings for one config object (its sub-configs aside)."""
    have = set(base.to_dict())
    amap = getattr(base, "attribute_map", {}) or {}
    kw: dict[str, Any] = {}
    for key, value in SMALL.items():
        if (level == "sizes" and key in DERIVED) or (level == "depth" and key not in DEPTH):
            continue
        real = amap.get(key, key)
        cur = _get(base, real)
        if real not in have or isinstance(cur, (bool, list, tuple, dict)):
            continue
        if cur is None and key in OPTIONAL:
            continue
        if isinstance(cur, float) and not isinstance(value, float):
            continue
        kw[real] = value
    for key, rule in LIST_SMALL.items():
        if level == "depth" and key != "depths":
            continue
        cur = _get(base, key)
        if isinstance(cur, (list, tuple)) and cur and all(isinstance(v, int) for v in cur):
            n = len(cur)
            kw[key] = [rule] * n if isinstance(rule, int) else list(rule[:n]) + [rule[-1]] * max(0, n - len(rule))
    if "embed_dim" in kw and "num_heads" in kw and isinstance(kw["num_heads"], list):
        kw["embed_dim"] = 32
    for key, small_id in MEDIA_IDS.items():
        v = _get(base, key)
        if isinstance(v, int) and v >= VOCAB:
            kw[amap.get(key, key)] = small_id
    for key in SPECIAL_IDS:
        v = _get(base, key)
        if isinstance(v, int) and v >= VOCAB:
            kw[key] = min(v, 2)
        elif isinstance(v, list):
            kw[key] = [min(x, 2) for x in v if isinstance(x, int)]
    if "qk_rope_head_dim" in kw and "head_dim" in kw:  # MLA: rotary embeddings are sized by head_dim
        kw["head_dim"] = kw["qk_rope_head_dim"]
    layers = kw.get("num_hidden_layers")
    types = _get(base, "layer_types")
    real = amap.get("layer_types", "layer_types")  # Zamba's layers_block_type
    settable = not isinstance(getattr(type(base), real, None), property)
    if layers and real in have and settable and isinstance(types, list) and len(types) > layers:
        # keep one layer of each type, in their first order, when depth allows it
        kinds = list(dict.fromkeys(types))
        kw[real] = (kinds + types)[:layers] if len(kinds) <= layers else types[:layers]
    return kw


def build(model_type: str) -> tuple[nn.Module, dict[str, torch.Tensor], str]:
    """The tiny model (random init, eval), its batch-1 example inputs, and its kind.

    Tries the sizes of ``LEVELS`` in turn: some families derive sizes from others in their own ways.
    """
    warnings.filterwarnings("ignore")
    first: Exception | None = None
    for level in LEVELS:
        try:
            return _build(model_type, level)
        except Exception as exc:  # noqa: BLE001 - the next level may build; the first error is reported
            first = first or exc
    raise first


def _build(model_type: str, level: str) -> tuple[nn.Module, dict[str, torch.Tensor], str]:
    kind, cls_name = families()[model_type]
    cfg = tiny_config(model_type, level)
    torch.manual_seed(0)
    cls = getattr(transformers, cls_name if isinstance(cls_name, str) else cls_name[0])
    want = getattr(cls, "config_class", None)
    if isinstance(want, type) and not isinstance(cfg, want):  # a text-only head on a multimodal config
        cfg = next((sub for sub in _sub_configs(cfg) if isinstance(sub, want)), cfg)
    with torch.device("meta"):
        n = count_params(cls(cfg))
    if n > MAX_PARAMS:
        raise ValueError(f"{n / 1e6:.0f}M params at the sizes of level {level!r}")
    model = cls(cfg).eval()
    takes = inspect.signature(model.forward).parameters
    if kind == "vision" and "pixel_values" not in takes and "input_ids" in takes:
        kind = "decoder-vision"
    prompted = kind == "vision" and "input_ids" in takes and _get(cfg, "vision_config") is not None
    if model_type in FAMILY_INPUTS:
        x = FAMILY_INPUTS[model_type](cfg)
    elif kind == "vision" and not prompted:
        side = getattr(cfg, "image_size", 32)
        side = side if isinstance(side, int) else 32
        x = {"pixel_values": torch.randn(1, getattr(cfg, "num_channels", 3) or 3, side, side)}
    elif kind == "decoder-vision":  # ImageGPT classifies pixel clusters given as tokens
        kind = "vision"
        x = {"input_ids": torch.randint(0, cfg.vocab_size - 1, (1, 16))}
    else:
        g = torch.Generator().manual_seed(0)
        x = {"input_ids": torch.randint(3, VOCAB, (1, 8), generator=g),
             "attention_mask": torch.ones(1, 8, dtype=torch.long)}
        if kind == "encoder-decoder" and "decoder_input_ids" in takes:
            x["decoder_input_ids"] = torch.randint(3, VOCAB, (1, 4), generator=g)
        if "lang_ids" in takes:  # X-MOD's language adapters: the first language
            x["lang_ids"] = torch.zeros(1, dtype=torch.long)
        if "pixel_values" in takes:
            x = _with_image(model, cfg, x)
        if "input_features" in takes or model_type in FAMILY_AUDIO:
            x = _with_audio(model, cfg, x, takes)
        if model_type in FAMILY_MEDIA:
            x = FAMILY_MEDIA[model_type](cfg, x)
        if "target_mapping" in takes and "perm_mask" in takes:  # XLNet: generate predicts through the query stream
            x["perm_mask"] = torch.zeros(1, 8, 8)
            x["perm_mask"][:, :, -1] = 1.0
            x["target_mapping"] = torch.zeros(1, 1, 8)
            x["target_mapping"][:, 0, -1] = 1.0
    with torch.no_grad():
        model(**x)
    return model, x, kind


def _with_image(model: nn.Module, cfg: Any, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Text inputs with one image and as many image tokens as the vision tower gives features, so that the
    vision tower is traced and pruned too; the text alone when the model has no image token or no
    ``get_image_features``."""
    vision, token = _get(cfg, "vision_config"), _get(cfg, "image_token_id")
    features = getattr(model, "get_image_features", None) or getattr(getattr(model, "model", None),
                                                                   "get_image_features", None)
    if vision is None:
        return x
    side = _get(vision, "image_size")
    side = side if isinstance(side, int) else 32
    pixels = torch.randn(1, _get(vision, "num_channels") or 3, side, side)
    if not isinstance(token, int) or features is None:  # no image tokens: GIT puts the image before the text
        try:
            with torch.no_grad():
                model(**x, pixel_values=pixels)
        except Exception:  # noqa: BLE001 - a model that needs more than pixels is run on its text
            return x
        return {**x, "pixel_values": pixels}
    try:
        with torch.no_grad():
            feats = features(pixel_values=pixels)
    except ValueError:  # Idefics-style towers take (batch, images, channels, height, width)
        pixels = pixels[None]
        with torch.no_grad():
            feats = features(pixel_values=pixels)
    feats = getattr(feats, "pooler_output", feats)
    feats = torch.cat([f.reshape(-1, f.shape[-1]) for f in feats]) if isinstance(feats, (list, tuple)) else feats
    n = feats.numel() // feats.shape[-1]
    return {**_with_placeholders(x["input_ids"], (token, n)), "pixel_values": pixels}


def _with_audio(model: nn.Module, cfg: Any, x: dict[str, torch.Tensor], takes: Any) -> dict[str, torch.Tensor]:
    """Text inputs with one clip of mel features (``2 * max_source_positions`` frames, a Whisper-style
    encoder's length) and as many audio tokens as the audio tower gives features; the text alone when the
    model has no audio token or wants other inputs (``FAMILY_AUDIO`` names the clip of families that take another)."""
    if cfg.model_type in FAMILY_AUDIO:
        return _with_clip(model, cfg, x, FAMILY_AUDIO[cfg.model_type](cfg))
    audio = _get(cfg, "audio_config")
    positions = _get(audio, "max_source_positions") if audio is not None else None
    if _audio_token(cfg) is None or not isinstance(positions, int):
        return x
    mask = next((k for k in ("input_features_mask", "feature_attention_mask") if k in takes), None)
    clip = _mel_clip(audio, 2 * positions, mask)
    try:
        out = _with_clip(model, cfg, x, clip)
        with torch.no_grad():
            model(**out)
    except Exception:  # noqa: BLE001 - an audio tower this generic clip does not fit: the text alone
        return x
    return out


def _audio_features(model: nn.Module, clip: dict[str, torch.Tensor]) -> int:
    """How many features the audio tower gives for ``clip``: the rows of the base model's
    ``get_audio_features`` (its other arguments left None), else, where it is missing or needs the
    placeholders themselves, the length of the audio encoder's output (given the clip's inputs it names)."""
    features = getattr(getattr(model, "model", None), "get_audio_features", None) or getattr(
        model, "get_audio_features", None)
    if features is not None:
        wants = inspect.signature(features).parameters
        rest = {k: None for k, p in wants.items() if p.default is p.empty and p.kind == p.POSITIONAL_OR_KEYWORD
                and k not in clip}
        try:
            with torch.no_grad():
                feats = features(**clip, **rest)
            feats = feats if isinstance(feats, torch.Tensor) else feats.pooler_output
            return feats.numel() // feats.shape[-1]
        except Exception:  # noqa: BLE001 - it needs the placeholders (MusicFlamingo's timestamps): the encoder's
            pass
    encoder = model.get_encoder(modality="audio")
    names = inspect.signature(encoder.forward).parameters
    with torch.no_grad():
        hidden = encoder(**{k: v for k, v in clip.items() if k in names}).last_hidden_state
    return hidden.shape[-2]


def _mel_clip(audio: Any, frames: int, mask: str | None = None) -> dict[str, torch.Tensor]:
    """One clip of ``frames`` mel frames (batch, mel bins, frames), with an all-ones frame mask named ``mask``."""
    clip = {"input_features": torch.randn(1, audio.num_mel_bins, frames)}
    if mask is not None:
        clip[mask] = torch.ones(1, frames, dtype=torch.long)
    return clip


def _wave_samples(audio: Any, frames: int) -> int:
    """The waveform length a wav2vec2-style conv feature encoder (``conv_kernel``, ``conv_stride``) turns into
    ``frames`` frames."""
    n = frames
    for k, s in reversed(list(zip(audio.conv_kernel, audio.conv_stride))):
        n = (n - 1) * s + k
    return n


def _audio_token(cfg: Any) -> int | None:
    """The config's audio placeholder token id, if it has one."""
    return next((v for v in (_get(cfg, k) for k in ("audio_token_id", "audio_token_index")) if isinstance(v, int)),
                None)


def _with_clip(model: nn.Module, cfg: Any, x: dict[str, torch.Tensor],
               clip: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Text inputs with the audio ``clip``: as many audio tokens as the audio tower gives features, or,
    for a model without an audio token (its audio embeddings are added to the text's, one per token), a text
    of that many tokens. Errors propagate: the family asked for this clip."""
    token = _audio_token(cfg)
    n = _audio_features(model, clip)
    if token is None:
        ids = torch.randint(3, VOCAB, (1, n), generator=torch.Generator().manual_seed(0))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), **clip}
    return {**_with_placeholders(x["input_ids"], (token, n)), **clip}


def _gemma3n_audio(cfg: Any, x: dict[str, torch.Tensor], frames: int = 64) -> dict[str, torch.Tensor]:
    """One clip of ``frames`` mel frames and ``audio_soft_tokens_per_image`` audio tokens (the model pads the
    encoder's output, a sixteenth of the frames, to that many) after the first text token."""
    token, n = cfg.audio_token_id, cfg.audio_soft_tokens_per_image
    return {**x, **_with_placeholders(x["input_ids"], (token, n)),
            "input_features": torch.randn(1, frames, cfg.audio_config.input_feat_size),
            "input_features_mask": torch.ones(1, frames, dtype=torch.bool)}


def _main_model(drafter_config: Any) -> nn.Module:
    """The main model a Gemma 4 drafter drafts for: its text config at the backbone's width, computing its own
    keys and values (random init, seeded: the same model each call)."""
    text = copy.deepcopy(drafter_config.get_text_config())
    text.hidden_size, text.num_kv_shared_layers = drafter_config.backbone_hidden_size, 0
    torch.manual_seed(1)
    return transformers.AutoModelForCausalLM.from_config(text).eval()


def _drafter_inputs(cfg: Any, tokens: int = 8) -> dict[str, Any]:
    """A drafting step's inputs, as speculative decoding feeds them after the main model's prefill of
    ``tokens`` tokens: the last token's main embedding beside the main model's last hidden state, the
    main model's shared keys and values, and the last position."""
    main = _main_model(cfg)
    ids = torch.randint(3, VOCAB, (1, tokens), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = main(input_ids=ids, output_hidden_states=True, return_shared_kv_states=True)
    embeds = torch.cat([main.get_input_embeddings()(ids[:, -1:]), out.hidden_states[-1][:, -1:]], dim=-1)
    return {"inputs_embeds": embeds, "attention_mask": torch.ones(1, tokens, dtype=torch.long),
            "position_ids": torch.tensor([[tokens - 1]]),
            "shared_kv_states": {k: (v[0], v[1]) for k, v in out.shared_kv_states.items()}}


def _drafted_generate(drafter: nn.Module, new: int = 8) -> torch.Tensor:
    """``generate`` of ``new`` tokens by the drafter's main model with ``drafter`` as its assistant, 3 tokens
    drafted per step (a released drafter's generation config sets how many; a config-built one has None), so
    each draft feeds the drafter's last hidden state back into it; the drafter must have run."""
    main, calls, own = _main_model(drafter.config), [], drafter.generation_config
    hook = drafter.register_forward_hook(lambda *_: calls.append(1))
    drafter.generation_config = copy.deepcopy(own)
    drafter.generation_config.num_assistant_tokens = 3
    ids = torch.randint(3, VOCAB, (1, 8), generator=torch.Generator().manual_seed(0))
    try:
        gen = main.generate(ids, attention_mask=torch.ones_like(ids), assistant_model=drafter, max_new_tokens=new,
                            do_sample=False, pad_token_id=0)
    finally:
        hook.remove()
        drafter.generation_config = own
    assert calls, "the drafter was not run by the main model's generate"
    return gen


def _patches(vision: Any, side: int = 8) -> dict[str, torch.Tensor]:
    """A ``side`` x ``side`` grid of flattened patches with its mask and shape (SigLIP2's NaFlex inputs)."""
    dim = vision.num_channels * vision.patch_size ** 2
    return {"pixel_values": torch.randn(1, side * side, dim),
            "pixel_attention_mask": torch.ones(1, side * side, dtype=torch.long),
            "spatial_shapes": torch.tensor([[side, side]])}


def _prompt(*runs: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Eight text tokens with runs of ``(placeholder id, count)`` after the first, and their attention mask."""
    return _with_placeholders(torch.randint(3, VOCAB - 2, (1, 8), generator=torch.Generator().manual_seed(0)), *runs)


def _with_placeholders(ids: torch.Tensor, *runs: tuple[int, int]) -> dict[str, torch.Tensor]:
    """``ids`` with runs of ``(placeholder id, count)`` after its first token (those ids cleared from the
    text itself), and its attention mask."""
    for token, _ in runs:
        ids = ids.masked_fill(ids == token, 3)
    ids = torch.cat([ids[:, :1], *(torch.full((1, n), token) for token, n in runs), ids[:, 1:]], dim=1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _phi4_media(cfg: Any, frames: int = 64) -> dict[str, torch.Tensor]:
    """Text with one image (a global crop and one sub-crop, each ``crop_size`` square) and one audio clip of
    ``frames`` feature frames, with the placeholder tokens Phi-4-multimodal's embedders fill: per crop
    ``base x (base + 1)`` (2x2-pooled patches, one separator column) plus one, and a token per
    ``time_reduction`` frames."""
    vision, audio = cfg.vision_config, cfg.audio_config
    side, patches = vision.crop_size, vision.crop_size // vision.patch_size
    base = (patches + patches % 2) // 2
    n_image, n_audio = 2 * base * (base + 1) + 1, -(-frames // audio.time_reduction)
    return {**_prompt((vision.image_token_id, n_image), (audio.audio_token_id, n_audio)),
            "image_pixel_values": torch.randn(1, 2, vision.num_channels, side, side),
            "image_sizes": torch.tensor([[side, side]]),
            "image_attention_mask": torch.ones(1, 2, patches, patches, dtype=torch.long),
            "audio_input_features": torch.randn(1, frames, audio.input_size),
            "audio_embed_sizes": torch.tensor([n_audio])}


def _stacked_audio(cfg: Any, mels: int, tokens: int = 8) -> dict[str, torch.Tensor]:
    """Text with one clip of mel features for an audio tower that stacks ``subsampling_factor`` frames into
    each audio token (no ``max_source_positions`` to size a clip by): ``tokens`` audio tokens, a full mask."""
    frames = tokens * cfg.audio_config.subsampling_factor
    return {**_prompt((cfg.audio_token_id, tokens)), "input_features": torch.randn(1, frames, mels),
            "input_features_mask": torch.ones(1, frames, dtype=torch.long)}


def _waveform(cfg: Any, tokens: int = 8) -> dict[str, Any]:
    """Text with one mono waveform of ``tokens`` audio tokens (``hop_length`` samples each) for VibeVoice's
    tokenizers, the acoustic latents taken without their sampling noise (a deterministic forward)."""
    samples = tokens * cfg.acoustic_tokenizer_encoder_config.hop_length
    return {**_prompt((cfg.audio_token_id, tokens)), "input_values": torch.randn(1, 1, samples), "sample": False}


def _dbrx_attention(attn: Any, rope_theta: float) -> None:
    """DBRX's attention reads ``rope_theta`` from its sub-config (not set there) and clamps with ``clip_qkv``
    unconditionally (None by default)."""
    attn.rope_theta = rope_theta
    attn.clip_qkv = attn.clip_qkv or 8.0


def _blt_cache_depth(cfg: Any) -> None:
    """BLT's forward builds its caches from the top config, which has no ``num_hidden_layers``: the deeper
    of the local encoder and decoder (the models that use them)."""
    cfg.num_hidden_layers = max(cfg.encoder_config.num_hidden_layers, cfg.decoder_config.num_hidden_layers)


def logits_key(model: nn.Module, x: dict) -> str:
    with torch.no_grad():
        out = model(**x)
    keys = [k for k in out if isinstance(out[k], torch.Tensor)]
    return "logits" if "logits" in keys else keys[0]


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise TimeoutError after ``seconds`` (main thread, POSIX): one slow family does not stop the zoo."""
    def stop(*_):
        raise TimeoutError(f"took more than {seconds} s")
    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _fingerprint(model: nn.Module) -> list[tuple]:
    return [(k, v.data_ptr(), v._version, tuple(v.shape)) for k, v in model.state_dict(keep_vars=True).items()]


def _one(model: nn.Module, x: dict, kind: str, key: str, granularity: str, ratio: float) -> dict:
    kw = dict(granularity=granularity, outputs=[key, *FED_BACK.get(type(model).__name__, ())])
    if granularity == "head":
        kw["rounding"] = "up"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = sc.plan(model, x, ratio, **kw)
        small = sc.apply(model, plan)
    with torch.no_grad():
        ref, out = model(**x)[key], small(**x)[key]
    assert out.shape == ref.shape, f"{key} shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{key} not finite"
    if "shared_kv_states" in x:  # a speculative-decoding drafter: its main model generates with it
        gen = _drafted_generate(small)
        assert gen.shape[0] == 1 and 8 < gen.shape[-1] <= 8 + 8, f"generate gave {tuple(gen.shape)}"
    elif kind != "vision" and kind != "encoder" and hasattr(small, "generate"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extra = {}
            seq2seq = bool(getattr(small.config, "is_encoder_decoder", False))  # not speech-to-text decoders
            if seq2seq and small.generation_config.decoder_start_token_id is None \
                    and small.generation_config.bos_token_id is None:
                extra["decoder_start_token_id"] = 0
            if small.config.model_type in FAMILY_GENERATE:
                extra.update(FAMILY_GENERATE[small.config.model_type](small.config, x, 3))
            gen = small.generate(x["input_ids"], attention_mask=x["attention_mask"], max_new_tokens=3,
                                 do_sample=False, pad_token_id=0, num_return_sequences=1, **extra)
        longest = x["input_ids"].shape[1] + 3 if not seq2seq else 1 + 3  # shorter when it stops at an end token
        # the last dim: MusicGen returns (batch, codebooks, tokens)
        assert gen.shape[0] == 1 and 1 < gen.shape[-1] <= longest, f"generate gave {tuple(gen.shape)}"
    groups = [g for g in plan.groups if g["kind"] == granularity]
    return dict(params=(count_params(model), count_params(small)),
                groups=len(groups), pruned=sum(bool(g["remove"]) for g in groups),
                skipped=[s["reason"][:160] for s in plan.skipped if "id" in s],
                unpruned=[s["reason"][:160] for s in plan.skipped if "id" not in s])


def check(model_type: str, ratio: float = 0.3, limit: int = 240) -> dict:
    """Build one family, prune its channels and then its heads; a row for the table (errors are caught per part)."""
    row: dict[str, Any] = {"family": model_type, "kind": families()[model_type][0]}
    t0 = time.perf_counter()
    try:
        with time_limit(limit):
            model, x, kind = build(model_type)
    except Exception as exc:  # noqa: BLE001 - reported in the row
        row["build"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        return row
    key = logits_key(model, x)
    row["output"] = key
    before = _fingerprint(model)
    for granularity in ("channel", "head"):
        try:
            with time_limit(limit):
                row[granularity] = _one(model, x, kind, key, granularity, ratio)
        except Exception as exc:  # noqa: BLE001 - reported in the row
            msg = str(exc).splitlines()[0][:200] if str(exc) else ""
            row[granularity] = {"error": f"{type(exc).__name__}: {msg}"}
    row["untouched"] = _fingerprint(model) == before
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def removed(part: dict) -> float:
    """Fraction of params removed by one part of a row (0 when it failed)."""
    if "params" not in part:
        return 0.0
    p0, p1 = part["params"]
    return 1 - p1 / p0


def ok(row: dict, least: float = 0.2) -> bool:
    """The targets: built, both parts ran, input untouched, channels removed at least ``least`` of params."""
    return ("build" not in row and row.get("untouched", False) and "error" not in row["channel"]
            and "error" not in row["head"] and removed(row["channel"]) >= least)


def summary(row: dict) -> str:
    """One line per family, for the benchmark's output."""
    if "build" in row:
        return f"{row['family']:28s} {row['kind']:15s} not built: {row['build']}"
    parts = []
    for g in ("channel", "head"):
        part = row[g]
        if "error" in part:
            parts.append(f"{g}s FAIL {part['error'][:90]}")
        else:
            parts.append(f"{g}s {part['params'][0]}->{part['params'][1]} (-{removed(part):.0%}, "
                         f"{part['pruned']}/{part['groups']} groups, {len(part['skipped'])} skipped)")
    return f"{row['family']:28s} {row['kind']:15s} {'ok ' if ok(row) else 'NO '} " + "; ".join(parts)


__all__ = ["KINDS", "build", "check", "families", "ok", "removed", "summary", "tiny_config"]
