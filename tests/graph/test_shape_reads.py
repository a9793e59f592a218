"""Channels read for their shape only stay free; x[mask] = v ties widths; weight norm keeps channels prunable."""
import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

import secateurs as sc


def _prunes(model, x, name):
    """True when the group holding ``name``'s output channels is pruned, and surgery matches masks."""
    p = sc.plan(model, x, 0.5)
    pruned = {t for g in sc.trace(model, x).groups for t, d, _ in g.tensors if d == 0
              and any(gr["id"] == g.id and gr["remove"] for gr in p.groups)}
    small, masked = sc.apply(model, p), sc.apply(model, p, mode="mask")
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), atol=1e-5, rtol=1e-4)
        assert small(x).shape == model(x).shape
    return name in pruned


class LastChannelForShape(nn.Module):
    """BART: ``positions(embeds[:, :, -1])`` reads the last channel only to learn the sequence length."""

    def __init__(self, use_values: bool = False):
        super().__init__()
        self.use_values = use_values
        self.embed = nn.Linear(4, 16)
        self.pos = nn.Embedding(10, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        h = self.embed(x)
        last = h[:, :, -1]
        n = last.shape[1]
        h = h + self.pos(torch.arange(n))
        if self.use_values:
            h = h * last.unsqueeze(-1).sigmoid()
        return self.out(h)


def test_a_position_read_for_its_shape_only_leaves_channels_free():
    x = torch.randn(1, 5, 4)
    assert _prunes(LastChannelForShape().eval(), x, "embed.weight")


def test_a_position_whose_values_are_used_still_pins_channels():
    x = torch.randn(1, 5, 4)
    g = sc.trace(LastChannelForShape(use_values=True).eval(), x)
    assert not any(t == "embed.weight" and d == 0 for grp in g.groups for t, d, _ in grp.tensors)
    assert any("indexing a single position" in u.reason for u in g.unsupported)


def test_a_position_returned_as_output_pins_channels():
    class ReturnsIt(LastChannelForShape):
        def forward(self, x):
            return self.embed(x)[:, :, -1]

    g = sc.trace(ReturnsIt().eval(), torch.randn(1, 5, 4))
    assert not any(t == "embed.weight" for grp in g.groups for t, _, _ in grp.tensors)


class MaskedSteps(nn.Module):
    """Wav2Vec2: ``h[mask] = self.masked_embed`` writes a learned vector at masked time steps."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 16)
        self.masked_embed = nn.Parameter(torch.randn(16))
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        h = self.embed(x)
        mask = torch.zeros(h.shape[:2], dtype=torch.bool)
        mask[:, ::2] = True
        h[mask] = self.masked_embed
        return self.out(h)


def test_masked_assignment_ties_the_width_to_the_assigned_vector():
    model, x = MaskedSteps().eval(), torch.randn(1, 6, 4)
    g = sc.trace(model, x)
    stream = [grp for grp in g.groups if any(t == "embed.weight" and d == 0 for t, d, _ in grp.tensors)]
    assert len(stream) == 1 and ("masked_embed", 0) in {(t, d) for t, d, _ in stream[0].tensors}
    assert _prunes(model, x, "embed.weight")
    assert sc.apply(model, sc.plan(model, x, 0.5)).masked_embed.shape == (8,)


def test_assignment_into_a_channel_position_pins_it():
    class WritesChannel(MaskedSteps):
        def forward(self, x):
            h = self.embed(x)
            h[:, :, 0] = 1.0
            return self.out(h)

    g = sc.trace(WritesChannel().eval(), torch.randn(1, 6, 4))
    assert not any(t == "embed.weight" and d == 0 for grp in g.groups for t, d, _ in grp.tensors)


class PosConv(nn.Module):
    """Wav2Vec2's positional convolution: grouped, weight-normalised over (out, in) per kernel tap."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 16)
        self.conv = weight_norm(nn.Conv1d(16, 16, 3, padding=1, groups=4), name="weight", dim=2)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        h = self.embed(x)
        h = h + self.conv(h.transpose(1, 2)).transpose(1, 2)
        return self.out(h)


def test_weight_normalised_conv_prunes_with_its_stream():
    model, x = PosConv().eval(), torch.randn(1, 6, 4)
    g = sc.trace(model, x)
    stream = [grp for grp in g.groups if any(t == "embed.weight" and d == 0 for t, d, _ in grp.tensors)]
    assert stream and not stream[0].exact  # the norm sums over the channels: removing some rescales the rest
    assert any(t.startswith("conv.parametrizations.weight.original") for grp in stream for t, _, _ in grp.tensors)
    p = sc.plan(model, x, 0.5)
    small = sc.apply(model, p)
    assert small.conv.parametrizations.weight.original1.shape[0] < 16 and small.conv.weight.shape[0] < 16
    with torch.no_grad():
        assert small(x).shape == model(x).shape
        # zeroed channels add nothing to the norm: masks and surgery agree
        masked = sc.apply(model, p, mode="mask")
        torch.testing.assert_close(masked(x), small(x), atol=1e-5, rtol=1e-4)
        model(x)  # masking a copy left the input model's (weight-norm) class alone
        baked = sc.finalize(masked)
        torch.testing.assert_close(baked(x), small(x), atol=1e-5, rtol=1e-4)
    assert set(baked.conv.parametrizations) == {"weight"} and "bias" in baked.conv._parameters
    assert model.conv.weight.shape[0] == 16 and type(model.conv) is not type(masked.conv)
