"""Calibration plumbing: find a model's repeated blocks, capture their inputs, run them one at a time.

Post-training pruning works block by block (as Wanda and SparseGPT do): the inputs of block 0 are
captured by stopping the model's forward at that block; block ``i`` then runs alone on the outputs
of the already-pruned block ``i - 1``, so memory holds one block's activations, never the model's.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._inputs import call_model

CACHES = ("past_key_values", "past_key_value", "layer_past")
CHUNK = 2**19  # elements per piece of a layer's input when statistics are taken (float64 temporaries: 4 MiB)


class _Stop(Exception):
    """Raised by the capture hook to end the model's forward once block 0's inputs are seen."""


@dataclass
class Call:
    """One recorded call of a block: its positional and keyword arguments."""

    args: tuple
    kwargs: dict[str, Any]

    def hidden(self) -> torch.Tensor:
        """The hidden-state tensor (first positional argument, or ``hidden_states``)."""
        return self.args[0] if self.args else self.kwargs["hidden_states"]

    def with_hidden(self, h: torch.Tensor) -> Call:
        """The same call with new hidden states (the previous block's outputs)."""
        if self.args:
            return Call((h,) + tuple(self.args[1:]), self.kwargs)
        return Call((), dict(self.kwargs, hidden_states=h))


def find_blocks(model: nn.Module, blocks: str | None = None) -> tuple[str, list[nn.Module]]:
    """The model's repeated blocks: the named ModuleList, else the one holding the most Linear/Conv weights.

    Returns ("", [model]) when there is no list of two or more same-class blocks containing Linears.
    """
    mods = dict(model.named_modules())
    if blocks is not None:
        if not isinstance(blocks, str):
            raise TypeError(f"blocks must be the name of a ModuleList in the model, got {type(blocks).__name__}")
        found = mods.get(blocks)
        if not isinstance(found, (nn.ModuleList, nn.Sequential)) or len(found) == 0:
            close = sorted(n for n, m in mods.items() if isinstance(m, (nn.ModuleList, nn.Sequential)))[:8]
            raise ValueError(f"blocks={blocks!r} is not a non-empty ModuleList/Sequential of the model "
                             f"(candidates: {close})")
        return blocks, list(found)
    best, best_size = ("", [model]), 0
    for name, mod in mods.items():
        if not isinstance(mod, nn.ModuleList) or len(mod) < 2 or len({type(m) for m in mod}) != 1:
            continue
        size = sum(m.weight.numel() for m in mod.modules() if supported(m) is None)
        if size > best_size:
            best, best_size = (name, list(mod)), size
    return best


def first_inputs(model: nn.Module, block: nn.Module, batches: list[Any], keep: bool = True) -> list[Call]:
    """Block ``block``'s arguments for every calibration batch, found by stopping the forward there.

    ``keep=False`` only checks the batches (each reaches the block with finite inputs) and returns []:
    one batch's activations are held at a time, for methods that read no activations."""
    calls: list[Call] = []

    def hook(_mod, args, kwargs):
        kwargs = {k: (None if k in CACHES else v) for k, v in kwargs.items()}
        calls.append(Call(tuple(args), kwargs))
        raise _Stop

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for i, batch in enumerate(batches):
            before = len(calls)
            try:
                call_model(model, batch)
            except _Stop:
                pass
            except Exception as exc:  # noqa: BLE001 - re-raised with the batch named
                raise ValueError(f"calibration batch {i}: the model's forward failed before the first block: "
                                 f"{type(exc).__name__}: {str(exc)[:300]}") from exc
            if len(calls) == before:
                raise ValueError(f"calibration batch {i}: the model's forward never reached the first block; "
                                 "pass blocks=<name of the ModuleList the forward runs>")
            _check_call(calls[-1], i)
            if not keep:
                calls.clear()
    finally:
        handle.remove()
    return calls


def _check_call(call: Call, i: int) -> None:
    h = call.hidden()
    if not isinstance(h, torch.Tensor):
        raise ValueError(f"the first block's hidden-state argument is a {type(h).__name__}, not a tensor")
    check_finite(h, f"inputs of the first block (batch {i})")


class Tokens:
    """Which tokens of the batch running now are real (its ``attention_mask``), so that padding stays
    out of the statistics; ``current`` is set before each batch runs."""

    def __init__(self, batches: list[Any]):
        self.masks = [token_mask(b) for b in batches]
        self.current: torch.Tensor | None = None

    def mask_for(self, mod: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """The current batch's real-token mask when it lines up with ``x``'s first two dimensions, else None."""
        m = self.current
        if m is None or isinstance(mod, nn.modules.conv._ConvNd) or x.dim() < 3 or tuple(x.shape[:2]) != tuple(m.shape):
            return None
        return m

    def select(self, mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``x`` without the padding tokens of the current batch (unchanged when the shapes do not line up)."""
        m = self.mask_for(mod, x)
        return x if m is None else x[m]


def token_mask(batch: Any) -> torch.Tensor | None:
    """A dict batch's 2-D ``attention_mask`` as booleans (True = real token), else None."""
    if isinstance(batch, dict):
        m = batch.get("attention_mask")
        if isinstance(m, torch.Tensor) and m.dim() == 2:
            return m.bool()
    return None


def advance(block: nn.Module, calls: list[Call], tokens: Tokens | None = None) -> None:
    """Run ``block`` on every call, whose hidden states become its outputs (the next block's inputs) in place,
    each as soon as it exists: one set of activations is held (plus one batch), not inputs and outputs both."""
    for j, c in enumerate(calls):
        calls[j] = c.with_hidden(_forward(block, c, j, tokens))


def feed(block: nn.Module, calls: list[Call], tokens: Tokens | None = None) -> None:
    """Run ``block`` on every call for its side effects (statistics hooks), keeping no outputs."""
    for j, c in enumerate(calls):
        _forward(block, c, j, tokens)


def _forward(block: nn.Module, c: Call, j: int, tokens: Tokens | None) -> torch.Tensor:
    if tokens is not None:
        tokens.current = tokens.masks[j]
    y = block(*c.args, **c.kwargs)
    return y[0] if isinstance(y, (tuple, list)) else y


def all_finite(t: torch.Tensor) -> bool:
    """Whether a floating-point ``t`` holds no NaN or inf: its min and max (NaN propagates through both),
    without the two tensor-sized temporaries of ``torch.isfinite(t).all()``."""
    if t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t.detach())
    return math.isfinite(float(lo)) and math.isfinite(float(hi))


def check_finite(t: torch.Tensor, where: str) -> None:
    """A ValueError naming ``where`` when ``t`` holds NaN or inf."""
    if t.is_floating_point() and not all_finite(t):
        raise ValueError(f"non-finite (NaN or inf) activations at {where}: the calibration data or the model "
                         "produces them, and no pruning statistic can be computed from them")


def weight_2d(mod: nn.Module) -> torch.Tensor:
    """The layer's weight as (out, in) whose columns match ``columns``: Conv as (out, kernel x in)."""
    w = mod.weight.detach()
    if type(mod).__name__ == "Conv1D":  # Hugging Face GPT-2 stores (in, out)
        return w.t()
    if w.dim() > 2:
        return w.movedim(1, -1).reshape(w.shape[0], -1)
    return w


def from_2d(mod: nn.Module, w2: torch.Tensor) -> torch.Tensor:
    """Inverse of ``weight_2d``: an (out, in) tensor back to the layer's weight layout."""
    w = mod.weight
    if type(mod).__name__ == "Conv1D":
        return w2.t()
    if w.dim() > 2:
        return w2.reshape(w.shape[0], *w.shape[2:], w.shape[1]).movedim(-1, 1)
    return w2


def columns(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer's input as rows of (in) features matching ``weight_2d``'s columns (im2col for Conv)."""
    if isinstance(mod, nn.modules.conv._ConvNd):
        if x.dim() == mod.weight.dim() - 1:  # unbatched
            x = x.unsqueeze(0)
        if isinstance(mod, nn.Conv1d):
            x4, k, s = x.unsqueeze(2), (1,) + mod.kernel_size, (1,) + mod.stride
            p, d = (0,) + _pad(mod), (1,) + mod.dilation
        else:
            x4, k, s, p, d = x, mod.kernel_size, mod.stride, _pad(mod), mod.dilation
        if mod.padding_mode != "zeros" and any(p):
            x4 = F.pad(x4, [q for v in reversed(p) for q in (v, v)], mode=mod.padding_mode)
            p = (0,) * len(p)
        cols = F.unfold(x4, k, dilation=d, padding=p, stride=s)  # (N, C*K, L), C-major
        n, _, length = cols.shape
        c = mod.in_channels
        return cols.view(n, c, -1, length).permute(0, 3, 2, 1).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


def _pad(mod: nn.modules.conv._ConvNd) -> tuple[int, ...]:
    if isinstance(mod.padding, str):
        raise ValueError(f"Conv padding={mod.padding!r} is not supported by post-training pruning")
    return tuple(mod.padding)


def supported(mod: nn.Module) -> str | None:
    """None when post-training pruning handles ``mod``; else why not."""
    if isinstance(mod, nn.modules.conv._ConvNd):
        if mod.transposed or mod.groups != 1 or isinstance(mod, nn.Conv3d):
            return "only plain Conv1d/Conv2d (groups=1, not transposed) are supported"
        if isinstance(mod.padding, str):
            return f"Conv padding={mod.padding!r} is not supported"
        return None
    if isinstance(mod, nn.Linear) or type(mod).__name__ == "Conv1D":
        return None
    return f"{type(mod).__name__} is not a Linear or Conv layer"


class Stats:
    """Per-layer input statistics accumulated over calibration tokens: column norms and, if asked, X^T X."""

    def __init__(self, n_in: int, hessian: bool, device: torch.device | str = "cpu"):
        self.sq = torch.zeros(n_in, dtype=torch.float64, device=device)  # on the layer's device, as its inputs
        self.h = torch.zeros(n_in, n_in, dtype=torch.float32, device=device) if hessian else None
        self.rows = 0

    def add(self, x: torch.Tensor) -> None:
        """Fold in a (rows, in) batch of inputs."""
        x = x.detach().float()
        for part in x.split(max(1, CHUNK // max(x.shape[1], 1))):  # float64 squares, a few MiB at a time
            self.sq += part.double().square_().sum(0)
        if self.h is not None:
            self.h.addmm_(x.t(), x)
        self.rows += x.shape[0]

    def norms(self) -> torch.Tensor:
        """||X_j||_2 per input column (over all calibration tokens)."""
        return self.sq.sqrt().float()

    def take_hessian(self) -> torch.Tensor:
        """2 X^T X / rows, the Hessian of the layer's squared reconstruction error: scaled in place and handed
        over (the Stats no longer holds it, so SparseGPT's caller keeps no second n x n copy)."""
        if self.h is None:
            raise RuntimeError("no Hessian here: it was not collected (hessian=False) or was already taken")
        h, self.h = self.h, None
        return h.mul_(2.0 / max(self.rows, 1))


def collect(layers: dict[str, nn.Module], run: Callable[[], None], hessian: bool,
            tokens: Tokens | None = None) -> dict[str, Stats]:
    """Hook ``layers``, call ``run()`` (which runs the forward passes), return each layer's input stats
    (over the real tokens only, when ``tokens`` knows the batches' attention masks)."""
    stats = {n: Stats(weight_2d(m).shape[1], hessian, weight_2d(m).device) for n, m in layers.items()}
    handles = []
    for name, mod in layers.items():
        def hook(m, args, _name=name):
            for part in _pieces(m, args[0], tokens):
                check_finite(part, f"the input of layer {_name!r}")
                stats[_name].add(columns(m, part))
        handles.append(mod.register_forward_pre_hook(hook))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return stats


def _pieces(mod: nn.Module, x: torch.Tensor, tokens: Tokens | None) -> Iterator[torch.Tensor]:
    """A Linear's input in pieces of whole samples of about ``CHUNK`` elements, without the padding tokens
    when ``tokens`` knows them: no copy of the whole input is made (Conv inputs go whole, for im2col)."""
    if isinstance(mod, nn.modules.conv._ConvNd) or x.dim() < 2:
        yield x
        return
    m = tokens.mask_for(mod, x) if tokens is not None else None
    step = max(1, CHUNK // max(x[0].numel(), 1))
    for j in range(0, x.shape[0], step):
        part = x[j:j + step]
        yield part if m is None else part[m[j:j + step]]


def as_list(batches: Iterable[Any]) -> list[Any]:
    """Calibration batches as a list, checked to be non-empty."""
    if batches is None or isinstance(batches, (str, bytes)):
        raise TypeError(f"calibration_batches must be an iterable of batches (tensors, tuples or dicts), "
                        f"got {type(batches).__name__}")
    if isinstance(batches, (torch.Tensor, dict)):
        raise TypeError("calibration_batches must be an iterable of batches, not one batch: wrap it in a list")
    out = list(batches)
    if not out:
        raise ValueError("calibration_batches is empty: post-training pruning needs at least one batch")
    return out


def keep_count(n: int, sparsity: float) -> int:
    """How many of ``n`` weights a group keeps at ``sparsity``."""
    return n - int(math.floor(sparsity * n + 1e-9))


@contextmanager
def calibrating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no key/value cache while calibrating; both restored afterwards."""
    was = {m: m.training for m in model.modules()}
    config = getattr(model, "config", None)
    cache = getattr(config, "use_cache", None)
    if cache is not None:
        config.use_cache = False
    model.eval()
    try:
        yield
    finally:
        for m, t in was.items():
            m.training = t
        if cache is not None:
            config.use_cache = cache
