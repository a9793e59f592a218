"""The training-time Pruner masks; whole experts cannot be masked (it says so), expert neurons can."""
import pytest
import torch

import secateurs as sc
from secateurs.train.schedules import OneShot
from tests.moe_models import mixtral, moe_blocks, tokens


def test_pruner_refuses_whole_experts(one_thread):
    with pytest.raises(ValueError, match="whole experts cannot be masked: prune them with sc.prune"):
        sc.Pruner(mixtral(), tokens(), OneShot(step=1, sparsity=0.5), granularity="expert")


def test_pruner_masks_then_removes_expert_neurons(one_thread):
    model, x = mixtral(), tokens()
    # the residual width (ignored here) is normalised: masking it is not removing it; expert neurons are exact
    pr = sc.Pruner(model, x, OneShot(step=1, sparsity=0.3), granularity="channel", ignore=["model.embed_tokens"])
    pr.step()
    small = pr.finalize()
    with torch.no_grad():
        torch.testing.assert_close(small(**x).logits, model(**x).logits, atol=1e-5, rtol=1e-4)
    assert [tuple(b.experts.down_proj.shape) for b in moe_blocks(small)] == [(4, 64, 72)] * 2
