"""Sparsity and sparse byte accounting: effective (masked) weights, honest names, the formula by hand."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torchvision.models import resnet18

from secateurs.measure import (
    LayerSparsity,
    Measurement,
    Sparsity,
    count_params,
    effective_parameters,
    measure,
    size_bytes,
    sparsity,
)
from secateurs.measure.sparsity import weight_bytes


class MaskModule(nn.Module):
    """A 0/1 mask applied as a torch parametrization."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


def _masked(model: nn.Module, fraction: float) -> nn.Module:
    """A copy of ``model`` whose conv/linear weights are masked: the ``fraction`` smallest |w| of each zeroed."""
    model = copy.deepcopy(model)
    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            w = mod.weight.detach().abs().flatten()
            k = int(fraction * w.numel())
            threshold = w.kthvalue(k).values
            mask = (mod.weight.detach().abs() > threshold).float()
            parametrize.register_parametrization(mod, "weight", MaskModule(mask))
    return model


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(13, 7), nn.ReLU(), nn.Linear(7, 5), nn.LayerNorm(5), nn.Linear(5, 3, bias=False))


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)  # an unseeded init can draw an exact 0.0 now and then
    return resnet18().eval()


@pytest.fixture(scope="module")
def sparse_resnet(resnet: nn.Module) -> nn.Module:
    return _masked(resnet, 0.9)


def _effective_by_hand(model: nn.Module) -> dict[str, torch.Tensor]:
    """named_parameters with each ``X.parametrizations.A.original`` replaced by ``getattr(X, A)``."""
    out = {}
    for name, param in model.named_parameters():
        if ".parametrizations." in name:
            owner, attr = name.split(".parametrizations.")
            attr = attr.split(".")[0]
            out[f"{owner}.{attr}"] = getattr(model.get_submodule(owner), attr).detach()
        else:
            out[name] = param.detach()
    return out


def _compressed_by_hand(model: nn.Module, value_bytes: int) -> int:
    return sum(
        math.ceil(t.numel() / 8) + int((t != 0).sum()) * value_bytes for t in _effective_by_hand(model).values()
    )


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "names": [n for n, _ in model.named_parameters()],
        "grads": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "classes": [type(m) for m in model.modules()],
    }


def _assert_same(model: nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert after["names"] == before["names"] and after["grads"] == before["grads"]
    assert after["training"] == before["training"] and after["classes"] == before["classes"]
    assert before["state"].keys() == after["state"].keys()
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])


# --- sparsity() ---------------------------------------------------------------------------------


def test_dense_resnet_has_zero_sparsity(resnet: nn.Module) -> None:
    s = sparsity(resnet)
    weights = {n: p for n, p in resnet.named_parameters() if p.dim() >= 2}
    assert list(s.layers) == list(weights)
    for name, layer in s.layers.items():
        assert layer == LayerSparsity(tuple(weights[name].shape), weights[name].numel(), weights[name].numel(), 0.0)
    assert s.total == 0.0 and s.numel == s.nonzero == sum(p.numel() for p in weights.values())


def test_masked_resnet_is_ninety_percent_sparse_per_layer(resnet: nn.Module, sparse_resnet: nn.Module) -> None:
    s = sparsity(sparse_resnet)
    assert list(s.layers) == [n for n, p in resnet.named_parameters() if p.dim() >= 2]
    assert not any("parametrizations" in name or "original" in name for name in s.layers)
    for name, layer in s.layers.items():
        assert layer.sparsity == pytest.approx(0.9, abs=1e-3), name
        assert layer.nonzero == int((sparse_resnet.get_submodule(name.rsplit(".", 1)[0]).weight != 0).sum())
    assert s.total == pytest.approx(0.9, abs=1e-3)
    assert s["fc.weight"].shape == (1000, 512)


def test_mlp_sparsity_counts_exact_zeros() -> None:
    model = _mlp()
    mask = torch.ones(7, 13)
    mask[:, :4] = 0  # 28 of 91 zeroed
    parametrize.register_parametrization(model[0], "weight", MaskModule(mask))
    s = sparsity(model)
    assert list(s.layers) == ["0.weight", "2.weight", "4.weight"]  # biases and the LayerNorm are 1-D
    assert s["0.weight"] == LayerSparsity((7, 13), 91, 63, 28 / 91)
    assert s["2.weight"].sparsity == 0.0
    assert (s.numel, s.nonzero) == (91 + 35 + 15, 63 + 35 + 15)
    assert s.total == pytest.approx(28 / 141)


def test_sparsity_str_is_an_aligned_table() -> None:
    s = Sparsity(
        layers={
            "conv.weight": LayerSparsity((8, 3, 3, 3), 216, 27, 189 / 216),
            "fc.weight": LayerSparsity((10, 128), 1280, 1280, 0.0),
        },
        numel=1496,
        nonzero=1307,
        total=189 / 1496,
    )
    assert str(s).splitlines() == [
        "layer        shape         sparsity",
        "conv.weight  8x3x3x3          87.5%",
        "fc.weight    10x128            0.0%",
        "total        1496 weights     12.6%",
    ]


def test_sparsity_to_dict_is_json_serialisable(sparse_resnet: nn.Module) -> None:
    s = sparsity(sparse_resnet)
    data = json.loads(json.dumps(s.to_dict()))
    assert data["layers"]["conv1.weight"]["shape"] == [64, 3, 7, 7]
    assert data["total"] == s.total and data["nonzero"] == s.nonzero


# --- effective_parameters() ---------------------------------------------------------------------


def test_effective_parameters_of_a_plain_model_are_its_parameters(resnet: nn.Module) -> None:
    effective = effective_parameters(resnet)
    params = dict(resnet.named_parameters())
    assert list(effective) == list(params)
    assert all(effective[n].data_ptr() == params[n].data_ptr() for n in params)  # views, no copies


def test_effective_parameters_resolve_parametrizations(sparse_resnet: nn.Module) -> None:
    effective = effective_parameters(sparse_resnet)
    by_hand = _effective_by_hand(sparse_resnet)
    assert set(effective) == set(by_hand)
    assert all(torch.equal(effective[n], by_hand[n]) for n in by_hand)
    assert not any(t.requires_grad for t in effective.values())
    assert not torch.equal(effective["conv1.weight"], sparse_resnet.conv1.parametrizations.weight.original)


def test_effective_parameters_keep_weight_before_bias_and_skip_parametrized_buffers() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    parametrize.register_parametrization(model[0], "weight", MaskModule(torch.ones(3, 4)))
    parametrize.register_parametrization(model[1], "running_mean", MaskModule(torch.zeros(3)))
    assert list(effective_parameters(model)) == ["0.weight", "0.bias", "1.weight", "1.bias"]


class _TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.head = nn.Linear(8, 50, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


def test_tied_weights_once_plain_and_masked() -> None:
    model = _TiedLM()
    assert list(effective_parameters(model)) == ["embed.weight"]
    assert list(sparsity(model).layers) == ["embed.weight"]
    result = measure(model, torch.tensor([[1, 2, 3]]), latency=False)
    assert (result.nonzero_params, result.dense_bytes) == (400, 1600)
    assert result.compressed_bytes == {"bitmask+fp32": 50 + 1600, "bitmask+fp16": 50 + 800}

    # masking one side of the tie: the weight appears once, as the masked tensor
    mask = torch.zeros(50, 8)
    mask[:10] = 1
    parametrize.register_parametrization(model.embed, "weight", MaskModule(mask))
    effective = effective_parameters(model)
    assert list(effective) == ["embed.weight"]
    assert int((effective["embed.weight"] != 0).sum()) == 80


# --- Measurement: nonzero_params, dense_bytes, compressed_bytes ---------------------------------


def test_compressed_bytes_follow_the_formula_on_a_masked_mlp() -> None:
    model = _mlp()
    mask = torch.ones(7, 13)
    mask[:, :4] = 0
    parametrize.register_parametrization(model[0], "weight", MaskModule(mask))
    with torch.no_grad():
        model[2].bias.zero_()
    result = measure(model, torch.randn(2, 13), latency=False)
    # 0.weight 91 (63 nonzero), 0.bias 7, 2.weight 35, 2.bias 5 (all zero), 3.weight 5, 3.bias 5 (zeros), 4.weight 15
    numels = [91, 7, 35, 5, 5, 5, 15]
    nonzero = 63 + 7 + 35 + 0 + 5 + 0 + 15
    bitmask = sum(math.ceil(n / 8) for n in numels)
    assert bitmask == 12 + 1 + 5 + 1 + 1 + 1 + 2
    assert result.nonzero_params == nonzero
    assert result.dense_bytes == sum(numels) * 4
    assert result.compressed_bytes == {"bitmask+fp32": bitmask + nonzero * 4, "bitmask+fp16": bitmask + nonzero * 2}
    assert result.compressed_bytes["bitmask+fp32"] == _compressed_by_hand(model, 4)
    assert result.params == count_params(model) == sum(numels)


def test_dense_resnet_bytes_by_hand(resnet: nn.Module) -> None:
    result = measure(resnet, torch.randn(1, 3, 64, 64), latency=False)
    params = list(resnet.parameters())
    assert result.dense_bytes == sum(p.numel() * p.element_size() for p in params) == result.params * 4
    assert result.nonzero_params == sum(int((p != 0).sum()) for p in params)
    assert result.compressed_bytes == {
        "bitmask+fp32": _compressed_by_hand(resnet, 4),
        "bitmask+fp16": _compressed_by_hand(resnet, 2),
    }
    assert result.dense_bytes < result.size_bytes  # safetensors also stores the BatchNorm buffers


def test_ninety_percent_sparse_resnet_compresses_five_fold(resnet: nn.Module, sparse_resnet: nn.Module) -> None:
    before = _snapshot(sparse_resnet)
    dense = measure(resnet, torch.randn(1, 3, 64, 64), latency=False)
    result = measure(sparse_resnet, torch.randn(1, 3, 64, 64), latency=False)
    _assert_same(sparse_resnet, before)
    assert parametrize.is_parametrized(sparse_resnet.conv1, "weight")

    assert result.dense_bytes == dense.dense_bytes  # masks do not shrink the dense payload
    assert result.compressed_bytes["bitmask+fp32"] <= 0.2 * result.dense_bytes
    assert result.compressed_bytes["bitmask+fp16"] < result.compressed_bytes["bitmask+fp32"]
    assert result.compressed_bytes == {
        "bitmask+fp32": _compressed_by_hand(sparse_resnet, 4),
        "bitmask+fp16": _compressed_by_hand(sparse_resnet, 2),
    }
    assert result.nonzero_params == sum(int((t != 0).sum()) for t in _effective_by_hand(sparse_resnet).values())
    assert result.nonzero_params < 0.11 * result.params
    assert result.masked and result.size_bytes == size_bytes(resnet)  # as deployed: masks baked in, not stored


def test_dense_bytes_use_each_tensor_element_size() -> None:
    model = _mlp().to(torch.float16)
    model[0].to(torch.float32)
    result = weight_bytes(effective_parameters(model).items())
    assert result.dense_bytes == (91 + 7) * 4 + (35 + 5 + 5 + 5 + 15) * 2
    half = measure(_mlp().half(), torch.randn(1, 13).half(), latency=False)
    assert half.dense_bytes == half.params * 2
    # the encodings' value widths are fixed, whatever the stored dtype
    assert half.compressed_bytes["bitmask+fp32"] - half.compressed_bytes["bitmask+fp16"] == 2 * half.nonzero_params


def test_sparsity_and_measure_leave_the_model_unchanged() -> None:
    model = _mlp().train()
    parametrize.register_parametrization(model[0], "weight", MaskModule((torch.rand(7, 13) > 0.5).float()))
    model[0].parametrizations.weight.original.requires_grad_(False)
    before = _snapshot(model)
    sparsity(model)
    effective_parameters(model)
    measure(model, torch.randn(2, 13), latency=False)
    _assert_same(model, before)
    assert (model[0].parametrizations.weight.original != 0).all()  # the originals are not baked


def test_meta_tensors_are_refused() -> None:
    with pytest.raises(ValueError, match="meta device"):
        sparsity(nn.Linear(3, 2, device="meta"))


def test_rejects_non_modules() -> None:
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        sparsity({"w": torch.zeros(2, 2)})
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        effective_parameters(None)


# --- Measurement.__str__ / to_dict ---------------------------------------------------------------


def test_str_shows_dense_nonzero_and_compressed_sizes() -> None:
    result = Measurement(
        params=11_689_512,
        macs=1_822_000_000,
        macs_by_kind={"conv": 1_813_561_344},
        size_bytes=46_827_520,
        nonzero_params=1_168_951,
        dense_bytes=46_758_048,
        compressed_bytes={"bitmask+fp32": 6_137_000, "bitmask+fp16": 3_799_000},
    )
    assert str(result).splitlines() == [
        "params   11.69M",
        "MACs     1.82 GMACs",
        "  conv   1.81 GMACs",
        "size     46.8 MB",
        "weights  dense 46.8 MB, 1.17M nonzero (90.0% sparse)",
        "         compressed: bitmask+fp32 6.1 MB, bitmask+fp16 3.8 MB",
    ]


def test_measurement_to_dict_carries_the_new_fields() -> None:
    result = measure(_mlp(), torch.randn(1, 13), latency=False)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["nonzero_params"] == result.nonzero_params
    assert data["dense_bytes"] == result.dense_bytes
    assert data["compressed_bytes"] == result.compressed_bytes
