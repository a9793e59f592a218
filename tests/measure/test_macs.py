"""count_macs: exact counts on hand-sized layers, and agreement with FlopCounterMode on real models."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from secateurs.measure import MacCount, count_macs
from secateurs.measure.macs import KINDS


def _without_norm(count: MacCount) -> int:
    return count.total - count.by_kind["norm"]


class _Lambda(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def test_conv_linear_net_exact() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    count = count_macs(net, torch.randn(1, 3, 8, 8))
    conv = (8 * 8 * 8) * (3 * 3 * 3)  # output elements * (C_in * kernel)
    linear = 512 * 10
    assert count == MacCount(total=conv + linear, by_kind={**dict.fromkeys(KINDS, 0), "conv": conv, "linear": linear})


@pytest.mark.parametrize(
    ("conv", "shape", "expected"),
    [
        (nn.Conv2d(8, 16, 3, groups=4, stride=2, padding=1), (2, 8, 10, 10), (2 * 16 * 5 * 5) * (2 * 9)),
        (nn.Conv2d(8, 8, 3, groups=8), (1, 8, 6, 6), (8 * 4 * 4) * 9),  # depthwise
        (nn.Conv1d(6, 4, 5, groups=2, dilation=2), (3, 6, 20), (3 * 4 * 12) * (3 * 5)),
        (nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), (1, 4, 5, 5), (4 * 5 * 5) * (3 * 9)),  # input elements
    ],
)
def test_grouped_and_transposed_conv_exact(conv: nn.Module, shape: tuple[int, ...], expected: int) -> None:
    assert count_macs(conv, torch.randn(shape)).by_kind["conv"] == expected


def test_matrix_products_exact() -> None:
    a, b = torch.randn(2, 3, 4), torch.randn(2, 4, 5)
    m, n = torch.randn(3, 4), torch.randn(4, 5)
    products = [
        (lambda: a @ b, 2 * 3 * 4 * 5),
        (lambda: torch.matmul(m, torch.randn(4)), 3 * 4),  # matrix @ vector
        (lambda: n.__rmatmul__(m), 3 * 4 * 5),  # Python-level Tensor method around matmul
        (lambda: torch.mm(m, n), 3 * 4 * 5),
        (lambda: m.mm(n), 3 * 4 * 5),
        (lambda: torch.bmm(a, b), 2 * 3 * 4 * 5),
        (lambda: torch.addmm(torch.zeros(5), m, n), 3 * 4 * 5),
        (lambda: torch.baddbmm(torch.zeros(1), a, b), 2 * 3 * 4 * 5),
        (lambda: torch.addbmm(torch.zeros(3, 5), a, b), 2 * 3 * 4 * 5),
        (lambda: torch.einsum("bij,bjk->bik", a, b), 2 * 3 * 4 * 5),
        (lambda: torch.einsum("...ij,...jk", a, b), 2 * 3 * 4 * 5),
        (lambda: torch.einsum("ij,jk,kl->il", m, n, torch.randn(5, 6)), 3 * 4 * 5 + 3 * 5 * 6),
        (lambda: torch.einsum("ij->ji", m), 0),  # a permutation multiplies nothing
    ]
    for product, expected in products:
        count = count_macs(_Lambda(product), ())
        assert count.by_kind == {**dict.fromkeys(KINDS, 0), "matmul": expected}


@pytest.mark.parametrize(
    ("equation", "shapes", "path", "expected"),
    [
        ("ij,jk,kl->il", [(2, 50), (50, 3), (3, 40)], None, 2 * 50 * 3 + 2 * 3 * 40),
        ("ij,jk,kl->il", [(2, 50), (50, 3), (3, 40)], [1, 2, 0, 1], 50 * 3 * 40 + 2 * 50 * 40),
        ("bhqd,bhkd->bhqk", [(2, 3, 7, 8), (2, 3, 9, 8)], None, 2 * 3 * 7 * 9 * 8),
    ],
)
def test_einsum_matches_flop_counter(equation, shapes, path, expected, reference_macs) -> None:
    operands = [torch.randn(shape) for shape in shapes]
    kwargs = {} if path is None else {"path": path}
    model = _Lambda(lambda: torch._VF.einsum(equation, operands, **kwargs))
    assert count_macs(model, ()).by_kind["matmul"] == expected == reference_macs(model, ())


def test_attention_exact() -> None:
    q, k, v = torch.randn(2, 4, 10, 8), torch.randn(2, 4, 12, 8), torch.randn(2, 4, 12, 16)
    attend = _Lambda(F.scaled_dot_product_attention)
    assert count_macs(attend, (q, k, v)).by_kind["attention"] == 2 * 4 * 10 * 12 * (8 + 16)
    grouped = _Lambda(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
    assert count_macs(grouped, (q, k[:, :2], v[:, :2])).by_kind["attention"] == 2 * 4 * 10 * 12 * (8 + 16)


@pytest.mark.parametrize("need_weights", [False, True])
def test_multihead_attention_counts_inner_ops_once(need_weights: bool) -> None:
    mha = nn.MultiheadAttention(16, 2, batch_first=True)
    x = torch.randn(1, 5, 16)
    count = count_macs(mha, (x, x, x, None, need_weights))
    projections = 5 * 16 * 48 + 5 * 16 * 16  # packed in-projection + out-projection
    scores = 2 * 5 * 5 * (8 + 8)  # q @ k^T and weights @ v per head
    assert count.by_kind["linear"] == projections
    assert count.by_kind["matmul" if need_weights else "attention"] == scores
    assert count.total == projections + scores


def test_norms_count_one_mac_per_output_element() -> None:
    x = torch.randn(2, 4, 3, 3)
    norms = [nn.BatchNorm2d(4), nn.LayerNorm([3, 3]), nn.GroupNorm(2, 4), nn.InstanceNorm2d(4), nn.RMSNorm(3)]
    for norm in norms:
        assert count_macs(norm, x) == MacCount(total=x.numel(), by_kind={**dict.fromkeys(KINDS, 0), "norm": x.numel()})


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    dim=st.integers(1, 3),
    groups=st.integers(1, 3),
    in_per_group=st.integers(1, 3),
    out_per_group=st.integers(1, 3),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    transposed=st.booleans(),
)
def test_conv_matches_flop_counter(
    dim, groups, in_per_group, out_per_group, kernel, stride, dilation, transposed, reference_macs
) -> None:
    cls = getattr(nn, f"ConvTranspose{dim}d" if transposed else f"Conv{dim}d")
    conv = cls(groups * in_per_group, groups * out_per_group, kernel, stride=stride, dilation=dilation, groups=groups)
    x = torch.randn(2, groups * in_per_group, *[7] * dim)
    assert count_macs(conv, x).total == reference_macs(conv, x)


TORCHVISION = [
    ("resnet18", 64),
    ("mobilenet_v3_small", 64),
    ("vit_b_16", 224),
    ("swin_t", 224),
    ("convnext_tiny", 64),
    ("regnet_x_400mf", 64),
    ("shufflenet_v2_x0_5", 64),
    ("squeezenet1_0", 64),
    ("efficientnet_b0", 64),
    ("densenet121", 64),
]


@pytest.mark.parametrize(("name", "size"), TORCHVISION)
def test_torchvision_matches_flop_counter(name: str, size: int, reference_macs) -> None:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    x = torch.randn(1, 3, size, size)
    count = count_macs(model, x)
    assert count.total == sum(count.by_kind.values())
    assert _without_norm(count) == pytest.approx(reference_macs(model, x), rel=0.01)


def _bert() -> tuple[nn.Module, dict]:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        vocab_size=1000, max_position_embeddings=64,
    )
    ids = torch.randint(0, 1000, (2, 16))
    return BertModel(config), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _gpt2() -> tuple[nn.Module, dict]:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=64, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config), {"input_ids": torch.randint(0, 1000, (2, 16))}


@pytest.mark.parametrize("build", [_bert, _gpt2], ids=["bert", "gpt2"])
def test_transformers_match_flop_counter(build, reference_macs, monkeypatch) -> None:
    monkeypatch.setitem(os.environ, "HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    model, inputs = build()
    count = count_macs(model, inputs)
    assert count.by_kind["attention"] > 0 and count.by_kind["norm"] > 0
    assert _without_norm(count) == pytest.approx(reference_macs(model, inputs), rel=0.01)


def test_model_mode_and_weights_are_left_alone() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5))
    net.train()
    net[2].eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    count_macs(net, torch.randn(2, 3, 6, 6))
    assert [m.training for m in net.modules()] == [True, True, True, False]
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats untouched


def test_runs_in_eval_and_inference_mode() -> None:
    seen = []
    probe = _Lambda(lambda x: seen.append((probe.training, torch.is_inference_mode_enabled())) or x)
    count_macs(probe, torch.zeros(1))
    assert seen == [(False, True)] and probe.training


def test_failing_forward_raises_clear_error() -> None:
    with pytest.raises(ValueError, match=r"forward of model failed.*mat1 and mat2 shapes cannot be multiplied"):
        count_macs(nn.Linear(3, 4), torch.randn(2, 5))


def test_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        count_macs(lambda x: x, torch.zeros(1))
    with pytest.raises(TypeError, match="example_inputs must be"):
        count_macs(nn.Identity(), 3)
