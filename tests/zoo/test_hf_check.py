"""The Hugging Face zoo harness builds valid tiny models and inputs (tests/zoo/hf_check.py)."""
import math

from tests.zoo.hf_check import build, tiny_config


def test_reformer_axial_positions_fit_the_eight_token_input():
    """Training-mode tracing checks the axial position shape against the sequence length (8 tokens)."""
    cfg = tiny_config("reformer")
    assert math.prod(cfg.axial_pos_shape) == 8 and sum(cfg.axial_pos_embds_dim) == cfg.hidden_size == 64


def test_xlnet_is_traced_with_the_query_stream_generate_runs():
    """``generate`` predicts through XLNet's query stream (``mask_emb``): the example inputs run it too."""
    model, x, _ = build("xlnet")
    assert x["perm_mask"].shape == (1, 8, 8) and x["target_mapping"].shape == (1, 1, 8)
    assert model(**x).logits.shape[1] == 1  # one position predicted, from the query stream
