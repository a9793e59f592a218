"""SDPA broadcasts a batch-1 query over the keys' batch (a Q-Former's learned queries attending to each window
of a sequence): the output's batch dim is the keys', so the reshape after it merges heads, not batches."""
import torch
import torch.nn.functional as F
from torch import nn

import secateurs as sc


class WindowQueries(nn.Module):
    """Two learned queries read each 4-frame window of the input through 4-head cross-attention."""

    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.heads, self.query = heads, nn.Parameter(torch.randn(1, 2, dim))
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        b, t, d = x.shape
        w = x.reshape(b * t // 4, 4, d)
        q = self.q(self.query).view(1, 2, self.heads, -1).transpose(1, 2)
        k = self.k(w).view(w.shape[0], 4, self.heads, -1).transpose(1, 2)
        v = self.v(w).view(w.shape[0], 4, self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # (windows, heads, 2, head_dim)
        out = out.transpose(1, 2).reshape(out.shape[0], 2, -1)
        return self.head(self.o(out)).mean((0, 1))


def test_batch_one_query_broadcast_over_windows_prunes_its_heads():
    torch.manual_seed(0)
    m, x = WindowQueries().eval(), torch.randn(1, 12, 32)
    g = sc.trace(m, x)
    assert not g.unsupported, str(g)
    assert any(grp.kind == "head" for grp in g.groups)
    p = sc.plan(m, x, 0.5, graph=g, granularity="head")
    small, masked = sc.apply(m, p), sc.apply(m, p, mode="mask")
    assert small.q.weight.shape[0] == 16
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), atol=1e-5, rtol=1e-4)
