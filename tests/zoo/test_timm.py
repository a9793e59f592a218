"""timm families prune with defaults at batch 1: output shape kept, input model untouched, params cut.

The default run covers families that once crashed the tracer or pinned their widths, made small
through their own constructor arguments; `pytest -m timm` runs one model per family.
"""
import pytest

pytest.importorskip("timm")

from tests.zoo.timm_check import check, families, representative  # noqa: E402

# name -> (constructor arguments that keep it tiny, least fraction of params cut at ratio 0.3)
HARD = {
    "beit_base_patch16_224": (dict(img_size=32, depth=2, embed_dim=64, num_heads=4), 0.3),  # B, N, C = x.shape
    "eva02_tiny_patch14_224": (dict(img_size=28, depth=2, num_classes=10), 0.4),  # rope on strided halves
    "cait_xxs24_224": (dict(img_size=32, depth=2, embed_dim=96), 0.4),  # C // num_heads, qkv[0]
    "xcit_nano_12_p16_224": (dict(img_size=32, depth=2), 0.4),  # arange(self.hidden_dim) features
    "swinv2_tiny_window8_256": (dict(img_size=64, window_size=4, depths=(1, 1, 1, 1), embed_dim=48), 0.4),
    "botnet26t_256": (dict(img_size=64), 0.4),  # q @ rel_k.transpose(-1, -2)
    "swiftformer_xs": (dict(), 0.4),  # query @ self.w_g
    "skresnet18": (dict(), 0.4),  # split(x, C // paths), view(B, paths, C // paths, ...)
    "twins_pcpvt_small": (dict(depths=(1, 1, 1, 1)), 0.4),  # kv unbind
    "pvt_v2_b0": (dict(), 0.4),
    "gcvit_xxtiny": (dict(img_size=64), 0.4),  # repeat_interleave
    "davit_tiny": (dict(depths=(1, 1, 1, 1)), 0.4),
    "convit_tiny": (dict(img_size=32, depth=2), 0.4),
    "resnet50_gn": (dict(), 0.4),  # GroupNorm: the ratio counts a layer's channels
    "focalnet_tiny_srf": (dict(), 0.4),  # split by a tuple attribute
    "mambaout_femto": (dict(depths=(1, 1, 1, 1)), 0.4),  # split by self.split_indices, a tuple attribute
    "shvit_s1": (dict(), 0.4),  # split by [self.pdim, self.dim - self.pdim]
}


@pytest.mark.parametrize("name", sorted(HARD))
def test_hard_family(name, one_thread):
    kwargs, least = HARD[name]
    row = check(name, 0.3, **kwargs)
    p0, p1 = row["params"]
    m0, m1 = row["macs"]
    assert 1 - p1 / p0 >= least and m1 < m0, row
    assert not row["skipped"], row  # nothing that only verification catches


@pytest.mark.timm
@pytest.mark.parametrize("family", sorted(families()))
def test_every_family(family, one_thread):
    row = check(representative(families()[family]), 0.3)
    assert row["params"][1] <= row["params"][0], row
