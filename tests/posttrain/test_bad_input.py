"""sc.posttrain.prune on bad input: clear errors naming what is wrong, and the model left as it was."""
import pytest
import torch

import secateurs as sc


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, before):
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("sparsity", [1.0, -0.1, float("nan"), True, "3:2", "2:4:8", "half", None])
def test_sparsity_outside_range(stack, stack_batches, sparsity):
    with pytest.raises(ValueError, match="sparsity must be a number in \\[0, 1\\) or 'N:M'|N:M needs 0 < N < M"):
        sc.posttrain.prune(stack, stack_batches, "wanda", sparsity, progress=False)


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="obs"), "method must be one of"),
    (dict(owl=True, sparsity="2:4"), "owl=True .* needs a fractional sparsity"),
    (dict(ignore=["blocks.9"]), "ignore names module 'blocks.9'"),
    (dict(blocks="layers"), "blocks='layers' is not a non-empty ModuleList"),
    (dict(blocksize=6, sparsity="2:4"), "blocksize \\(6\\) must be a multiple of M \\(4\\)"),
    (dict(damp=-1.0), "damp must be a number"),
])
def test_bad_arguments(stack, stack_batches, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sc.posttrain.prune(stack, stack_batches, **{"method": "sparsegpt", **kwargs}, progress=False)


def test_bad_calibration_containers(stack, stack_batches):
    with pytest.raises(ValueError, match="calibration_batches is empty"):
        sc.posttrain.prune(stack, [], progress=False)
    with pytest.raises(ValueError, match="calibration_batches is empty"):
        sc.posttrain.prune(stack, iter(()), progress=False)
    with pytest.raises(TypeError, match="not one batch: wrap it in a list"):
        sc.posttrain.prune(stack, stack_batches[0], progress=False)
    with pytest.raises(TypeError, match="ignore must be a list of module names"):
        sc.posttrain.prune(stack, stack_batches, ignore="head", progress=False)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        sc.posttrain.prune("model", stack_batches, progress=False)


@pytest.mark.parametrize("inplace", [False, True])
def test_mismatched_batch_names_the_batch_and_leaves_the_model(stack, stack_batches, inplace):
    before = _state(stack)
    bad = stack_batches[:2] + [torch.randn(4, 5)]
    with pytest.raises(ValueError, match="calibration batch 2: the model's forward failed before the first block"):
        sc.posttrain.prune(stack, bad, "sparsegpt", inplace=inplace, progress=False)
    assert _unchanged(stack, before)


def test_nan_inputs_and_inf_activations_name_where(stack, stack_batches):
    bad = [b.clone() for b in stack_batches]
    bad[1][0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite .* at inputs of the first block \\(batch 1\\)"):
        sc.posttrain.prune(stack, bad, progress=False)
    with torch.no_grad():
        stack.blocks[1].up.bias[0] = float("inf")
    before = _state(stack)
    for method in ("wanda", "sparsegpt"):
        with pytest.raises(ValueError, match="non-finite .* the input of layer 'blocks.1.down'"):
            sc.posttrain.prune(stack, stack_batches, method, inplace=True, progress=False)
        assert _unchanged(stack, before)


def test_ignored_layers_stay_dense_and_are_listed(stack, stack_batches):
    out, plan = sc.posttrain.prune(stack, stack_batches, "wanda", 0.5, ignore=["blocks.1"], progress=False)
    assert not any(k.startswith("blocks.1.") for k in plan.masks)
    assert {"tensor": "blocks.1.up.weight", "reason": "in ignore"} in plan.skipped
    assert torch.equal(sc.finalize(out).blocks[1].up.weight, stack.blocks[1].up.weight)
