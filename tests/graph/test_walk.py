import pytest
import torch
from torch import nn

from secateurs.graph import set_mode
from secateurs.graph.rules.base import broadcast_shape
from secateurs.graph.walk import named_modules, named_tensors


class Shared(nn.Module):
    """A module under two names, a None child, tied weights, a bias-free layer and a buffer."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.block = nn.Sequential(nn.Linear(6, 6, bias=False), nn.BatchNorm1d(6), nn.Sequential(nn.ReLU()))
        self.again = self.block
        self.gone = None
        self.out = nn.Linear(6, 10)
        self.out.weight = self.emb.weight


def _ids(pairs):
    return [(n, id(x)) for n, x in pairs]


def test_walks_name_what_nn_module_names_in_its_order():
    m = Shared()
    mods = named_modules(m)
    assert _ids(mods) == _ids(m.named_modules())
    assert _ids(named_tensors(mods)) == _ids(m.named_parameters())
    assert _ids(named_tensors(mods, buffers=True)) == _ids(m.named_buffers())


@pytest.mark.parametrize("shapes", [[(1, 3), (2, 1)], [(0,), (1,)], [(0,), (5,)], [(2, 3), (3,)], [(), (4,)],
                                    [(4, 1, 3), (2, 1)], [(2,), (3,)], [(5, 1), (1, 5), (5, 5)]])
def test_broadcast_shape_agrees_with_torch(shapes):
    try:
        want = tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError:
        want = None
    assert broadcast_shape([torch.Size(s) for s in shapes]) == want


class FrozenNorm(nn.Module):
    """Overrides train(): set_mode must still call it, even when every flag is already off."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.calls = []

    def train(self, mode: bool = True):
        self.calls.append(mode)
        return super().train(mode)


def test_set_mode_calls_an_overridden_train_even_in_eval():
    m = FrozenNorm().eval()
    m.calls.clear()
    set_mode(m, False)
    assert m.calls == [False]
    plain = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    set_mode(plain, False)
    assert not any(x.training for x in plain.modules())
