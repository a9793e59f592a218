"""Tracer coverage: no crash where the forward runs, nothing left unpruned without a reason, sizes
that follow where they were read from, batch size 1, ratios over factored channel dims."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import secateurs as sc
from secateurs.graph.rules import RULES
from tests.graph.pruning import pruned, pruned_fully_traced


class RelPos(nn.Module):
    """An activation of 4 dims times a 2-D parameter (relative-position logits) and (B, N, D) @ (D, 1)."""

    def __init__(self, d=8, w=5):
        super().__init__()
        self.inp = nn.Linear(4, d)
        self.rel_k = nn.Parameter(torch.randn(2 * w - 1, d))
        self.w_g = nn.Parameter(torch.randn(d, 1))
        self.out = nn.Linear(2 * w - 1, 3)

    def forward(self, x):  # x: (B, H, W, 4)
        q = self.inp(x)
        logits = q @ self.rel_k.transpose(-1, -2)
        gate = q.flatten(1, 2) @ self.w_g
        return self.out(logits).mean((1, 2)) + gate.mean(1)


def test_matmul_of_activation_and_2d_parameter_traces_and_prunes():
    m = RelPos().eval()
    x = torch.randn(1, 5, 5, 4)
    g = sc.trace(m, x)
    names = {t for grp in g.groups for t, _, _ in grp.tensors}
    assert {"inp.weight", "rel_k", "w_g"} <= names
    pruned(m, x)


class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c(self.b(torch.relu(self.a(x))))


def test_a_failing_rule_marks_the_op_unsupported_and_the_trace_goes_on(monkeypatch):
    def broken(tr, call):
        raise IndexError("rule bug")

    monkeypatch.setitem(RULES, "relu", broken)
    g = sc.trace(Boom(), torch.randn(1, 3, 4, 4))
    assert any(u.reason.startswith("relu in <model>") and "IndexError: rule bug" in u.reason for u in g.unsupported)
    prunable = {t for grp in g.groups for t, _, _ in grp.tensors}
    assert "a.weight" not in prunable and "b.weight" in prunable


class AddMM(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 10))
        self.bias = nn.Parameter(torch.randn(10))
        self.w3 = nn.Parameter(torch.randn(1, 10, 4))
        self.head = nn.Linear(4, 2)

    def forward(self, x):  # x: (N, 6)
        h = torch.addmm(self.bias, mat1=x, mat2=self.w).relu()
        y = torch.baddbmm(torch.zeros(1, 1, 4), batch1=h[None], batch2=self.w3)
        return self.head(y[0])


def test_rules_read_arguments_by_name():
    m = AddMM()
    g = sc.trace(m, torch.randn(3, 6))
    hidden = [grp for grp in g.groups if grp.size == 10]
    assert len(hidden) == 1 and {"w", "bias", "w3"} <= {t for t, _, _ in hidden[0].tensors}
    pruned(m, torch.randn(3, 6))


class AuxNet(nn.Module):
    """BatchNorm on a 1x1 map and an auxiliary head that only runs in training (inception-like)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.aux = nn.Conv2d(16, 5, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        h = self.body(x)
        out = self.fc(h.flatten(1))
        return (out, self.aux(h).flatten(1)) if self.training else out


def test_batch_size_one_traces_and_verifies():
    m = AuxNet().eval()
    x = torch.randn(1, 3, 8, 8)
    g = sc.trace(m, x)
    assert g.modes == ["eval", "train"] and m.body[1].running_mean.abs().sum() == 0
    small = sc.prune(m, x, ratio=0.3)
    assert small.body[0].out_channels < 16 and small(x).shape == (1, 5)


class KNN(nn.Module):
    """A DGCNN-like k-NN: pairwise distances from x^T x pick neighbours."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv1d(3, 16, 1)
        self.edge = nn.Conv1d(16, 16, 1)
        self.head = nn.Conv1d(16, 4, 1)

    def forward(self, x):  # x: (B, 3, N)
        h = self.embed(x)
        inner = -2 * torch.matmul(h.transpose(2, 1), h)
        sq = (h ** 2).sum(1, keepdim=True)
        dist = -sq - inner - sq.transpose(2, 1)
        near = dist.topk(k=2, dim=-1)[0].mean(-1, keepdim=True).transpose(1, 2)
        return self.head(self.edge(h) + near)


def test_self_contraction_is_reported_not_silently_dropped():
    m = KNN().eval()
    x = torch.randn(1, 3, 10)
    g = sc.trace(m, x)
    [u] = [u for u in g.unsupported if "x^T x" in u.reason]
    assert "matmul" in u.reason and "embed.weight" in u.tensors and "Left unpruned" in str(g)
    p = sc.plan(m, x, ratio=0.3)
    assert any("x^T x" in s["reason"] and "embed.weight" in s["tensors"] for s in p.skipped)
    assert "x^T x" in str(p)


def _gn_net():
    return nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.GroupNorm(8, 64), nn.ReLU(),
                         nn.Conv2d(64, 64, 3, padding=1, groups=8), nn.GroupNorm(8, 64), nn.ReLU(),
                         nn.Conv2d(64, 8, 1))


def test_ratio_under_groupnorm_and_grouped_conv_counts_channels():
    m = _gn_net().eval()
    x = torch.randn(1, 3, 6, 6)
    small = pruned(m, x)[1]
    for conv in (small[0], small[3]):
        removed = 1 - conv.out_channels / 64
        assert 0.25 <= removed <= 0.35, (conv, removed)  # 0.3 of the channels, not 1 - 0.7 ** 2
    assert small[1].num_groups * (small[1].num_channels // small[1].num_groups) == small[1].num_channels
    p = sc.plan(m, x, ratio=0.3, round_to=4)
    assert sc.apply(m, p)[0].out_channels % 4 == 0


class Attention(nn.Module):
    """ViT-style attention whose sizes come from the input's shape: ``B, N, C = x.shape``."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        a = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim=32):
        super().__init__()
        self.embed = nn.Linear(6, dim)
        self.n1, self.attn, self.n2 = nn.LayerNorm(dim), Attention(dim), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.attn(self.n1(x))
        x = x + self.mlp(self.n2(x))
        return self.head(x.mean(1))


def test_sizes_read_from_shapes_follow_their_space():
    m = Block().eval()
    x = torch.randn(1, 7, 6)
    p, small = pruned_fully_traced(m, x)
    assert not p.skipped
    assert small.embed.out_features < 32 and small.attn.qkv.out_features == 3 * small.embed.out_features
    assert small.attn.num_heads == 4 and type(m.attn.num_heads) is int


class SelectiveKernel(nn.Module):
    """Split and view sizes computed from module attributes and from shapes (SKNet-like)."""

    def __init__(self, c=16, paths=2):
        super().__init__()
        self.stem = nn.Conv2d(3, c * paths, 1)
        self.paths = paths
        self.mix = nn.Conv2d(c, c, 1)
        self.head = nn.Conv2d(c, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        a, b = torch.split(x, self.stem.out_channels // self.paths, dim=1)
        B, C, H, W = x.shape
        y = x.view(B, self.paths, C // self.paths, H, W).sum(1)
        return self.head(self.mix(a + b) + y)


class ReadsAttribute(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 32)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.out = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        h = self.fc(x).view(-1, self.conv.in_channels, 4, 4)
        return self.out(self.conv(h))


def test_sizes_from_attributes_and_splits_follow_their_origin():
    m = SelectiveKernel().eval()
    x = torch.randn(1, 3, 5, 5)
    small = pruned_fully_traced(m, x)[1]
    assert small.stem.out_channels < 32 and small.mix.in_channels == small.stem.out_channels // 2

    m = ReadsAttribute().eval()
    x = torch.randn(1, 5)
    sync = [s for s in sc.trace(m, x).syncs if s["module"] == "conv"]
    assert [s["attr"] for s in sync] == ["in_channels"]
    pruned(m, x, ratio=0.5)


def test_shape_ints_are_plain_after_tracing():
    class Keeps(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            self.seen = x.shape
            self.width = x.shape[-1] // 2
            return self.fc(x)

    m = Keeps()
    sc.trace(m, torch.randn(2, 4))
    assert type(m.width) is int and all(type(n) is int for n in m.seen) and type(m.fc.in_features) is int


class Recurrent(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.emb = nn.Linear(4, 16)
        self.rnn = cell(16, 12, num_layers=2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(24, 3)

    def forward(self, x):
        return self.out(self.rnn(self.emb(x))[0])


def test_recurrent_layers_prune_their_hidden_size():
    x = torch.randn(1, 5, 4)
    for cell in (nn.LSTM, nn.GRU, nn.RNN):
        m = Recurrent(cell).eval()
        assert not sc.trace(m, x).unsupported
        p = sc.plan(m, x, ratio=0.3, verify=False)
        small = sc.apply(m, p)
        assert small.rnn.hidden_size < 12 and small.rnn.input_size < 16 and small(x).shape == (1, 5, 3)


class Reshuffles(nn.Module):
    """pixel_unshuffle, repeat_interleave, a split by a list of sizes and a partial slice of channels."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(32, 8, 1)
        self.c, self.d = nn.Conv2d(16, 6, 1), nn.Conv2d(6, 12, 1)
        self.e, self.f = nn.Conv2d(4, 5, 1), nn.Conv2d(8, 5, 1)
        self.g, self.h = nn.Conv2d(5, 10, 1), nn.Conv2d(4, 5, 1)

    def forward(self, x):
        h = self.b(F.pixel_unshuffle(self.a(x), 2))
        h = self.d(self.c(h.repeat_interleave(2, dim=1)))
        p, q = torch.split(h, [4, 8], dim=1)
        y = self.e(p) + self.f(q)
        return self.h(self.g(y)[:, :4])


def test_reshuffling_ops_keep_their_neighbours_prunable():
    m = Reshuffles().eval()
    x = torch.randn(1, 3, 8, 8)
    g = sc.trace(m, x)
    assert not any("no channel rule" in u.reason for u in g.unsupported), str(g)
    p = sc.plan(m, x, ratio=0.5, verify=False)  # nothing left for verification to catch
    small = sc.apply(m, p)
    assert small(x).shape == (1, 5, 4, 4)
    assert small.a.out_channels < 8 and small.b.out_channels < 8  # through pixel_unshuffle, repeat_interleave
    assert small.d.out_channels == 12  # split sizes written in code pin the pieces
    assert 4 <= small.g.out_channels < 10 and small.h.in_channels == 4  # only the sliced-off tail goes


def test_attribute_that_equals_a_width_by_coincidence_is_left_alone():
    from torchvision.models import VisionTransformer

    m = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=4, hidden_dim=32, mlp_dim=64,
                          num_classes=5).eval()
    x = torch.randn(1, 3, 32, 32)
    assert {"hidden_dim"} == {s["attr"] for s in sc.trace(m, x).syncs if s["module"] == ""}
    small = sc.prune(m, x, ratio=0.3)
    assert small.image_size == 32 and small.hidden_dim < 32 and small(x).shape == (1, 5)


class Im2Col(nn.Module):
    """Sliding windows: F.unfold / F.fold (im2col, col2im) and Tensor.unfold."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        h = F.fold(F.unfold(self.a(x), 3, padding=1), (6, 6), 3, padding=1)
        windows = h.unfold(3, 2, 2).mean(-1)  # (B, C, 6, 3)
        return self.b(windows)


def test_sliding_windows_keep_channels_prunable():
    m = Im2Col().eval()
    x = torch.randn(1, 3, 6, 6)
    assert not sc.trace(m, x).unsupported
    small = sc.apply(m, sc.plan(m, x, ratio=0.5, verify=False))
    assert small.a.out_channels == 4 and small(x).shape == (1, 4, 6, 3)


class ImageTokens(nn.Module):
    """Image features written over the image tokens' embeddings with ``masked_scatter`` (LLaVA, Gemma 3)."""

    def __init__(self, d=16, vocab=10, patch=12):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.vision = nn.Sequential(nn.Linear(patch, 24), nn.GELU(), nn.Linear(24, d))
        self.mlp = nn.Sequential(nn.Linear(d, 32), nn.GELU(), nn.Linear(32, d))
        self.head = nn.Linear(d, vocab)
        self.register_buffer("ids", torch.tensor([[1, 5, 5, 5, 2, 3]]))

    def forward(self, patches):  # patches: (1, 3, patch)
        h = self.embed(self.ids)
        mask = (self.ids == 5).unsqueeze(-1).expand_as(h)
        h = h.masked_scatter(mask, self.vision(patches))
        return self.head(h + self.mlp(h))


def _image_width_prunes(m: nn.Module, x: torch.Tensor) -> None:
    """The text width shrinks, the vision tower's output with it, and surgery equals masking."""
    p, small = pruned_fully_traced(m, x)
    assert small.embed.weight.shape[1] < 16 and small.vision[2].weight.shape[0] == small.embed.weight.shape[1]
    with torch.no_grad():
        torch.testing.assert_close(small(x), sc.apply(m, p, mode="mask")(x), atol=1e-5, rtol=1e-4)


def test_masked_scatter_of_image_features_keeps_the_hidden_width_prunable():
    torch.manual_seed(0)
    _image_width_prunes(ImageTokens().eval(), torch.randn(1, 3, 12))


class ValidFrames(nn.Module):
    """Audio features of the valid frames only, picked by a boolean mask (``feats[valid]``), written over the
    audio tokens' embeddings after a check of their count (Nemotron 3.5 Transcribe)."""

    def __init__(self, d=16, vocab=10, mels=12):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.audio = nn.Sequential(nn.Linear(mels, 24), nn.GELU(), nn.Linear(24, d))
        self.head = nn.Linear(d, vocab)
        self.register_buffer("ids", torch.tensor([[1, 5, 5, 5, 2, 3]]))

    def forward(self, frames):  # frames: (1, 4, mels), the last one padding
        valid = torch.arange(frames.shape[1])[None, :] < 3
        feats = self.audio(frames)[valid]
        h = self.embed(self.ids)
        tokens = (self.ids == 5).unsqueeze(-1).expand_as(h)
        assert h[tokens].numel() == feats.numel()  # a mask over every dim, its result read for its size only
        return self.head(h.masked_scatter(tokens, feats))


def test_boolean_mask_over_leading_dims_keeps_the_feature_width_prunable():
    torch.manual_seed(0)
    m, x = ValidFrames().eval(), torch.randn(1, 4, 12)
    p, small = pruned_fully_traced(m, x)
    assert small.embed.weight.shape[1] < 16 and small.audio[2].weight.shape[0] == small.embed.weight.shape[1]
    assert small.audio[0].weight.shape[0] < 24
    with torch.no_grad():
        torch.testing.assert_close(small(x), sc.apply(m, p, mode="mask")(x), atol=1e-5, rtol=1e-4)


class PutImageTokens(ImageTokens):
    """Image features written at the image tokens' positions with ``index_put`` (Phi-4-multimodal)."""

    def forward(self, patches):
        h = self.embed(self.ids)
        h = h.index_put(torch.nonzero(self.ids == 5, as_tuple=True), self.vision(patches)[0])
        return self.head(h + self.mlp(h))


def test_index_put_of_image_features_keeps_the_hidden_width_prunable():
    torch.manual_seed(0)
    _image_width_prunes(PutImageTokens().eval(), torch.randn(1, 3, 12))


class GridFromSizes(nn.Module):
    """Patch features laid out as a grid whose sides come from an input tensor (``h, w = image_sizes[0]``,
    0-d tensors: Phi-4-multimodal's sub-images)."""

    def __init__(self, d=16):
        super().__init__()
        self.a, self.b = nn.Linear(4, d), nn.Linear(d, 3)

    def forward(self, x, sizes):  # x: (1, 6, 4); sizes: [[2, 3]]
        h, w = sizes[0]
        return self.b(self.a(x).reshape(h, w, -1)).mean(1)


def test_reshape_to_sizes_held_in_0d_tensors_keeps_the_width_prunable():
    m, x = GridFromSizes().eval(), (torch.randn(1, 6, 4), torch.tensor([[2, 3]]))
    assert not sc.trace(m, x).unsupported
    small = sc.apply(m, sc.plan(m, x, ratio=0.3))
    assert small.a.out_features < 16 and small(*x).shape == m(*x).shape


class FrameCache(nn.Module):
    """Frames copied into a longer cache with ``index_copy_`` (Nemotron 3 Diarization's speaker cache)."""

    def __init__(self, d=16):
        super().__init__()
        self.a, self.b = nn.Linear(4, d), nn.Linear(d, 3)

    def forward(self, x):  # x: (1, 3, 4)
        h = self.a(x)
        cache = torch.zeros(h.shape[0], 5, h.shape[-1])
        cache.index_copy_(1, torch.arange(h.shape[1]), h)
        return self.b(cache)


def test_index_copy_into_a_cache_keeps_the_width_prunable():
    m, x = FrameCache().eval(), torch.randn(1, 3, 4)
    p, small = pruned_fully_traced(m, x)
    assert small.a.out_features < 16


class PositionTable(nn.Module):
    """Token embeddings plus rows of a learned position table read with ``index_select`` (MusicGen)."""

    def __init__(self, d=16, vocab=10, positions=12):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.positions = nn.Parameter(torch.randn(positions, d))
        self.mlp = nn.Sequential(nn.Linear(d, 32), nn.GELU(), nn.Linear(32, d))
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        h = self.embed(ids) + self.positions.index_select(0, torch.arange(ids.shape[1]))
        return self.head(h + self.mlp(h))


def test_index_select_of_a_position_table_keeps_its_width_prunable():
    torch.manual_seed(0)
    m, x = PositionTable().eval(), torch.randint(0, 10, (1, 6))
    p, small = pruned_fully_traced(m, x)
    assert small.positions.shape[0] == 12 and small.positions.shape[1] == small.embed.weight.shape[1] < 16
    with torch.no_grad():
        torch.testing.assert_close(small(x), sc.apply(m, p, mode="mask")(x), atol=1e-5, rtol=1e-4)
class StatefulNormed(nn.Module):
    """A conv state copied into a buffer made from the activation's shape (transformers' linear-attention caches),
    and an L2 norm through ``torch.linalg.vector_norm`` (Inkling2's norms)."""

    def __init__(self, d=16):
        super().__init__()
        self.inp, self.out = nn.Linear(4, d), nn.Linear(d, 3)

    def forward(self, x):
        h = self.inp(x)
        state = torch.zeros(*h.shape[:-1], h.shape[-1])
        state.copy_(h)
        h = state / torch.linalg.vector_norm(state, dim=-1, keepdim=True)
        return self.out(h)


def test_copy_into_a_state_and_vector_norm_keep_the_width_prunable():
    m = StatefulNormed().eval()
    x = torch.randn(1, 5, 4)
    _, small = pruned_fully_traced(m, x)
    assert small.inp.out_features < 16


class ShapeGroupedConv(nn.Module):
    """A depthwise causal conv called functionally with ``groups`` read from the input's shape (Inkling's short
    convolutions): the groups follow the channels."""

    def __init__(self, d=16, k=3):
        super().__init__()
        self.inp, self.out = nn.Linear(4, d), nn.Linear(d, 3)
        self.conv = nn.Conv1d(d, d, k, groups=d, bias=False)

    def forward(self, x):
        h = self.inp(x).transpose(1, 2)
        _, channels, n = h.shape
        h = F.conv1d(h, self.conv.weight.squeeze(1).unsqueeze(1), padding=2, groups=channels)[:, :, :n]
        return self.out(h.transpose(1, 2))


def test_conv_groups_read_from_the_input_shape_follow_the_channels():
    m = ShapeGroupedConv().eval()
    x = torch.randn(1, 5, 4)
    _, small = pruned_fully_traced(m, x)
    assert small.conv.weight.shape[0] == small.inp.out_features < 16


class GroupedNorm(nn.Module):
    """A norm over groups of the width, ``x.reshape(..., -1, self.group_size)`` with ``group_size`` the width of
    each copy of the residual (Qwen4-Exp's hyper-connection norm): the groups follow the width."""

    def __init__(self, d=16, copies=2):
        super().__init__()
        self.inp, self.out = nn.Linear(4, d), nn.Linear(copies * d, 3)
        self.copies, self.group_size = copies, d

    def forward(self, x):
        h = self.inp(x).repeat(1, 1, self.copies)
        g = h.reshape(*h.shape[:-1], -1, self.group_size)
        return self.out((g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + 1e-6)).flatten(-2))


def test_group_size_attribute_follows_the_width():
    m = GroupedNorm().eval()
    x = torch.randn(1, 5, 4)
    _, small = pruned(m, x)
    assert small.group_size == small.inp.out_features < 16


class CheckedStreams(nn.Module):
    """``if x.shape[-1] != self.streams * self.hidden_size: raise`` over copies of the width (Qwen4-Exp's
    hyper-connections): the stream count, set by no plan, stays; the width follows ``hidden_size``."""

    def __init__(self, d=16, streams=4):
        super().__init__()
        self.inp, self.out = nn.Linear(4, d), nn.Linear(streams * d, 3)
        self.streams, self.hidden_size = streams, d

    def forward(self, x):
        h = self.inp(x).repeat(1, 1, self.streams)
        if h.shape[-1] != self.streams * self.hidden_size:
            raise ValueError("streams do not match the width")
        return self.out(h)


def test_a_checked_product_with_a_fixed_factor_keeps_the_width_prunable():
    m = CheckedStreams().eval()
    x = torch.randn(1, 5, 4)
    p, small = pruned(m, x)
    assert small.streams == 4 and small.hidden_size == small.inp.out_features < 16
    assert small.out.in_features == 4 * small.hidden_size and small(x).shape == (1, 5, 3)


class PerHeadArange(nn.Module):
    """Per-head values from ``torch.arange(self.num_heads)`` (ALiBi-like slopes computed in the forward):
    removing a head would renumber the slopes of those kept, so heads stay; widths still prune."""

    def __init__(self, d=16, heads=4):
        super().__init__()
        self.num_heads, self.head_dim = heads, d // heads
        self.inp, self.qkv, self.proj, self.out = nn.Linear(4, d), nn.Linear(d, 3 * d), nn.Linear(d, d), nn.Linear(d, 3)

    def forward(self, x):
        h = self.inp(x)
        B, N, C = h.shape
        q, k, v = self.qkv(h).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        slopes = (torch.arange(self.num_heads) + 1.0).view(1, self.num_heads, 1, 1)
        a = (q @ k.transpose(-1, -2) * slopes).softmax(-1)
        return self.out(h + self.proj((a @ v).transpose(1, 2).reshape(B, N, C)))


@pytest.mark.parametrize("granularity", ["head", "channel"])
def test_an_arange_sized_by_the_head_count_pins_the_heads(granularity):
    torch.manual_seed(0)
    m, x = PerHeadArange().eval(), torch.randn(1, 5, 4)
    p = sc.plan(m, x, 0.5, granularity=granularity, verify=False)
    small = sc.apply(m, p)
    assert small.num_heads == 4
    if granularity == "channel":
        assert small.inp.out_features < 16 and small.head_dim < 4
    else:
        assert any("arange" in s["reason"] for s in p.skipped)
    with torch.no_grad():
        torch.testing.assert_close(small(x), sc.apply(m, p, mode="mask")(x), atol=1e-6, rtol=1e-5)


def test_glu_ties_each_channel_to_its_gate():
    """``F.glu`` (a conformer's pointwise conv) halves its dim: the value and gate halves shrink together."""
    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down = nn.Conv1d(8, 32, 1), nn.Conv1d(16, 8, 1)

        def forward(self, x):
            return self.down(F.glu(self.up(x), dim=1))

    torch.manual_seed(0)
    model, x = Gated().eval(), torch.randn(1, 8, 5)
    plan, small = pruned_fully_traced(model, x)
    assert small.up.out_channels == 2 * small.down.in_channels < 32
    mask = sc.apply(model, plan, mode="mask")
    with torch.no_grad():
        assert torch.allclose(small(x), mask(x), atol=1e-6)


def test_scatter_reduce_pooling_positions_keeps_the_channels_prunable():
    """Positions pooled into groups by ``scatter_reduce`` along time (BLT's patches): the channels pass."""
    class Pool(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down = nn.Linear(4, 16), nn.Linear(16, 4)

        def forward(self, x):
            h = self.up(x)
            ids = torch.tensor([[0, 0, 1, 1, 2, 2]]).unsqueeze(-1).expand(-1, -1, h.shape[-1])
            pooled = torch.zeros(1, 3, h.shape[-1]).scatter_reduce(1, ids, h, reduce="amax", include_self=False)
            return self.down(pooled)

    torch.manual_seed(0)
    model, x = Pool().eval(), torch.randn(1, 6, 4)
    plan, small = pruned_fully_traced(model, x)
    assert small.up.out_features == small.down.in_features < 16
    mask = sc.apply(model, plan, mode="mask")
    with torch.no_grad():
        assert torch.allclose(small(x), mask(x), atol=1e-6)
