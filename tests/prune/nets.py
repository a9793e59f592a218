"""Small real models whose plans exercise every part of the plan format (residuals, grouped convs,
GroupNorm, LayerNorm widths, nn.MultiheadAttention heads, heads held in a module attribute)."""
import torch
from torch import nn


class ResidualCNN(nn.Module):
    """Conv-BN stem, a residual block, a grouped conv with GroupNorm, a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
                                  nn.Conv2d(24, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.norm = nn.GroupNorm(4, 32)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.body(x))
        x = torch.relu(self.norm(self.grouped(x)))
        return self.head(x.mean((2, 3)))


class TinyBlock(nn.Module):
    """A pre-norm transformer block on nn.MultiheadAttention and nn.LayerNorm."""

    def __init__(self, dim: int = 32, heads: int = 4, hidden: int = 48):
        super().__init__()
        self.inp = nn.Linear(6, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.out = nn.Linear(dim, 5)

    def forward(self, x):
        h = self.inp(x)
        a = self.norm1(h)
        h = h + self.attn(a, a, a, need_weights=False)[0]
        h = h + self.mlp(self.norm2(h))
        return self.out(h.mean(1))


class SelfAttention(nn.Module):
    """Attention written by hand: the head count lives in ``self.heads``, which a plan syncs."""

    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, -1))


CNN_X = torch.randn(2, 3, 12, 12)
SEQ_X = torch.randn(2, 5, 6)
ATTN_X = torch.randn(2, 5, 32)
