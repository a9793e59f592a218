"""``x[mask]`` with a boolean mask: the picked elements' dims are blocked only once the result's values are
used. A count of them (multimodal models check ``embeds[placeholder_mask].numel()`` against the features)
leaves the hidden width free; rows picked by a mask over positions keep their channel dims."""
import torch
from torch import nn

import secateurs as sc


class Placeholders(nn.Module):
    """Features scattered into the embeddings of placeholder tokens, after checking that their counts match."""

    def __init__(self):
        super().__init__()
        self.embed, self.feat, self.head = nn.Embedding(10, 32), nn.Linear(8, 32), nn.Linear(32, 10)

    def forward(self, ids, audio):
        e, f = self.embed(ids), self.feat(audio)
        mask = (ids == 9).unsqueeze(-1).expand_as(e)
        if e[mask].numel() != f.numel():
            raise ValueError("placeholders and features do not match")
        return self.head(e.masked_scatter(mask, f))


class PickedRows(nn.Module):
    """Rows picked by a mask over (batch, positions) go through a linear layer: their width stays prunable."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 32), nn.Linear(32, 4)

    def forward(self, x):
        h = self.a(x)
        return self.b(h[x[..., 0] > 0]).sum(0)


class PickedElements(nn.Module):
    """Elements picked by a mask over every dim, used as values: which ones depends on each channel."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 32)

    def forward(self, x):
        h = self.a(x)
        return h[h > 0].sum()


def _ids():
    return torch.tensor([[1, 9, 9, 9, 2, 3]])


def test_a_count_of_masked_embeddings_leaves_the_hidden_width_free():
    torch.manual_seed(0)
    m, x = Placeholders().eval(), (_ids(), torch.randn(3, 8))
    g = sc.trace(m, x)
    assert not g.unsupported, str(g)
    p = sc.plan(m, x, 0.5, graph=g)
    small, masked = sc.apply(m, p), sc.apply(m, p, mode="mask")
    assert small.embed.weight.shape == (10, 16)
    with torch.no_grad():
        torch.testing.assert_close(small(*x), masked(*x), atol=1e-5, rtol=1e-4)


def test_rows_picked_by_a_position_mask_keep_their_channels_prunable():
    torch.manual_seed(0)
    m, x = PickedRows().eval(), torch.randn(2, 5, 8)
    g = sc.trace(m, x)
    assert not g.unsupported, str(g)
    small = sc.apply(m, sc.plan(m, x, 0.5, graph=g))
    assert small.a.weight.shape == (16, 8)
    with torch.no_grad():
        assert small(x).shape == m(x).shape


def test_elements_picked_across_channels_and_used_pin_them():
    m, x = PickedElements().eval(), torch.randn(2, 8)
    g = sc.trace(m, x)
    assert not g.groups and "boolean mask" in str(g)
