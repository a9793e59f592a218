"""Each layer family the core issue lists, pruned on a small model: shapes hold, params drop,
and masks agree with surgery wherever no normalisation spans the pruned channels."""
import pytest
import torch
from torch import nn

import secateurs as sc
from tests.helpers import n_params, outputs


class Conv1d3d(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv1d(2, 12, 3), nn.BatchNorm1d(12), nn.ReLU(), nn.Conv1d(12, 4, 1))
        self.b = nn.Sequential(nn.Conv3d(2, 10, 3), nn.InstanceNorm3d(10, affine=True), nn.Conv3d(10, 4, 1))

    def forward(self, x, v):
        return self.a(x).mean(-1) + self.b(v).mean((-1, -2, -3))


class Transposed(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(16, 12, 4, stride=2, padding=1, groups=4)
        self.act = nn.PReLU(12)
        self.head = nn.Conv2d(12, 3, 1)

    def forward(self, x):
        return self.head(self.act(self.up(torch.relu(self.enc(x)))))


class Normed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.fc = nn.Linear(16 * 4 * 4, 20)
        self.ln = nn.LayerNorm(20)
        self.out = nn.Linear(20, 6)

    def forward(self, x):
        x = torch.nn.functional.adaptive_avg_pool2d(self.gn(self.conv(x)), 4).flatten(1)
        return self.out(self.ln(self.fc(x)).relu())


class TextMHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.cls = nn.Linear(32, 3)

    def forward(self, ids):
        h = self.emb(ids)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.cls((h + self.mlp(h)).mean(1))


CASES = {
    "conv1d_conv3d": (Conv1d3d, (torch.randn(2, 2, 9), torch.randn(2, 2, 5, 5, 5))),
    "conv_transpose_grouped": (Transposed, torch.randn(2, 3, 8, 8)),
    "groupnorm_flatten_layernorm": (Normed, torch.randn(2, 3, 8, 8)),
    "embedding_multihead_attention": (TextMHA, torch.randint(0, 50, (2, 7))),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("granularity", ["channel", "head"])
def test_layer_family(case, granularity):
    torch.manual_seed(0)
    make, x = CASES[case]
    model = make().eval()
    g = sc.trace(model, x)
    p = sc.plan(model, x, ratio=0.5, granularity=granularity, graph=g)
    if granularity == "head" and case != "embedding_multihead_attention":
        assert p.removals() == {}
        return
    assert p.removals() and not p.skipped
    small = sc.apply(model, p)
    ref, out = outputs(model, x), outputs(small, x)
    assert [t.shape for t in out] == [t.shape for t in ref]
    assert n_params(small) < n_params(model)
    if all(g.group(gid).exact for gid in p.removals()):
        masked = outputs(sc.apply(model, p, mode="mask"), x)
        torch.testing.assert_close(masked[0], out[0], atol=1e-5, rtol=1e-4)
    small.train()
    sum(t.float().sum() for t in outputs(small, x, train=True))  # train-mode forward runs


def test_prelu_channels_follow_their_conv():
    model = Transposed().eval()
    small = sc.prune(model, torch.randn(2, 3, 8, 8), ratio=0.5)
    assert small.act.weight.numel() == small.up.out_channels < 12
    # ratio 0.5 removes half of the 16 grouped channels (groups x per-group share the budget), not 1 - 0.5 ** 2
    assert small.up.in_channels == 8 and small.up.in_channels % small.up.groups == 0
    assert small(torch.randn(2, 3, 8, 8)).shape == (2, 3, 8, 8)


def test_multihead_heads_become_slim_module():
    torch.manual_seed(0)
    model = TextMHA().eval()
    x = torch.randint(0, 50, (2, 7))
    small = sc.prune(model, x, ratio=0.5, granularity="head")
    attn = small.attn
    assert type(attn).__name__ == "SlimMultiheadAttention" and attn.num_heads == 2
    assert attn.in_proj_weight.shape == (48, 32) and attn.out_proj.weight.shape == (32, 16)
    y, w = attn(torch.randn(2, 7, 32), torch.randn(2, 7, 32), torch.randn(2, 7, 32))
    assert y.shape == (2, 7, 32) and w.shape == (2, 7, 7)
