"""Test-size timm architectures for Hugging Face towers that name a timm model (Gemma 3n's vision tower).

Gemma 3n builds its vision tower with ``timm.create_model(vision_config.architecture)``: a MobileNetV5 encoder
of 76 blocks and ~300M params by default, none of it reachable through config sizes. timm consumes the block
arguments it is given, so a smaller tower needs a registered name rather than ``model_args``.
"""
from __future__ import annotations

import functools

# Four stages of one to three blocks: inverted residuals, one multi-query attention block in each of the
# last two stages (a stage must end with a convolution block: its output feeds the fusion adapter).
_MOBILENETV5 = [
    ["er_r1_k3_s2_e4_c16"],
    ["uir_r1_a3_k5_s2_e4_c16"],
    ["uir_r1_a5_k5_s2_e4_c32", "mqa_r1_k3_h2_v2_s1_d8_c32", "uir_r1_a0_k0_s1_e2_c32"],
    ["uir_r1_a5_k5_s2_e4_c64", "mqa_r1_k3_h2_s1_d16_c64", "uir_r1_a0_k0_s1_e2_c64"],
]
default_cfgs = {"mobilenetv5_tiny_enc": {"num_classes": 0, "input_size": (3, 32, 32), "mean": (0.0,) * 3,
                                         "std": (1.0,) * 3}}  # read by timm's registry
MOBILENETV5_FEATURES = 2048  # the fusion adapter's output width, fixed in timm's MobileNetV5 encoder


def mobilenetv5_tiny_enc(pretrained: bool = False, **kwargs):
    """A MobileNetV5 encoder with ``_MOBILENETV5``'s blocks (~1M params), built like ``mobilenetv5_300m_enc``."""
    from timm.models._efficientnet_builder import decode_arch_def
    from timm.models.mobilenetv5 import _gen_mobilenet_v5

    kwargs.setdefault("pad_type", "same")
    return _gen_mobilenet_v5("mobilenetv5_tiny_enc", pretrained=pretrained, encoder=True,
                             block_args=decode_arch_def(_MOBILENETV5), stem_size=16, **kwargs)


@functools.cache
def register() -> str:
    """Register the test-size architectures with timm (once); the MobileNetV5 encoder's name."""
    from timm.models import register_model

    register_model(mobilenetv5_tiny_enc)
    return mobilenetv5_tiny_enc.__name__
