"""An elementwise op whose inputs split one dim differently (ProphetNet's main and n-gram streams, each
concatenated its own way along the sequence) keeps that dim and leaves the channels free."""
import torch
from torch import nn

import secateurs as sc


class Streams(nn.Module):
    """The sequence is (1 + n) streams of t positions: the residual holds them as one run, the update
    is concatenated per stream and viewed back; the two are added."""

    def __init__(self, d: int = 16, n: int = 2):
        super().__init__()
        self.n = n
        self.inp = nn.Linear(4, d)
        self.proj = nn.Linear(d, d)
        self.out = nn.Linear(d, 3)

    def forward(self, x):  # (B, (1 + n) * t, 4)
        h = self.inp(x)
        b, length, d = h.shape
        t = length // (1 + self.n)
        main, rest = h[:, :t], h[:, t:]
        upd_main = self.proj(main).unsqueeze(1)  # (B, 1, t, d)
        upd_rest = self.proj(rest).view(b, self.n, t, d)  # (B, n, t, d)
        upd = torch.cat([upd_main, upd_rest], 1).view(b, -1, d)
        return self.out(torch.relu(h + upd))


def test_streams_split_differently_keep_the_sequence_and_prune_the_width():
    torch.manual_seed(0)
    model, x = Streams().eval(), torch.randn(1, 9, 4)
    g = sc.trace(model, x)
    assert not g.unsupported, str(g)
    res = next(grp for grp in g.groups if any(t == "inp.weight" and dim == 0 for t, dim, _ in grp.tensors))
    p = sc.plan(model, x, 0.5, graph=g)
    assert next(gr for gr in p.groups if gr["id"] == res.id)["remove"]
    small, masked = sc.apply(model, p), sc.apply(model, p, mode="mask")
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), atol=1e-5, rtol=1e-4)
