"""Provenance of Python ints beyond ``//``: split size lists held in attributes, sums and differences
of tracked sizes, each followed only where the result stays right whatever the origins lose."""
import copy
import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
from secateurs.graph.sizes import Size, Sum
from tests.graph.pruning import pruned, pruned_fully_traced


class GatedSplit(nn.Module):
    """A gated MLP split by a tuple attribute (MambaOut-like): gate, identity part, conv part."""

    def __init__(self, dim=12, hidden=24, conv=8):
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.split_indices = (hidden, hidden - conv, conv)
        self.conv = nn.Conv1d(conv, conv, 3, padding=1, groups=conv)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):  # (B, N, dim)
        g, i, c = torch.split(self.fc1(x), self.split_indices, dim=-1)
        c = self.conv(c.transpose(1, 2)).transpose(1, 2)
        return x + self.fc2(torch.relu(g) * torch.cat((i, c), dim=-1))


class ListSplit(nn.Module):
    """Split sizes in a list attribute, one piece per branch (MixConv-like), one piece left whole."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 1)
        self.splits = [8, 10, 6]
        self.branches = nn.ModuleList(nn.Conv2d(n, n, 3, padding=1, groups=n) for n in self.splits[:2])
        self.head = nn.Conv2d(24, 5, 1)

    def forward(self, x):
        parts = torch.split(self.stem(x), self.splits, 1)
        return self.head(torch.cat([b(p) for b, p in zip(self.branches, parts)] + [parts[2]], 1))


def test_split_list_attributes_follow_each_piece():
    m = GatedSplit().eval()
    x = torch.randn(1, 5, 12)
    g = sc.trace(m, x)
    assert not g.unsupported, str(g)
    assert [(s["module"], s["attr"], len(s["layouts"])) for s in g.syncs if s["attr"] == "split_indices"] == [
        ("", "split_indices", 3)]
    p, small = pruned(m, x, graph=g)
    assert type(small.split_indices) is tuple and all(type(n) is int for n in small.split_indices)
    hidden, rest, conv = small.split_indices
    assert hidden == rest + conv == small.fc2.in_features < 24 and conv == small.conv.in_channels < 8
    assert small.fc1.out_features == 2 * hidden
    assert m.split_indices == (24, 16, 8) and type(m.split_indices[0]) is int  # the model is untouched

    m = ListSplit().eval()
    x = torch.randn(1, 3, 6, 6)
    assert not sc.trace(m, x).unsupported
    small = pruned(m, x)[1]
    assert type(small.splits) is list and small.splits[:2] == [b.in_channels for b in small.branches]
    assert sum(small.splits) == small.stem.out_channels < 24 and small.splits[2] < 6


class FocalSplit(nn.Module):
    """timm FocalNet's modulation: ``split(self.f(x), self.input_split)`` into query, context and a few
    gates, with another attribute of the same value (``hidden``) so matching values cannot tell them apart."""

    def __init__(self, dim=12, gates=3):
        super().__init__()
        self.dim, self.hidden = dim, dim
        self.input_split = [dim, dim, gates]
        self.f = nn.Linear(dim, 2 * dim + gates)
        self.h = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        q, ctx, gates = torch.split(self.f(x), self.input_split, -1)
        return x + self.proj(q * self.h(ctx * gates[..., :1] + ctx.mean(1, keepdim=True) * gates[..., 2:]))


def test_focalnet_input_split_follows_each_piece():
    m = FocalSplit().eval()
    x = torch.randn(1, 5, 12)
    p, small = pruned(m, x)
    assert small.input_split[:2] == [small.proj.in_features] * 2 and small.input_split[2] == 3
    assert small.f.out_features == sum(small.input_split) < 27


def test_split_list_sync_is_validated(tmp_path):
    m = GatedSplit().eval()
    x = torch.randn(1, 5, 12)
    p = sc.plan(m, x, ratio=0.3)
    i = next(k for k, s in enumerate(p.syncs) if s["attr"] == "split_indices")
    again = sc.Plan.from_json(p.to_json())
    assert again.syncs[i] == p.syncs[i]
    sc.apply(m, again)

    def edited(edit):
        data = json.loads(p.to_json())
        edit(data["syncs"][i])
        return json.dumps(data)

    bad = edited(lambda s: s.update(attr="kernel_sizes"))
    with pytest.raises(ValueError, match="sets 'kernel_sizes' of module ''; a plan may only set"):
        sc.Plan.from_json(bad)
    short = copy.deepcopy(p)
    short.syncs[i]["layouts"] = short.syncs[i]["layouts"][:2]
    with pytest.raises(ValueError, match=r"sync .split_indices: GatedSplit holds \(24, 16, 8\) there"):
        sc.apply(m, short)
    other = copy.deepcopy(p)
    other.syncs[i]["module"] = "conv"  # Conv1d has no split_indices
    with pytest.raises(ValueError, match="sync conv.split_indices: Conv1d holds None there"):
        sc.apply(m, other)


class PartialAttention(nn.Module):
    """Attention over the first ``pdim`` channels, the rest passed through (SHViT-like)."""

    def __init__(self, dim=16, pdim=6):
        super().__init__()
        self.dim, self.pdim = dim, pdim
        self.stem = nn.Conv2d(3, dim, 1)
        self.qkv = nn.Conv2d(pdim, 3 * pdim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.head = nn.Conv2d(dim, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        B, _, H, W = x.shape
        x1, x2 = torch.split(x, [self.pdim, self.dim - self.pdim], dim=1)
        q, k, v = self.qkv(x1).flatten(2).chunk(3, dim=1)
        x1 = (v @ (q.transpose(1, 2) @ k).softmax(-1)).reshape(B, self.pdim, H, W)
        return self.head(x + self.proj(torch.cat([x1, x2], 1)))


class PinnedTail(nn.Module):
    """``[dim - 2, 2]``: a plain int pins its piece, the difference follows the rest."""

    def __init__(self, dim=16):
        super().__init__()
        self.dim = dim
        self.stem = nn.Conv2d(3, dim, 1)
        self.mix = nn.Conv2d(dim - 2, dim - 2, 1)
        self.head = nn.Conv2d(dim, 4, 1)

    def forward(self, x):
        a, b = torch.split(self.stem(x), [self.dim - 2, 2], 1)
        return self.head(torch.cat([self.mix(a), b], 1))


class Unrelated(PartialAttention):
    """``[pdim, dim - qk_dim]``: the difference does not name the other piece's size, so it is pinned."""

    def __init__(self):
        super().__init__()
        self.qk_dim = self.pdim

    def forward(self, x):
        x = self.stem(x)
        x1, x2 = torch.split(x, [self.pdim, self.dim - self.qk_dim], dim=1)
        return self.head(torch.cat([self.qkv(x1)[:, :self.pdim], x2], 1))


def test_split_difference_follows_what_the_other_pieces_leave():
    m = PartialAttention().eval()
    x = torch.randn(1, 3, 4, 4)
    p, small = pruned_fully_traced(m, x)
    assert not p.skipped
    assert small.stem.out_channels == small.dim < 16 and small.qkv.in_channels == small.pdim < 6
    assert type(small.dim) is int and type(m.dim) is int and m.dim == 16

    m = PinnedTail().eval()
    x = torch.randn(1, 3, 4, 4)
    assert [u.reason for u in sc.trace(m, x).unsupported] == ["size 2 fixed in code in <model>"]
    small = pruned(m, x)[1]
    assert small.mix.in_channels == small.dim - 2 and small.dim < 16

    m = Unrelated().eval()
    g = sc.trace(m, torch.randn(1, 3, 4, 4))
    assert any("fixed in code" in u.reason for u in g.unsupported), str(g)
    pruned(m, torch.randn(1, 3, 4, 4))


class SumView(nn.Module):
    """A view sized by the sum of two branches' widths: the concatenation they make."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 6, 1)
        self.head = nn.Linear(14 * 16, 5)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], 1)
        B = x.shape[0]
        y = y.reshape(B, self.a.out_channels + self.b.out_channels, -1)
        return self.head(y.flatten(1))


def test_sum_of_sizes_follows_the_concatenation_of_its_terms():
    m = SumView().eval()
    x = torch.randn(1, 3, 4, 4)
    small = pruned_fully_traced(m, x)[1]
    assert small.a.out_channels < 8 and small.b.out_channels < 6
    assert small.head.in_features == 16 * (small.a.out_channels + small.b.out_channels)


@given(st.integers(1, 50), st.integers(1, 50), st.integers(-5, 5), st.integers(1, 4))
def test_tracked_arithmetic_has_int_values(a, b, k, d):
    x, y = Size(a * d, attr=("m", "dim")), Size(b, attr=("m", "pdim"))
    for got, want in [(x - y, a * d - b), (x + y + k, a * d + b + k), (k - x, k - a * d), (x - y - x, -b),
                      ((x // d) * d, a * d), (x * 2, 2 * a * d), (x + 0.5, a * d + 0.5)]:
        assert got == want and type(got) in (int, float, Size, Sum)
    s = x - y
    assert isinstance(s, Sum) and [(c, t.attr[1]) for c, t in s.terms] == [(1, "dim"), (-1, "pdim")]
    assert type(copy.deepcopy(s)) is int and type(x - x) is int


class HeadMajorOut(nn.Module):
    """Attention whose output is permuted head-dim-major before ``reshape(B, N, C)`` (NesT-like)."""

    def __init__(self, dim=24, heads=4):
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(5, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.embed(x)
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = (q @ k.transpose(-2, -1)).softmax(-1) @ v  # (B, heads, N, C // heads)
        y = y.permute(0, 2, 3, 1).reshape(B, N, C)  # (head_dim x heads), the same channels in another order
        return self.head(x + self.proj(y))


class ScaleByShape(nn.Module):
    """A layer scale viewed through a tuple attribute (timm metaformer's ``scale.view(self.shape)``)."""

    def __init__(self, dim=16):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 1)
        self.shape = (dim, 1, 1)
        self.scale = nn.Parameter(torch.rand(dim))
        self.head = nn.Conv2d(dim, 4, 1)

    def forward(self, x):
        return self.head(self.stem(x) * self.scale.view(self.shape))


class PackedKV(nn.Module):
    """k and v packed in one projection, viewed with ``dim_head_qk + dim_head_v`` (halo attention-like)."""

    def __init__(self, qk=6, v=10):
        super().__init__()
        self.dim_head_qk, self.dim_head_v = qk, v
        self.q = nn.Conv2d(3, qk, 1)
        self.kv = nn.Conv2d(3, qk + v, 1)
        self.out = nn.Conv2d(v, 4, 1)

    def forward(self, x):
        B, _, H, W = x.shape
        kv = self.kv(x).reshape(B, self.dim_head_qk + self.dim_head_v, H * W).transpose(1, 2)
        k, v = torch.split(kv, [self.dim_head_qk, self.dim_head_v], dim=-1)
        q = self.q(x).flatten(2).transpose(1, 2)
        y = ((q @ k.transpose(1, 2)).softmax(-1) @ v).transpose(1, 2).reshape(B, self.dim_head_v, H, W)
        return self.out(y)


def test_widths_read_back_in_another_factor_order_or_from_tuples_and_sums_prune():
    m = HeadMajorOut().eval()
    x = torch.randn(1, 7, 5)
    p, small = pruned_fully_traced(m, x)
    assert not p.skipped and small.embed.out_features < 24

    m = ScaleByShape().eval()
    x = torch.randn(1, 3, 4, 4)
    assert not sc.trace(m, x).unsupported
    p, small = pruned(m, x)
    assert not p.skipped and small.shape == (small.stem.out_channels, 1, 1) and small.shape[0] < 16

    m = PackedKV().eval()
    x = torch.randn(1, 3, 4, 4)
    assert not sc.trace(m, x).unsupported
    p, small = pruned(m, x)
    assert not p.skipped and small.dim_head_qk < 6 and small.dim_head_v == small.out.in_channels < 10
    assert small.kv.out_channels == small.dim_head_qk + small.dim_head_v


class HeadSplitConvs(nn.Module):
    """Heads split into unequal runs, a depthwise conv per run, concatenated and read back as
    (heads, head_dim) (CoaT's convolutional position encoding), then a Conv1d over stacked tokens
    whose length is the channel dim (CoaT's aggregate)."""

    def __init__(self, heads=4, hd=6):
        super().__init__()
        self.heads = heads
        self.v = nn.Linear(5, heads * hd)
        self.channel_splits = [1 * hd, 3 * hd]
        self.convs = nn.ModuleList(nn.Conv2d(n, n, 3, padding=1, groups=n) for n in self.channel_splits)
        self.aggregate = nn.Conv1d(2, 1, 1)
        self.head = nn.Linear(heads * hd, 3)

    def forward(self, x):  # (B, H*W, 5), H = W = 3
        v = self.v(x)
        B, N, C = v.shape
        v = v.reshape(B, N, self.heads, C // self.heads).permute(0, 2, 3, 1)  # (B, heads, hd, N)
        _, h, hd, _ = v.shape
        img = v.reshape(B, h * hd, 3, 3)
        img = torch.cat([conv(p) for conv, p in zip(self.convs, torch.split(img, self.channel_splits, 1))], 1)
        y = img.reshape(B, h, hd, N).permute(0, 3, 1, 2).reshape(B, N, C)
        y = self.aggregate(torch.stack([y.mean(1), v.mean(-1).flatten(1)], dim=1)).squeeze(1)
        return self.head(y)


def test_unequal_head_runs_read_back_as_heads_and_conv_lengths_stay_tied():
    m = HeadSplitConvs().eval()
    x = torch.randn(1, 9, 5)
    g = sc.trace(m, x)
    assert [u.reason for u in g.unsupported] == ["stack index"], str(g)  # the aggregate's input channels
    p, small = pruned(m, x)
    # the aggregate's length is the head's input: pruned together, not caught late
    assert not [s for s in p.skipped if "id" in s]
    assert small.head.in_features == small.v.out_features < 24
    assert small.channel_splits == [c.in_channels for c in small.convs]


class ChannelAttention(nn.Module):
    """``reshape(B, N, C)`` with C read from a residual made of chunks, sizing an attention output whose
    width is its own (EdgeNeXt's XCA): the residual may shrink only as heads x head_dim do."""

    def __init__(self, dim=16, heads=2, pieces=2):
        super().__init__()
        self.heads, self.pieces = heads, pieces
        self.embed = nn.Linear(5, dim)
        self.conv = nn.Linear(-(-dim // pieces), -(-dim // pieces))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        a, *rest = self.embed(x).chunk(self.pieces, dim=-1)
        x = torch.cat([self.conv(a), *rest], -1)
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, -1).permute(2, 0, 3, 4, 1).unbind(0)
        y = ((q @ k.transpose(-2, -1)).softmax(-1) @ v).permute(0, 3, 1, 2).reshape(B, N, C)
        return self.head(x + self.proj(y))


def test_a_size_that_cannot_follow_pins_the_dimension_it_was_read_from():
    m = ChannelAttention(pieces=3).eval()  # chunks of 6, 6 and 4: no (heads x head_dim) reading
    x = torch.randn(1, 4, 5)
    g = sc.trace(m, x)
    assert any(u.reason.startswith("size 16 read from this dimension is fixed in code") for u in g.unsupported), str(g)
    p, small = pruned(m, x)
    assert not [s for s in p.skipped if "id" in s]  # nothing left for verification to catch
    assert small.embed.out_features == 16


@pytest.mark.parametrize("heads", [2, 4])
def test_a_residual_of_equal_chunks_follows_heads_times_head_dim(heads):
    m = ChannelAttention(heads=heads).eval()  # (2 chunks x 8) read as (heads x 16 // heads)
    x = torch.randn(1, 4, 5)
    g = sc.trace(m, x)
    assert not g.unsupported, str(g)
    small = sc.prune(m, x, 0.3, verify=False)  # softmax over head_dim: pruned != masked, so check the indices
    with torch.no_grad():
        assert small(x).shape == m(x).shape
    kept = [m.embed.bias.tolist().index(b) for b in small.embed.bias.tolist()]
    half = len(kept) // 2
    assert 0 < half < 8 and kept[half:] == [i + 8 for i in kept[:half]]  # both chunks keep the same offsets
    assert small.proj.in_features == 2 * small.conv.in_features == 2 * half


class CrossStage(nn.Module):
    """The expanded width split in two halves by an attribute (timm CSPNet's ``expand_chs // 2``)."""

    def __init__(self):
        super().__init__()
        self.expand_chs = 16
        self.conv_exp = nn.Conv2d(3, 16, 1)
        self.block = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        xs, xb = self.conv_exp(x).split(self.expand_chs // 2, dim=1)
        return self.head(torch.cat([xs, self.block(xb)], 1))


def test_split_in_halves_by_an_attribute_syncs_it():
    m = CrossStage().eval()
    x = torch.randn(1, 3, 4, 4)
    assert not sc.trace(m, x).unsupported
    small = pruned(m, x)[1]
    assert small.expand_chs == small.conv_exp.out_channels == 2 * small.block.in_channels < 16


class DualPath(nn.Module):
    """A width sliced at an attribute into a residual part and a dense part (timm DPN's ``num_1x1_c``)."""

    def __init__(self):
        super().__init__()
        self.num_1x1_c = 12
        self.proj = nn.Conv2d(3, 12 + 4, 1)
        self.body = nn.Conv2d(12 + 4, 12 + 4, 1)
        self.head = nn.Conv2d(12 + 8, 5, 1)

    def forward(self, x):
        x = self.proj(x)
        y = self.body(x)
        resid = x[:, :self.num_1x1_c] + y[:, :self.num_1x1_c]
        return self.head(torch.cat([resid, x[:, self.num_1x1_c:], y[:, self.num_1x1_c:]], 1))


def test_slices_at_an_attribute_sync_it():
    m = DualPath().eval()
    x = torch.randn(1, 3, 4, 4)
    assert not sc.trace(m, x).unsupported
    small = pruned(m, x)[1]
    assert small.num_1x1_c < 12 and small.head.in_channels == small.proj.out_channels + small.body.out_channels - \
        small.num_1x1_c


class ValueWidth(nn.Module):
    """Attention output reshaped to ``self.dh`` channels (timm EfficientFormerV2's value width)."""

    def __init__(self, heads=2, hd=6):
        super().__init__()
        self.heads, self.dh = heads, heads * hd
        self.v = nn.Conv2d(3, heads * hd, 1)
        self.proj = nn.Conv2d(heads * hd, 4, 1)

    def forward(self, x):
        B, _, H, W = x.shape
        v = self.v(x).reshape(B, self.heads, -1, H * W).permute(0, 1, 3, 2)
        y = (v.softmax(-1) @ v.transpose(-1, -2) @ v).transpose(2, 3)
        return self.proj(y.reshape(B, self.dh, H, W))


def test_reshape_to_an_attribute_width_syncs_it():
    m = ValueWidth().eval()
    x = torch.randn(1, 3, 4, 4)
    assert not sc.trace(m, x).unsupported
    small = pruned(m, x)[1]
    assert small.dh == small.v.out_channels < 12


class PartialConv(nn.Module):
    """A conv over the first part of a width, the rest passed through (timm FasterNet's split)."""

    def __init__(self, dim=16):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 1)
        self.dim_conv3, self.dim_untouched = dim // 4, dim - dim // 4
        self.partial_conv3 = nn.Conv2d(dim // 4, dim // 4, 3, padding=1)
        self.head = nn.Conv2d(dim, 4, 1)

    def forward(self, x):
        x1, x2 = torch.split(self.stem(x), [self.dim_conv3, self.dim_untouched], dim=1)
        return self.head(torch.cat([self.partial_conv3(x1), x2], 1))


def test_split_by_two_attributes_syncs_both():
    m = PartialConv().eval()
    x = torch.randn(1, 3, 4, 4)
    assert not sc.trace(m, x).unsupported
    small = pruned(m, x)[1]
    assert small.dim_conv3 == small.partial_conv3.in_channels < 4 or small.dim_untouched < 12
    assert small.dim_conv3 + small.dim_untouched == small.stem.out_channels < 16


def test_sums_of_products_keep_their_terms_and_where_the_constant_was_written():
    heads, kv, hd = (Size(n, attr=("attn", a))
                     for n, a in ((4, "num_heads"), (2, "num_key_value_heads"), (8, "head_dim")))
    s = heads * hd + kv * hd  # Phi-3's slice bound: queries then keys
    assert isinstance(s, Sum) and s == 48 and [(c, [f.attr[1] for f in t.factors]) for c, t in s.terms] == [
        (1, ["num_heads", "head_dim"]), (1, ["num_key_value_heads", "head_dim"])]
    assert (heads + 2).tail and not (2 + heads).tail and not (heads + 2 + kv).tail and (heads + kv + 2).tail
    assert type(copy.deepcopy(s)) is int and type(copy.deepcopy(heads * hd)) is int


class TailPicked(nn.Module):
    """Falcon-like: the last two channels are shared, read from the end (``[:, :-2]``, ``[:, [-2]]``, ``[:, -1:]``)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 10, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.a(x)
        return self.head(y[:, :-2] * y[:, [-2]] + y[:, -1:])


def test_positions_counted_from_the_end_pin_only_the_tail():
    m = TailPicked().eval()
    x = torch.randn(1, 3, 4, 4)
    plan, small = pruned(m, x)
    assert small.a.out_channels < 10 and small.head.in_channels == small.a.out_channels - 2
    with torch.no_grad():
        torch.testing.assert_close(small(x), sc.apply(m, plan, mode="mask")(x), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(small.a.weight[-2:], m.a.weight[-2:])  # the picked tail stays as it was


class WholeFromEnd(nn.Module):
    """``y[:, -10:]`` of a 10-channel ``y``: a count from the end that spans the dimension keeps spanning it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 10, 1)
        self.head = nn.Conv2d(10, 4, 1)

    def forward(self, x):
        return self.head(self.a(x)[:, -10:])


def test_a_count_from_the_end_spanning_the_dimension_leaves_it_free():
    small = pruned_fully_traced(WholeFromEnd().eval(), torch.randn(1, 3, 4, 4))[1]
    assert small.a.out_channels < 10 and small.head.in_channels == small.a.out_channels


class FixedFactorWidth(nn.Module):
    """``reshape(B, N, C * self.kernel_size)`` with C read from the residual and a kernel size no plan
    may change (timm VOLO's ``C * kernel_size * kernel_size`` before its fold)."""

    def __init__(self, dim=8):
        super().__init__()
        self.kernel_size = 3
        self.embed = nn.Linear(4, dim)
        self.mix = nn.Linear(3 * dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.embed(x)
        B, N, C = x.shape
        y = torch.stack([x, x.sin(), x.cos()], -1).reshape(B, N, C * self.kernel_size)
        return self.head(x + self.mix(y))


def test_a_product_with_a_fixed_factor_follows_its_tracked_factor():
    m = FixedFactorWidth().eval()
    x = torch.randn(1, 5, 4)
    assert not sc.trace(m, x).unsupported
    p = sc.plan(m, x, 0.3, verify=False)
    small, masked = sc.apply(m, p), sc.apply(m, p, mode="mask")
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), atol=1e-5, rtol=1e-4)
    assert small.mix.in_features == 3 * small.embed.out_features < 24 and small.kernel_size == 3


class OutWidth(nn.Module):
    """``reshape(B, -1, self.<attr>)`` sizing an attention's output width, with ``self.dim`` of the same
    value beside it (timm hiera's ``self.dim_out``)."""

    def __init__(self, attr: str, free: bool = True, dim=8):
        super().__init__()
        self.attr, self.free, self.dim = attr, free, dim
        setattr(self, attr, dim)
        self.embed, self.qkv = nn.Linear(4, dim), nn.Linear(dim, 3 * dim)
        self.proj, self.head = nn.Linear(dim, dim), nn.Linear(dim, 3)

    def forward(self, x):
        x = self.embed(x)
        B, N, _ = x.shape
        q, k, v = self.qkv(x).chunk(3, -1)
        y = (q * k).softmax(-1) * v
        return self.head(x + self.proj(y.reshape(B, -1 if self.free else N, getattr(self, self.attr))))


@pytest.mark.parametrize("free", [True, False])  # with or without a -1 beside the width
@pytest.mark.parametrize("attr", ["dim_out", "image_dim_out", "out_width"])  # image_dim_out: Phi-4-multimodal
def test_a_width_read_from_an_attribute_follows_it_or_is_pinned_never_matched_to_another(attr, free):
    m = OutWidth(attr, free).eval()
    x = torch.randn(1, 5, 4)
    small = sc.prune(m, x, 0.3, verify=False)  # no check that catches a mismatch afterwards
    with torch.no_grad():
        assert small(x).shape == m(x).shape
    if attr != "out_width":  # an attribute a plan sets: the attention width follows it
        assert getattr(small, attr) == small.proj.in_features < 8
    else:  # no plan may set it: the width stays, and the trace says why
        assert small.out_width == small.proj.in_features == 8
        assert any(u.reason.startswith("size 8 fixed in code") for u in sc.trace(m, x).unsupported)
