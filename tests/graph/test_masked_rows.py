"""``x[mask]`` with a boolean mask: rows picked by the data, the dims the mask spans whole stay prunable."""
import torch
from torch import nn

import secateurs as sc

from .pruning import pruned_fully_traced


class AudioTokens(nn.Module):
    """An audio tower's valid frames (``feats[valid]``) written over the audio placeholders' embeddings,
    after the placeholder count is checked with ``embeds[mask].numel()`` (Hugging Face's audio LMs)."""

    def __init__(self, d=16, vocab=10, mels=6):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.tower = nn.Sequential(nn.Linear(mels, 24), nn.GELU(), nn.Linear(24, 20))
        self.project = nn.Linear(20, d)
        self.mlp = nn.Sequential(nn.Linear(d, 32), nn.GELU(), nn.Linear(32, d))
        self.head = nn.Linear(d, vocab)
        self.register_buffer("ids", torch.tensor([[1, 5, 5, 5, 2, 3]]))
        self.register_buffer("valid", torch.tensor([[True, True, False, True]]))

    def forward(self, frames):  # frames: (1, 4, mels)
        h = self.embed(self.ids)
        feats = self.project(self.tower(frames))[self.valid]  # (3, d): the valid frames
        mask = (self.ids == 5).unsqueeze(-1).expand_as(h)
        if h[mask].numel() != feats.numel():
            raise ValueError("audio tokens and features do not match")
        h = h.masked_scatter(mask, feats)
        return self.head(h + self.mlp(h))


def test_boolean_mask_rows_keep_the_widths_they_carry_prunable():
    torch.manual_seed(0)
    m, x = AudioTokens().eval(), torch.randn(1, 4, 6)
    p, small = pruned_fully_traced(m, x)
    assert small.embed.weight.shape[1] < 16 and small.project.weight.shape[0] == small.embed.weight.shape[1]
    assert small.tower[2].weight.shape[0] < 20 and small.tower[0].weight.shape[0] < 24
    with torch.no_grad():
        torch.testing.assert_close(small(x), sc.apply(m, p, mode="mask")(x), atol=1e-5, rtol=1e-4)


class PositiveMean(nn.Module):
    """A mask that varies along the channels (``h[h > 0]``): which channels each row keeps is data."""

    def __init__(self, d=16):
        super().__init__()
        self.inp, self.out = nn.Linear(4, d), nn.Linear(d, 3)

    def forward(self, x):
        h = self.inp(x)
        return self.out(h) * h[h > 0].mean()


def test_boolean_mask_varying_along_the_channels_pins_them():
    m, x = PositiveMean().eval(), torch.randn(2, 4)
    g = sc.trace(m, x)
    assert [u.reason for u in g.unsupported] == ["positions selected by a boolean mask in <model>"]
    assert sc.apply(m, sc.plan(m, x, ratio=0.5, graph=g)).inp.out_features == 16
