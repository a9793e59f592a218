"""sc.explore sweeps post-training methods ("granularity/criterion/posttrain") next to the others."""
import torch

import secateurs as sc
from secateurs.search import Front

from .conftest import Stack


def test_explore_runs_posttrain_methods_and_rebuilds_them_from_the_workdir(stack, stack_batches, tmp_path):
    x = stack_batches[0]
    front = sc.explore(stack, x, "fidelity", methods=["unstructured/sparsegpt/posttrain", "2:4/wanda/posttrain"],
                       ratios=[0.5], latency=False, quiet=True, workdir=tmp_path,
                       plan_kwargs={"batches": stack_batches})
    names = [c.name for c in front.candidates]
    assert names == ["dense", "unstructured/sparsegpt/posttrain@0.5", "2:4/wanda/posttrain@0.5"]
    sgpt = front.candidates[1]
    assert 0.5 < sgpt.quality < 1.0
    reopened = Front(Stack(), x, front.candidates, workdir=tmp_path)
    rebuilt, plan = reopened.rebuild(sgpt)
    direct, _ = sc.posttrain.prune(stack, stack_batches, "sparsegpt", 0.5, progress=False)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), direct(x), atol=1e-6)  # SparseGPT's updated weights were saved
    assert plan.settings["method"] == "sparsegpt"
