"""tag_attributes finds whole models (``save_pretrained``) the way ``getattr`` does, without its exception path,
and untag_attributes restores plain ints everywhere the forward left tracked ones."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.graph.sizes import Size, _whole_model, tag_attributes, untag_attributes


class _Saves(nn.Module):
    def save_pretrained(self, path: str) -> None:  # a whole model's method, as Hugging Face models have
        pass


class _Forwards(nn.Module):
    """Answers unknown attributes itself (as wrappers such as PEFT's do)."""

    def __getattr__(self, name: str):
        if name == "save_pretrained":
            return lambda path: None
        return super().__getattr__(name)


def _instance_function() -> nn.Module:
    m = nn.Linear(2, 2)
    m.save_pretrained = lambda path: None
    return m


def _submodule() -> nn.Module:
    m = nn.Sequential()
    m.add_module("save_pretrained", nn.Identity())  # a module is callable: getattr finds it
    return m


def _parameter() -> nn.Module:
    m = nn.Module()
    m.save_pretrained = nn.Parameter(torch.zeros(1))  # found, but not callable
    return m


@pytest.mark.parametrize("make, whole", [
    (lambda: nn.Linear(2, 2), False), (_Saves, True), (_Forwards, True), (_instance_function, True),
    (_submodule, True), (_parameter, False)])
def test_whole_model_agrees_with_getattr(make, whole):
    mod = make()
    assert _whole_model(mod) is whole
    assert whole == callable(getattr(mod, "save_pretrained", None))


class _Stores(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.width, self._private, self.shape, self.kernel = 4, 3, [2, 2], (3, 3)
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = (Size(4, attr=("", "width")), 1)  # a tracked int kept by the forward, inside a tuple
        self.last = self.width * 1
        return self.fc(x)


def test_tag_then_untag_leaves_plain_values():
    m = _Stores()
    changed = tag_attributes(m)
    assert {k for _, k, _ in changed} >= {"width", "shape", "in_features", "out_features"}
    assert type(m.width) is Size and type(m.shape[0]) is Size and type(m._private) is int and m.kernel == (3, 3)
    m(torch.zeros(1, 4))
    untag_attributes(m, changed)
    assert type(m.width) is int and type(m.shape) is list and all(type(e) is int for e in m.shape)
    assert type(m.seen) is tuple and [type(e) for e in m.seen] == [int, int]
    assert type(m.last) is int and type(m.fc.in_features) is int
