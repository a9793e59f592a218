"""walk lists what named_modules, named_parameters and named_buffers list, in their order, in one pass."""
import torch
from torch import nn
from torch.nn.utils import parametrize

from secateurs.graph.walk import walk
from secateurs.prune.validate import is_parametrized
from tests.prune.nets import ResidualCNN, TinyBlock


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        self.b = self.a  # one module under two names: listed once as a module, its tensors under both names
        self.tied = nn.Linear(4, 3)
        self.tied.weight = nn.Parameter(self.a[0].weight.detach().t().clone())
        self.c = nn.Linear(2, 2, bias=False)  # a None bias is left out, as named_parameters leaves it
        self.register_buffer("scratch", torch.zeros(2), persistent=False)
        self.register_buffer("gone", None)


def test_walk_lists_what_the_named_methods_list():
    weighted = nn.Linear(3, 3)
    parametrize.register_parametrization(weighted, "weight", nn.Identity())
    for model in (Shared(), ResidualCNN(), TinyBlock(), nn.Sequential(weighted, nn.ReLU())):
        tree = walk(model)
        assert [(n, id(m)) for n, m in tree.modules] == [(n, id(m)) for n, m in model.named_modules()]
        assert [(n, id(t)) for n, t in tree.params] == \
            [(n, id(t)) for n, t in model.named_parameters(remove_duplicate=False)]
        assert [(n, id(t)) for n, t in tree.buffers] == \
            [(n, id(t)) for n, t in model.named_buffers(remove_duplicate=False)]
        assert ([is_parametrized(m) for m in model.modules()]
                == [parametrize.is_parametrized(m) for m in model.modules()])
    assert "b.0.weight" in dict(walk(Shared()).params) and "b.0" not in dict(walk(Shared()).modules)
