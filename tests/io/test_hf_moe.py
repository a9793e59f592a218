"""Hugging Face round trips of pruned mixture-of-experts models."""
import torch
import transformers as T

import secateurs as sc
from secateurs.io.hf import load_hf, pretrained_config, save_hf, save_pretrained
from tests.moe_models import mixtral, moe_blocks, qwen2_moe, tokens


def test_expert_pruned_mixtral_round_trips_through_save_hf_and_its_config(tmp_path, one_thread):
    model, x = mixtral(), tokens()
    small = sc.prune(model, x, 0.5, granularity="expert")
    save_hf(small, tmp_path / "hf")
    back = load_hf(tmp_path / "hf")
    with torch.no_grad():
        torch.testing.assert_close(back(**x).logits, small(**x).logits)
    assert [blk.gate.weight.shape[0] for blk in moe_blocks(small)] == [2, 2]
    cfg = pretrained_config(small)  # every layer keeps 2 of 4 experts: expressible as num_local_experts
    assert (cfg.num_local_experts, model.config.num_local_experts) == (2, 4)
    save_pretrained(small, tmp_path / "pre")
    again = T.MixtralForCausalLM.from_pretrained(tmp_path / "pre").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**x).logits, small(**x).logits)


def test_neuron_pruned_qwen2_moe_config_sets_moe_intermediate_size(one_thread):
    model, x = qwen2_moe(), tokens()
    g = sc.trace(model, x)
    neurons = {grp.id: 0.5 for grp in g.groups if grp.size == 48}
    small = sc.apply(model, sc.plan(model, x, 0.0, group_ratios=neurons, graph=g))
    assert pretrained_config(small).moe_intermediate_size == 24
