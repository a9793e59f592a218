"""Layers with parameters: linear, convolutions, normalisations, embeddings, PReLU."""
from __future__ import annotations

import torch

from ..space import Space, block, find, prod_space, refine
from ..tracer import OpCall, Tracer, tie
from .base import _kernel, _spatial, arg, rule


def role(tr: Tracer, t: torch.Tensor | None, dim: int, r: str) -> None:
    param = tr.rec(t).param if t is not None else None
    if param is not None:
        tr.state.roles[(param, dim)] = r


@rule("linear")
def linear(tr: Tracer, call: OpCall) -> None:
    x, w, b = arg(call, 0, "input"), arg(call, 1, "weight"), arg(call, 2, "bias")
    rx, rw = tr.rec(x), tr.rec(w)
    tie(rx.spaces[-1], rw.spaces[-1])
    outs = rx.spaces[:-1] + [rw.spaces[0]] if w.dim() == 2 else rx.spaces[:-1]
    if b is not None:
        tie(rw.spaces[0], tr.rec(b).spaces[0])
        role(tr, b, 0, "out")
    role(tr, w, 0, "out")
    role(tr, w, 1, "in")
    tr.set(call.out, outs)


@rule("bilinear")
def bilinear(tr: Tracer, call: OpCall) -> None:
    x1, x2, w, b = call.args[:3] + (arg(call, 3, "bias"),)
    rw = tr.rec(w)
    tie(tr.rec(x1).spaces[-1], rw.spaces[1])
    tie(tr.rec(x2).spaces[-1], rw.spaces[2])
    if b is not None:
        tie(rw.spaces[0], tr.rec(b).spaces[0])
    tr.set(call.out, tr.rec(x1).spaces[:-1] + [rw.spaces[0]])


def _grouped(s: Space, g: int, n: int) -> tuple[Space, Space]:
    """Split an ``n``-wide channel space into (groups, per-group) spaces."""
    if g == 1:
        return Space(1), s
    if n == g:
        return s, Space(1)
    group, per = refine(s, "prod", [g, n // g])
    return group, per


@rule("conv1d", "conv2d", "conv3d")
def conv(tr: Tracer, call: OpCall) -> None:
    x, w, b = arg(call, 0, "input"), arg(call, 1, "weight"), arg(call, 2, "bias")
    g = int(arg(call, 6, "groups", 1))
    rx, rw = tr.rec(x), tr.rec(w)
    c = 1 if x.dim() == w.dim() else 0
    cin, cout = x.shape[c], w.shape[0]
    g_in, per_in = _grouped(rx.spaces[c], g, cin)
    tie(per_in, rw.spaces[1])
    if g > 1:
        g_out, _ = _grouped(rw.spaces[0], g, cout)
        tie(g_in, g_out)
        _sync_groups(tr, call, g_in, arg(call, 6, "groups"))
    if b is not None:
        tie(rw.spaces[0], tr.rec(b).spaces[0])
        role(tr, b, 0, "out")
    role(tr, w, 0, "out")
    role(tr, w, 1, "in")
    out = call.out
    _kernel(rw.spaces[2:])
    tr.set(out, rx.spaces[:c] + [rw.spaces[0]] + _conv_spatial(tr, call, rx.spaces[c + 1:], out.shape[c + 1:]))


def _conv_spatial(tr: Tracer, call: OpCall, spaces: list[Space], shape) -> list[Space]:
    """Output spatial dims of a convolution: a pointwise one (1x1, stride 1, no padding) passes each
    position through; any other makes new positions, so its input positions may not change either
    (a channel dim read as a conv's length, CoaT's aggregate, would otherwise shrink its output)."""
    n = len(spaces)

    def each(v: object) -> list:
        return list(v) if isinstance(v, (tuple, list)) else [v] * n

    padding = arg(call, 4, "padding", 0)
    if (list(arg(call, 1, "weight").shape[2:]) == each(1) == each(arg(call, 3, "stride", 1))
            == each(arg(call, 5, "dilation", 1)) and (padding in ("same", "valid") or each(padding) == each(0))
            and [find(s).size for s in spaces] == list(shape)):
        return list(spaces)
    for s in spaces:
        block(s, f"a convolution's spatial input in {call.module or '<model>'}")
    return _spatial(shape)


def _sync_groups(tr: Tracer, call: OpCall, group: Space, given: object = None) -> None:
    """The groups follow the module's ``groups`` attribute, or the int they were read from (``x.shape[1]``)."""
    if given is not None and tr.followable(given) and tr.follow(given, group):
        return
    mod = tr.modules.get(call.module)
    if mod is not None and getattr(mod, "groups", None) == group.size:
        tr.state.syncs.append((call.module, "groups", [group]))
    else:
        block(group, f"groups fixed in code in {call.module or '<model>'}")


@rule("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def conv_transpose(tr: Tracer, call: OpCall) -> None:
    x, w, b = arg(call, 0, "input"), arg(call, 1, "weight"), arg(call, 2, "bias")
    g = int(arg(call, 6, "groups", 1))
    rx, rw = tr.rec(x), tr.rec(w)
    c = 1 if x.dim() == w.dim() else 0
    tie(rx.spaces[c], rw.spaces[0])
    if g > 1:
        g_in, _ = _grouped(rw.spaces[0], g, w.shape[0])
        _sync_groups(tr, call, g_in)
        out_c = prod_space([g_in, rw.spaces[1]]) if w.shape[1] > 1 else g_in
    else:
        out_c = rw.spaces[1]
    if b is not None:
        tie(out_c, tr.rec(b).spaces[0])
        role(tr, b, 0, "out")
    role(tr, w, 0, "in")
    role(tr, w, 1, "out")
    out = call.out
    _kernel(rw.spaces[2:])
    for s in rx.spaces[c + 1:]:
        block(s, f"a convolution's spatial input in {call.module or '<model>'}")
    tr.set(out, rx.spaces[:c] + [out_c] + _spatial(out.shape[c + 1:]))


@rule("_weight_norm")
def weight_norm(tr: Tracer, call: OpCall) -> None:
    """``w = g * v / ||v||``, the norm taken over every dim but ``dim`` (all of them for -1): ``w`` has ``v``'s
    channels, and those summed in the norm are normalised (removing some rescales the rest)."""
    v, g, dim = arg(call, 0, "v"), arg(call, 1, "g"), arg(call, 2, "dim", 0)
    rv, rg = tr.rec(v), tr.rec(g)
    keep = None if dim == -1 else dim % v.dim()
    for i, s in enumerate(rv.spaces):
        if i == keep:
            if g.dim() == v.dim() and g.shape[i] == v.shape[i]:
                tie(s, rg.spaces[i])
        else:
            find(s).tags.add("norm")
    tr.set(call.out, list(rv.spaces), from_param=True)


@rule("prelu")
def prelu(tr: Tracer, call: OpCall) -> None:
    x, w = arg(call, 0, "input"), arg(call, 1, "weight")
    rx = tr.rec(x)
    if w.numel() > 1:
        tie(rx.spaces[1 if x.dim() > 1 else 0], tr.rec(w).spaces[0])
        role(tr, w, 0, "out")
    tr.set(call.out, list(rx.spaces))


@rule("batch_norm", "instance_norm")
def batch_norm(tr: Tracer, call: OpCall) -> None:
    x = arg(call, 0, "input")
    rx = tr.rec(x)
    c = rx.spaces[1] if x.dim() > 1 else rx.spaces[0]
    for i, key in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")):
        t = arg(call, i, key)
        if isinstance(t, torch.Tensor):
            rt = tr.rec(t)
            tie(c, rt.spaces[0])
            if rt.param is not None:  # role(), with the record at hand
                tr.state.roles[(rt.param, 0)] = "out"
    tr.set(call.out, list(rx.spaces))


@rule("layer_norm", "rms_norm")
def layer_norm(tr: Tracer, call: OpCall) -> None:
    x = arg(call, 0, "input")
    shape = list(arg(call, 1, "normalized_shape"))
    rx = tr.rec(x)
    norm = rx.spaces[x.dim() - len(shape):]
    for key, i in (("weight", 2), ("bias", 3)):
        if call.name == "rms_norm" and key == "bias":
            continue
        t = arg(call, i, key)
        if isinstance(t, torch.Tensor):
            for s, ws in zip(norm, tr.rec(t).spaces):
                tie(s, ws)
            for d in range(t.dim()):
                role(tr, t, d, "out")
    for s in norm:
        find(s).tags.add("norm")
    mod = tr.modules.get(call.module)
    if mod is not None and tuple(getattr(mod, "normalized_shape", ())) == tuple(shape):
        tr.state.syncs.append((call.module, "normalized_shape", list(norm)))
    else:
        for s in norm:
            block(s, f"{call.name} with a fixed shape in {call.module or '<model>'}")
    tr.set(call.out, list(rx.spaces))


@rule("group_norm")
def group_norm(tr: Tracer, call: OpCall) -> None:
    x, g = arg(call, 0, "input"), int(arg(call, 1, "num_groups"))
    rx = tr.rec(x)
    c = rx.spaces[1]
    for key, i in (("weight", 2), ("bias", 3)):
        t = arg(call, i, key)
        if isinstance(t, torch.Tensor):
            tie(c, tr.rec(t).spaces[0])
            role(tr, t, 0, "out")
    group, per = _grouped(c, g, x.shape[1])
    find(per).tags.add("norm")
    if g > 1:
        mod = tr.modules.get(call.module)
        if mod is not None and getattr(mod, "num_groups", None) == g:
            tr.state.syncs.append((call.module, "num_groups", [group]))
        else:
            block(group, f"group_norm groups fixed in code in {call.module or '<model>'}")
    tr.set(call.out, list(rx.spaces))


@rule("embedding")
def embedding(tr: Tracer, call: OpCall) -> None:
    idx, w = arg(call, 0, "input"), arg(call, 1, "weight")
    rw = tr.rec(w)
    block(rw.spaces[0], "embedding rows are token ids")
    role(tr, w, 1, "out")
    tr.set(call.out, list(tr.rec(idx).spaces) + [rw.spaces[1]])


@rule("embedding_bag")
def embedding_bag(tr: Tracer, call: OpCall) -> None:
    w = arg(call, 1, "weight")
    rw = tr.rec(w)
    block(rw.spaces[0], "embedding rows are token ids")
    role(tr, w, 1, "out")
    out = call.out[0] if isinstance(call.out, tuple) else call.out
    tr.set(out, [Space(out.shape[0]), rw.spaces[1]])
