"""count_params and size_bytes: tied weights once, shared storage handled, sizes match safetensors."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save
from torch import nn

from secateurs.measure import count_params, size_bytes


class _TiedLM(nn.Module):
    def __init__(self, tied: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.head = nn.Linear(8, 50, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


def test_count_params_plain() -> None:
    assert count_params(nn.Sequential(nn.Linear(3, 4), nn.Conv2d(4, 2, 3, bias=False))) == 3 * 4 + 4 + 4 * 2 * 9


def test_tied_weights_counted_once() -> None:
    assert count_params(_TiedLM(tied=False)) == 2 * 50 * 8
    assert count_params(_TiedLM(tied=True)) == 50 * 8


def test_parameters_sharing_storage_counted_once() -> None:
    a = nn.Linear(4, 4, bias=False)
    b = nn.Linear(4, 4, bias=False)
    b.weight = nn.Parameter(a.weight.data)  # a different Parameter object over the same memory
    assert count_params(nn.Sequential(a, b)) == 16


def test_size_bytes_is_safetensors_length() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    assert size_bytes(model) == len(save(model.state_dict()))


def test_size_bytes_stores_tied_weights_once() -> None:
    tied, untied = size_bytes(_TiedLM(tied=True)), size_bytes(_TiedLM(tied=False))
    assert untied - tied >= 50 * 8 * 4  # one float32 matrix fewer
    assert tied >= 50 * 8 * 4


def test_size_bytes_copes_with_views_and_non_contiguous_tensors() -> None:
    model = nn.Linear(6, 4)
    model.register_buffer("rows", model.weight.data[:2])  # a view into the weight's storage
    model.register_buffer("transposed", torch.randn(5, 3).t())  # not contiguous
    size = size_bytes(model)
    assert size >= sum(t.numel() * t.element_size() for t in model.state_dict().values())
    state = model.state_dict()
    with pytest.raises(RuntimeError):  # what size_bytes has to work around
        save(dict(state))
    assert size == len(save({k: v.clone().contiguous() for k, v in state.items()}))


def test_size_bytes_of_tied_model_is_one_copy_of_the_weight() -> None:
    model = _TiedLM(tied=True)
    assert size_bytes(model) == len(save({"embed.weight": model.embed.weight.detach()}))


def test_size_bytes_skips_non_tensor_extra_state() -> None:
    class WithExtra(nn.Linear):
        def get_extra_state(self) -> dict:
            return {"note": "not a tensor"}

        def set_extra_state(self, state: dict) -> None:
            pass

    assert size_bytes(WithExtra(3, 2)) == size_bytes(nn.Linear(3, 2))


def test_rejects_non_modules() -> None:
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        count_params({"w": torch.zeros(1)})
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        size_bytes(None)
