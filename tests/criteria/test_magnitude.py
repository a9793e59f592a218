"""Magnitude scores of groups: the layer-by-layer path (one scratch buffer, each layout spread once) gives
exactly the sums of element scores over every coupled slice, the definition ``aggregate`` implements."""
import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.criteria import Context, get_criterion, registry
from secateurs.graph import layout as L


class Dense(nn.Module):
    """Concatenated features (cat layouts), a grouped conv with GroupNorm (prod layouts), a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.grow = nn.Sequential(nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6))
        self.mix = nn.Conv2d(14, 16, 1)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.norm = nn.GroupNorm(4, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.cat([x, torch.relu(self.grow(x))], 1)
        x = torch.relu(self.norm(self.grouped(self.mix(x))))
        return self.head(x.mean((2, 3)))


def _by_definition(model, graph, p):
    """Per group element, the sum of |w|**p over every weight removed with it: one tensor at a time."""
    params = dict(model.named_parameters())
    out = {g.id: torch.zeros(g.size, dtype=torch.float64) for g in graph.groups}
    for name, dims in graph.layouts.items():
        if name not in params:
            continue
        e = params[name].detach().float()
        e = e.square() if p == 2 else e.abs()
        for dim, tree in dims.items():
            s = e.sum(dim=[d for d in range(e.dim()) if d != dim]) if e.dim() > 1 else e
            for gid, co in L.coords(tree).items():
                keep = co >= 0
                out[gid].index_add_(0, co[keep], s.double()[keep])
    return out


@pytest.mark.parametrize("scratch_from", [0, registry.SCRATCH])  # 0: every tensor goes through the buffer
def test_group_scores_equal_their_definition(monkeypatch, scratch_from):
    monkeypatch.setattr(registry, "SCRATCH", scratch_from)
    torch.manual_seed(0)
    model = Dense()
    graph = sc.trace(model, torch.randn(1, 3, 8, 8))
    kinds = {t[0] for dims in graph.layouts.values() for t in dims.values()}
    assert {"cat", "prod", "g"} <= kinds and not graph.unsupported
    for name, p in (("l1", 1), ("l2", 2)):
        want = _by_definition(model, graph, p)
        got = get_criterion(name).groups(model, graph, Context())
        for gid, w in want.items():
            assert torch.equal(got[gid], w.sqrt() if p == 2 else w), (name, gid)


def test_scratch_buffer_gives_the_fresh_tensor_sums(monkeypatch):
    monkeypatch.setattr(registry, "SCRATCH", 0)
    monkeypatch.setattr(registry, "FUSED", 100)  # the (6, 5, 3, 3) tensors take the fused path: float64 scratch
    scratch = registry.Scratch()
    for shape, dims in (((6, 5, 3, 3), [0, 1]), ((7, 4), [0, 1]), ((9,), [0]), ((2, 3, 4), [1]), ((6, 5, 3, 3), [0]),
                        ((5, 4), [0, 1])):
        for p in (1, 2):
            w = torch.randn(shape)
            got, want = registry.power_sums(w, dims, p, scratch), registry.power_sums(w, dims, p)
            assert got.keys() == want.keys() and all(torch.equal(got[d], want[d]) for d in dims)
    # grown to the largest tensor once, then reused: (6, 5, 3, 3)'s |w| for the fused L1 (larger than the (7, 4)
    # squared elementwise), (6, 5) fused over its kernel
    assert scratch.buffers[torch.float32].numel() == 6 * 5 * 9 and scratch.buffers[torch.float64].numel() == 6 * 5


@pytest.mark.parametrize("shape", [(6, 5, 3, 3), (6, 5, 1, 1), (6, 5, 7)])
def test_fused_sums_are_the_kernel_norms_summed_in_float64(monkeypatch, shape):
    """The fused path (kernel by kernel, then float64) gives exactly the float32 kernel norms, whichever way
    it computes them (einsum with ones for L1, the squares themselves for a 1x1 kernel)."""
    monkeypatch.setattr(registry, "FUSED", 20)  # every shape here takes the fused path
    torch.manual_seed(0)
    w = torch.randn(shape)
    f = w.flatten(2)
    for p, kernel in ((1, torch.linalg.vector_norm(f, 1, dim=-1)), (2, torch.einsum("...i,...i->...", f, f))):
        for scratch in (None, registry.Scratch()):
            got = registry.power_sums(w, [0, 1], p, scratch)
            assert torch.equal(got[0], kernel.double().sum(1)) and torch.equal(got[1], kernel.double().sum(0)), p


class NestedCat(nn.Module):
    """A concatenation inside a concatenation, one group in it twice, and a head over both widths."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.b = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5))
        self.mix = nn.Conv2d(13, 6, 1)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        a, b = torch.relu(self.a(x)), torch.relu(self.b(x))
        return self.head(self.mix(torch.cat([a, torch.cat([b, a], 1)], 1)).mean((2, 3)))


def test_nested_concatenation_with_a_repeated_group_equals_its_definition():
    torch.manual_seed(0)
    model = NestedCat()
    graph = sc.trace(model, torch.randn(1, 3, 8, 8))
    mix = graph.layouts["mix.weight"][1]
    assert mix[0] == "cat" and not graph.unsupported
    assert [g for g, _, _ in registry._spread(mix)] == [0, 1, 0]  # three runs, group 0 in both concatenations
    for name, p in (("l1", 1), ("l2", 2)):
        want = _by_definition(model, graph, p)
        got = get_criterion(name).groups(model, graph, Context())
        for gid, w in want.items():
            assert torch.equal(got[gid], w.sqrt() if p == 2 else w), (name, gid)
