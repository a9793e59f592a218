"""The zoo harness's tiny configs (tests/zoo/hf_check.py): families that need settings beyond SMALL."""
import pytest

from secateurs.measure import count_params
from tests.zoo.hf_check import _build, check, ok


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
