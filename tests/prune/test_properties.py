"""Property-based: random nets mixing conv, linear, norms, residuals, concat, split, grouped conv and
reshapes always prune, keep their output shape, and masked == physical."""
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
from tests.helpers import outputs

BLOCKS = ["conv", "residual", "concat", "split", "grouped", "norm"]


class Block(nn.Module):
    def __init__(self, kind: str, c: int, w: int):
        super().__init__()
        self.kind = kind
        if kind == "conv":
            self.body = nn.Sequential(nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU())
            self.out = w
        elif kind == "residual":
            self.body = nn.Sequential(nn.Conv2d(c, w, 1), nn.BatchNorm2d(w), nn.ReLU(), nn.Conv2d(w, c, 3, padding=1))
            self.out = c
        elif kind == "concat":
            self.a, self.b = nn.Conv2d(c, w, 1), nn.Conv2d(c, w + 2, 3, padding=1)
            self.out = 2 * w + 2
        elif kind == "split":
            self.pre = nn.Conv2d(c, 2 * w, 1)
            self.a, self.b = nn.Conv2d(w, w, 3, padding=1), nn.Conv2d(w, w, 1)
            self.out = 2 * w
        elif kind == "grouped":
            self.pre = nn.Conv2d(c, 2 * w, 1)
            self.g = nn.Conv2d(2 * w, 2 * w, 3, padding=1, groups=2)
            self.out = 2 * w
        else:
            self.body = nn.Sequential(nn.Conv2d(c, w, 1), nn.GroupNorm(1, w), nn.GELU())
            self.out = w

    def forward(self, x):
        if self.kind == "residual":
            return x + self.body(x)
        if self.kind == "concat":
            return torch.cat([self.a(x), self.b(x)], dim=1)
        if self.kind == "split":
            u, v = self.pre(x).chunk(2, dim=1)
            return torch.cat([self.a(u), self.b(v)], dim=1)
        if self.kind == "grouped":
            return self.g(torch.relu(self.pre(x)))
        return self.body(x)


class RandomNet(nn.Module):
    def __init__(self, kinds, widths, hidden):
        super().__init__()
        c, blocks = 3, []
        for k, w in zip(kinds, widths):
            blocks.append(Block(k, c, w))
            c = blocks[-1].out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1, self.ln, self.fc2 = nn.Linear(c * 4, hidden), nn.LayerNorm(hidden), nn.Linear(hidden, 5)

    def forward(self, x):
        x = self.pool(self.blocks(x))
        x = x.reshape(x.shape[0], -1)  # flatten (C, 2, 2) into the linear layer
        return self.fc2(torch.relu(self.fc1(x)))


nets = st.builds(
    RandomNet,
    st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=5),
    st.lists(st.integers(2, 12), min_size=5, max_size=5),
    st.integers(2, 24),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=nets, ratio=st.floats(0.0, 0.95), round_to=st.sampled_from([1, 2, 4]),
       scope=st.sampled_from(["local", "global"]), seed=st.integers(0, 3))
def test_random_nets_prune_and_masked_equals_physical(net, ratio, round_to, scope, seed):
    torch.manual_seed(seed)
    net.eval()
    x = torch.randn(2, 3, 6, 6)
    p = sc.plan(net, x, ratio=ratio, round_to=round_to, scope=scope, criterion="random", seed=seed)
    physical = sc.apply(net, p)
    out = outputs(physical, x)[0]
    assert out.shape == (2, 5)
    assert all(g["size"] - len(g["remove"]) >= 1 for g in p.groups)
    g = sc.trace(net, x)
    exact = {grp.id for grp in g.groups if grp.exact}
    if all(gid in exact for gid in p.removals()):
        torch.testing.assert_close(outputs(sc.apply(net, p, mode="mask"), x)[0], out, atol=1e-5, rtol=1e-4)
