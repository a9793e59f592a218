"""sc.posttrain.prune_structured: heads and FFN neurons of Hugging Face BERT, GPT-2 and Llama (GQA),
chosen from calibration activations, removed physically, with a least-squares correction."""
import pytest
import torch

import secateurs as sc

from .conftest import hf_model, token_batches


def _error(model, dense_out, batches):
    with torch.no_grad():
        return sum(float(((model(**b)[0] - d) ** 2).mean()) for b, d in zip(batches, dense_out))


def test_heads_and_neurons_removed_and_correction_lowers_error(hf, tmp_path):
    kind, model = hf
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cal, test = token_batches(6), token_batches(2, seed=9)
    with torch.no_grad():
        dense_out = [model(**b)[0] for b in test]
    plain, plan = sc.posttrain.prune_structured(model, cal, 0.5, correct=False, progress=False)
    fixed, plan2 = sc.posttrain.prune_structured(model, cal, 0.5, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert plan.to_json() != plan2.to_json() and plan.groups == plan2.groups  # same choice, other settings
    kinds = {g["kind"] for g in plan.groups if g["remove"]}
    assert kinds == {"head", "channel"}
    for g in plan.groups:
        if g["remove"]:
            assert len(g["remove"]) == g["size"] // 2
    n_dense = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in fixed.parameters()) < 0.75 * n_dense
    # FFN neurons and whole heads go, never part of every head's width (16 here): a head-dim channel group
    # chosen as "neurons" once shrank each head (MiniLM at 25%: 20.1M -> 19.4M parameters, cosine 0.92 -> 0.83)
    ffn = 256 if kind == "gpt2" else 128
    assert {g["size"] for g in plan.groups if g["remove"] and g["kind"] == "channel"} == {ffn}
    if kind == "bert":
        assert fixed.encoder.layer[0].intermediate.dense.out_features == 64
        assert fixed.encoder.layer[0].output.dense.in_features == 64
        attn = fixed.encoder.layer[0].attention.self
        assert attn.attention_head_size == 16 and attn.query.out_features == 2 * 16  # 2 of 4 heads, each 16 wide
    elif kind == "llama":
        attn = fixed.model.layers[0].self_attn
        # half of the query heads go (a ratio counts the layer's heads, however they factor into KV groups):
        # here 1 of 2 KV heads with both of its query heads
        assert attn.k_proj.out_features == 16 and attn.q_proj.out_features == 32
        assert fixed.model.layers[0].mlp.down_proj.in_features == 64
    else:
        assert fixed.transformer.h[0].mlp.c_proj.weight.shape[0] == 128
        attn = fixed.transformer.h[0].attn
        assert attn.head_dim == 16 and attn.c_attn.weight.shape[1] == 3 * 2 * 16 and attn.c_proj.weight.shape[0] == 32
    assert _error(fixed, dense_out, test) < 0.8 * _error(plain, dense_out, test)  # the refit cuts >= 20%
    if kind != "bert":
        out = fixed.generate(test[0]["input_ids"][:1, :4], max_new_tokens=4, do_sample=False)
        assert out.shape == (1, 8)
    sc.save(fixed, plan2, tmp_path)
    loaded = sc.load(hf_model(kind), tmp_path)
    with torch.no_grad():
        assert torch.allclose(loaded(**test[0])[0], fixed(**test[0])[0], atol=1e-5)


def test_wanda_criterion_works_in_sc_plan_and_needs_data():
    model = hf_model("bert")
    batches = token_batches(2)
    p = sc.plan(model, batches[0], 0.25, granularity="head", criterion="wanda", batches=batches)
    assert all(len(g["remove"]) == 1 for g in p.groups if g["kind"] == "head")
    with pytest.raises(ValueError, match="criterion 'wanda' needs calibration data"):
        sc.plan(model, batches[0], 0.25, granularity="head", criterion="wanda")


def test_wanda_criterion_takes_loss_function_batches():
    from secateurs.examples import models, train
    torch.manual_seed(0)
    m = models.lenet_300_100()
    x, y = torch.rand(64, 784), torch.randint(0, 10, (64,))
    x[:, :392] = 0.0  # half the pixels never light up: their weights score zero and go first
    p = sc.plan(m, x[:2], 0.5, granularity="unstructured", criterion="wanda", batches=[(x, y)],
                loss_fn=train.xent_loss)
    fc1 = next(k for k in p.masks if k.endswith("weight") and p.masks[k]["shape"] == [300, 784])
    from secateurs.prune.elements import unpack
    assert not unpack(p.masks[fc1]["bits"], [300, 784])[:, :392].any()


@pytest.mark.parametrize("kwargs,match", [
    (dict(ratio=1.0), "ratio must be a number in \\[0, 1\\)"),
    (dict(kinds=["layers"]), "kinds must be a non-empty subset of \\['head', 'neuron'\\]"),
    (dict(ridge=0.0), r"ridge must be a number in \(0, inf\), got 0.0"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sc.posttrain.prune_structured(hf_model("llama"), token_batches(1), **kwargs)


def test_no_groups_of_the_asked_kind():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match="found no head groups to prune in Sequential"):
        sc.posttrain.prune_structured(model, [torch.randn(2, 4)], kinds=["head"], progress=False)
