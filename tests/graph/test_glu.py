"""``glu`` gates the first half of a dim by the second: the two halves prune together, element i of one with
element i of the other (a conformer's conv module: pointwise conv to 2x width, GLU, depthwise conv)."""
import torch
from torch import nn

import secateurs as sc


class ConvGLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.glu = nn.Conv1d(16, 2 * 24, 1), nn.GLU(dim=1)
        self.depth, self.down = nn.Conv1d(24, 24, 3, padding=1, groups=24), nn.Conv1d(24, 16, 1)

    def forward(self, x):
        return self.down(self.depth(self.glu(self.up(x)))).mean(-1)


def test_glu_halves_prune_together_and_outputs_match_the_masked_model():
    torch.manual_seed(0)
    m, x = ConvGLU().eval(), torch.randn(2, 16, 7)
    g = sc.trace(m, x)
    assert not g.unsupported, str(g)
    p = sc.plan(m, x, 0.5, graph=g)
    small, masked = sc.apply(m, p), sc.apply(m, p, mode="mask")
    assert small.depth.weight.shape[0] == 12 and small.up.weight.shape[0] == 2 * 12
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), atol=1e-5, rtol=1e-4)
    kept = [i for i in range(24) if any(torch.equal(m.up.weight[i], r) for r in small.up.weight[:12])]
    gates = [i - 24 for i in range(24, 48) if any(torch.equal(m.up.weight[i], r) for r in small.up.weight[12:])]
    assert kept == gates  # channel i and its gate i + 24 leave together
