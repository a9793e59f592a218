"""What ``sc.trace`` decides on two small models, pinned: every group (size, kind, exactness, tensor count,
producers), attribute sync and unsupported reason. Speeding up the tracer must leave these unchanged."""
import gc

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as torch_module

import secateurs as sc
from secateurs.graph.space import Space


class Cell(nn.Module):
    """Two branches (a depthwise separable conv, a pooled pointwise conv) concatenated, squeeze-excited,
    and added back to the input."""

    def __init__(self, c: int):
        super().__init__()
        half = c // 2
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.pw = nn.Conv2d(c, half, 1, bias=False)
        self.bn = nn.BatchNorm2d(half)
        self.pool_pw = nn.Conv2d(c, c - half, 1)
        self.se_reduce = nn.Conv2d(c, 4, 1)
        self.se_expand = nn.Conv2d(4, c, 1)

    def forward(self, x):
        a = F.relu(self.bn(self.pw(self.dw(x))))
        b = self.pool_pw(F.avg_pool2d(x, 3, 1, 1))
        y = torch.cat([a, b], 1)
        s = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(y.mean((2, 3), keepdim=True)))))
        return x + y * s


class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(32, 8, 1)

    def forward(self, x):
        return torch.fft.fft(self.conv(x)).real.mean((2, 3))  # no channel rule


class CellNet(nn.Module):
    """A stem, two cells, a split whose halves take separate convs, a fixed-size view and an op without a rule."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.cells = nn.Sequential(Cell(16), Cell(16))
        self.left, self.right = nn.Conv2d(8, 12, 1), nn.Conv2d(8, 12, 3, padding=1)
        self.mix = nn.Conv2d(24, 32, 1)
        self.odd = Odd()
        self.head = nn.Linear(32 + 8, 10)

    def forward(self, x):
        x = self.cells(self.stem(x))
        left, right = x.chunk(2, 1)
        x = self.mix(torch.cat([self.left(left), F.interpolate(self.right(right), scale_factor=2.0)[..., ::2, ::2]], 1))
        grouped = x.view(x.shape[0], 4, 8, -1).mean(-1).flatten(1)  # 4 x 8 written in code
        return self.head(torch.cat([grouped, self.odd(x)], 1))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Encoder(nn.Module):
    """Patch embedding, a class token and positions, two pre-norm blocks, a head on the class token."""

    def __init__(self, dim: int = 32, depth: int = 2):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"norm1": nn.LayerNorm(dim), "attn": Attention(dim, 4), "norm2": nn.LayerNorm(dim),
                           "fc1": nn.Linear(dim, 2 * dim), "fc2": nn.Linear(2 * dim, dim)}) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        for b in self.blocks:
            x = x + b["attn"](b["norm1"](x))
            x = x + b["fc2"](F.gelu(b["fc1"](b["norm2"](x))))
        return self.head(self.norm(x)[:, 0])


def _digest(g: sc.Graph) -> dict:
    return {"groups": [(grp.size, grp.kind, grp.exact, len(grp.tensors), grp.producers) for grp in g.groups],
            "syncs": [(s["module"], s["attr"], s["layouts"]) for s in g.syncs],
            "unsupported": [(u.reason, u.tensors) for u in g.unsupported]}


CELLS = [f"cells.{i}.{m}" for i in (0, 1) for m in ("dw", "pw", "bn", "pool_pw", "se_expand")]
BLOCKS = [f"blocks.{i}.{m}" for i in (0, 1) for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "fc2")]


def test_cell_net_trace_is_pinned():
    torch.manual_seed(0)
    g = sc.trace(CellNet(), torch.randn(1, 3, 16, 16))
    fixed = ["mix.weight", "mix.bias", "odd.conv.weight", "head.weight"]
    assert _digest(g) == {
        "groups": [(8, "channel", True, 34, ["stem.0", "stem.1"] + CELLS),
                   (4, "channel", True, 3, ["cells.0.se_reduce"]),
                   (4, "channel", True, 3, ["cells.1.se_reduce"]),
                   (12, "channel", True, 3, ["left"]),
                   (12, "channel", True, 3, ["right"])],
        "syncs": [(f"cells.{i}.dw", "groups", [["cat", [["g", 0, 8], ["g", 0, 8]]]]) for i in (0, 1)],
        "unsupported": [("size 4 fixed in code in <model>", fixed),
                        ("size 8 fixed in code in <model>", fixed),
                        ("fft_fft in odd: no channel rule for this op",
                         ["odd.conv.weight", "odd.conv.bias", "head.weight"])]}


def test_encoder_trace_is_pinned():
    torch.manual_seed(0)
    g = sc.trace(Encoder(), torch.randn(1, 3, 16, 16))
    width = [["prod", [["g", 0, 4], ["g", 1, 8]]]]
    assert _digest(g) == {
        "groups": [(4, "head", False, 33, ["patch"] + BLOCKS + ["norm"]),
                   (8, "channel", False, 33, ["patch"] + BLOCKS + ["norm"]),
                   (64, "channel", True, 3, ["blocks.0.fc1"]),
                   (64, "channel", True, 3, ["blocks.1.fc1"])],
        "syncs": [s for i in (0, 1) for s in ((f"blocks.{i}.norm1", "normalized_shape", width),
                                              (f"blocks.{i}.attn", "num_heads", [["g", 0, 4]]),
                                              (f"blocks.{i}.norm2", "normalized_shape", width))]
        + [("norm", "normalized_shape", width)],
        "unsupported": []}


class Raises(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        raise RuntimeError("boom")


def test_trace_removes_its_module_hooks_even_when_the_forward_fails():
    before = (dict(torch_module._global_forward_pre_hooks), dict(torch_module._global_forward_hooks))
    sc.trace(CellNet(), torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="boom"):
        sc.trace(Raises(), torch.randn(1, 3, 4, 4))
    assert (dict(torch_module._global_forward_pre_hooks), dict(torch_module._global_forward_hooks)) == before


def test_trace_leaves_no_spaces_for_the_garbage_collector():
    """Spaces are freed as soon as the trace is done with them: a trace that left thousands of them in
    reference cycles made the collector rescan every object of the process, often mid-trace."""
    model, x = CellNet(), torch.randn(1, 3, 16, 16)
    gc.collect()
    gc.disable()
    try:
        sc.trace(model, x)
        left = sum(type(o) is Space for o in gc.get_objects())
    finally:
        gc.enable()
    assert left == 0


def test_rule_registry_is_filled_in_the_same_order_in_every_process():
    """Rules registered from a set of op names once followed the string hash seed; now every process
    (whatever PYTHONHASHSEED) lists the same rules in the same order."""
    import os
    import subprocess
    import sys

    code = "from secateurs.graph.rules import RULES; print(' '.join(RULES))"
    orders = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert len(orders) == 1 and "logsumexp" in orders.pop()
