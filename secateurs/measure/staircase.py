"""Per-machine latency tables: the measured forward time of single layers at candidate widths.

A kernel's time is a staircase in its channel count, not a line: a layer with 64 output channels
can run faster than one with 61. ``LatencyTable`` times Conv, Linear and BatchNorm layers, activation
and pooling modules (eval-mode BatchNorm, activations and pools are memory-bound: a large share of a
pruned CNN's time that MACs do not show; resnet50's stem max-pool is 8% of it at 50%) in isolation, on
synthetic inputs of the shapes traced from the real model, at the widths asked for, and caches
every measurement on disk (``$SECATEURS_CACHE/latency/<key>.json``, else
``~/.cache/secateurs/latency``) under a key naming the device, thread count, batch size and torch
version; inside, each entry is keyed by the layer's full signature at that width.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import platform
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from secateurs._files import atomic_write
from secateurs._inputs import (
    ExampleInputs,
    check_bool,
    check_device,
    check_inputs,
    check_int,
    check_module,
    run_forward,
)
from secateurs.measure._common import eval_mode

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.GELU, nn.Tanh, nn.Mish)
POOLS = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AdaptiveAvgPool1d: 1,
         nn.AdaptiveAvgPool2d: 2, nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2}  # class -> spatial dims
PARAMETER_FREE = ACTIVATIONS + tuple(POOLS)  # per channel, built from their constructor options
TIMED = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d) + PARAMETER_FREE
PARAMETER_FREE_KINDS = frozenset(a.__name__ for a in PARAMETER_FREE)  # timed out of place, on the traced input shape
ROLES = ("out", "in")
TARGET_MS = 0.5  # one timing sample repeats a layer until it lasts about this long
CHUNK = 16  # specs built and timed together, interleaved


@dataclass(frozen=True)
class LayerSpec:
    """One timed layer as it sits in the model: its configuration and the shape of its input."""

    kind: str  # "Conv1d", "Conv2d", "Linear", "BatchNorm1d", "BatchNorm2d" or an activation's or pool's class name
    in_ch: int
    out_ch: int
    input_shape: tuple[int, ...]  # channels at dim 1 for Conv, at the last dim for Linear
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    bias: bool = True
    dtype: str = "float32"
    options: tuple[tuple[str, object], ...] = ()  # an activation's or pool's constructor arguments

    @property
    def depthwise(self) -> bool:
        """A depthwise conv: one group per channel, so in, out and groups move together."""
        return self.groups > 1 and self.groups == self.in_ch == self.out_ch

    @property
    def per_channel(self) -> bool:
        """One width for both sides (a depthwise conv, a BatchNorm, an activation, a pool): timed along "out" only."""
        return self.depthwise or self.kind.startswith("BatchNorm") or self.kind in PARAMETER_FREE_KINDS

    def widths(self, role: str) -> int:
        """The layer's current width along ``role`` ("out" or "in")."""
        return self.out_ch if role == "out" else self.in_ch

    def at(self, role: str, width: int) -> LayerSpec:
        """The same layer with ``width`` channels along ``role`` (both sides of a depthwise conv)."""
        if self.depthwise:
            return _replace(self, in_ch=width, out_ch=width, groups=width)
        if self.per_channel:
            return _replace(self, in_ch=width, out_ch=width)
        if role == "out":
            return _replace(self, out_ch=width)
        return _replace(self, in_ch=width)

    def key(self) -> str:
        """A stable text key naming everything that decides this layer's forward time."""
        fields = [self.kind, f"in={self.in_ch}", f"out={self.out_ch}", f"x={_dims(self.input_shape)}",
                  f"k={_dims(self.kernel)}", f"s={_dims(self.stride)}", f"p={_dims(self.padding)}",
                  f"d={_dims(self.dilation)}", f"g={self.groups}", f"b={int(self.bias)}", self.dtype]
        if self.options:
            fields.append("o=" + ",".join(f"{k}={v!r}" for k, v in self.options))
        return "|".join(fields)

    def build(self, device: torch.device) -> tuple[nn.Module, torch.Tensor]:
        """A fresh layer of this configuration and a random input of the traced shape, on ``device``."""
        dtype = getattr(torch, self.dtype)
        shape = [self.input_shape[0], self.in_ch] + list(self.input_shape[2:])  # channels at dim 1
        if self.kind == "Linear":
            layer: nn.Module = nn.Linear(self.in_ch, self.out_ch, bias=self.bias)
            shape = list(self.input_shape[:-1]) + [self.in_ch]
        elif self.kind in PARAMETER_FREE_KINDS:
            layer = getattr(nn, self.kind)(**dict(self.options))
        elif self.kind.startswith("BatchNorm"):
            layer = getattr(nn, self.kind)(self.in_ch, affine=self.bias)
            layer.running_var.uniform_(0.5, 2.0)
        else:
            conv = nn.Conv1d if self.kind == "Conv1d" else nn.Conv2d
            layer = conv(self.in_ch, self.out_ch, self.kernel, self.stride, self.padding, self.dilation,
                         self.groups, bias=self.bias)
        layer = layer.to(device=device, dtype=dtype).eval()
        return layer, torch.randn(shape, device=device, dtype=dtype)


def _replace(spec: LayerSpec, **changes) -> LayerSpec:
    return LayerSpec(**{**spec.__dict__, **changes})


def _dims(xs: Iterable[int]) -> str:
    return ",".join(str(x) for x in xs)


def layer_specs(model: nn.Module, example_inputs: ExampleInputs) -> dict[str, LayerSpec]:
    """The Conv1d/Conv2d/Linear/BatchNorm layers, activation and pooling modules ``model`` runs on
    ``example_inputs``, by module name, with the shape each one's input had on its first call (one eval
    forward; the model is not changed)."""
    check_module(model)
    check_inputs(example_inputs)
    found: dict[str, LayerSpec] = {}
    hooks = []

    def hook(name: str):
        def record(mod: nn.Module, args: tuple) -> None:
            if name in found or not args or not isinstance(args[0], torch.Tensor):
                return
            spatial = POOLS.get(type(mod))
            if isinstance(mod, PARAMETER_FREE) and (args[0].dim() < 2 if spatial is None else
                                                    args[0].dim() != spatial + 2):
                return  # no batch and channel dims to time it by (an unbatched pool has its channels at dim 0)
            found[name] = _spec(mod, tuple(args[0].shape))
        return record

    for name, mod in model.named_modules():
        if type(mod) in TIMED and isinstance(getattr(mod, "padding", 0), (int, tuple)) and _timeable(mod):
            hooks.append(mod.register_forward_pre_hook(hook(name)))
    try:
        with eval_mode(model), torch.no_grad():
            run_forward(model, example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return found


def _timeable(mod: nn.Module) -> bool:
    """BatchNorm is timed in eval mode with running statistics (as pruned models are served)."""
    return not isinstance(mod, nn.modules.batchnorm._BatchNorm) or mod.track_running_stats


def _spec(mod: nn.Module, shape: tuple[int, ...]) -> LayerSpec:
    if isinstance(mod, PARAMETER_FREE):
        return LayerSpec(type(mod).__name__, shape[1], shape[1], shape, bias=False, options=_options(mod))
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        dtype = str(mod.running_mean.dtype).removeprefix("torch.")
        return LayerSpec(type(mod).__name__, mod.num_features, mod.num_features, shape, bias=mod.affine, dtype=dtype)
    dtype = str(mod.weight.dtype).removeprefix("torch.")
    if isinstance(mod, nn.Linear):
        return LayerSpec("Linear", mod.in_features, mod.out_features, shape, bias=mod.bias is not None, dtype=dtype)
    return LayerSpec(type(mod).__name__, mod.in_channels, mod.out_channels, shape, tuple(mod.kernel_size),
                     tuple(mod.stride), tuple(mod.padding), tuple(mod.dilation), mod.groups,
                     mod.bias is not None, dtype)


def _options(mod: nn.Module) -> tuple[tuple[str, object], ...]:
    """The constructor arguments a parameter-free module keeps as attributes (``kernel_size``, ``stride``,
    ``approximate`` ...), so a fresh one computes the same thing; ``inplace`` is left out (timed out of place)."""
    names = [p for p in inspect.signature(type(mod).__init__).parameters if p not in ("self", "inplace")]
    return tuple((n, _frozen(getattr(mod, n))) for n in names if n in vars(mod))


def _frozen(value: object) -> object:
    """A list option as a tuple (``AdaptiveAvgPool2d([7, 7])`` keeps a list): the spec stays hashable, and its
    key the same as the tuple form's."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def cache_dir() -> Path:
    """Where latency tables live: ``$SECATEURS_CACHE/latency``, else ``~/.cache/secateurs/latency``."""
    root = os.environ.get("SECATEURS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "secateurs") / "latency"


def device_name(device: torch.device) -> str:
    """A name for the machine's compute device: the GPU's name, or the CPU's architecture and model."""
    if device.type == "cuda":
        return "cuda-" + torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"{device.type}-{platform.machine()}-{model}"


class LatencyTable:
    """Measured forward milliseconds of layers at given widths on one device, thread count and batch size.

    ``time(spec)`` returns a cached measurement or takes one; ``curve(spec, role, widths)`` measures a
    staircase and ``interpolate`` reads between its points. ``persist=False`` keeps it in memory only.
    """

    def __init__(self, batch_size: int, *, threads: int = 1, device: str | torch.device = "cpu",
                 warmup: int = 2, samples: int = 5, persist: bool = True, progress: bool = True) -> None:
        check_int(batch_size, "batch_size", 1)
        check_int(threads, "threads", 1)
        check_int(warmup, "warmup", 0)
        check_int(samples, "samples", 1)
        self.device = check_device(device)
        persist, progress = check_bool(persist, "persist"), check_bool(progress, "progress")
        self.batch_size, self.threads, self.warmup, self.samples = batch_size, threads, warmup, samples
        self.progress = progress
        self.key = (f"{device_name(self.device)}-t{threads}-b{batch_size}-torch{torch.__version__}")
        self.path = cache_dir() / (_safe(self.key) + ".json") if persist else None
        self.entries: dict[str, float] = self._load()
        self.measured = 0  # how many entries this table timed (the rest came from its cache)

    def _load(self) -> dict[str, float]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # a damaged cache is rebuilt, never trusted
        if not isinstance(data, dict) or data.get("key") != self.key or not isinstance(data.get("ms"), dict):
            return {}
        return {k: float(v) for k, v in data["ms"].items() if isinstance(v, (int, float)) and v > 0}

    def save(self) -> None:
        """Write the table to its cache file atomically (other processes may share it)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        current = self._load()  # keep what other processes wrote meanwhile
        current.update(self.entries)
        atomic_write(self.path, json.dumps({"key": self.key, "ms": current}, sort_keys=True))

    def time(self, spec: LayerSpec) -> float:
        """Forward milliseconds of ``spec`` at this table's batch size (taken from cache, or measured)."""
        return self.measure_all([spec])[0]

    def measure_all(self, specs: Sequence[LayerSpec], desc: str = "latency table") -> list[float]:
        """Time every spec not cached yet, under one progress bar, then save the cache.

        Specs are timed in chunks of ``CHUNK`` (neighbouring widths of a layer come together),
        interleaved sample by sample, so that load on the machine hits a staircase's points alike.
        """
        batched = [self._batched(s) for s in specs]
        todo = list({s.key(): s for s in batched if s.key() not in self.entries}.values())
        if todo:
            bar = tqdm(total=len(todo), desc=desc, disable=not self.progress, leave=False)
            previous = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                for i in range(0, len(todo), CHUNK):
                    chunk = todo[i:i + CHUNK]
                    for s, ms in zip(chunk, self._measure(chunk)):
                        self.entries[s.key()] = ms
                    self.measured += len(chunk)
                    bar.update(len(chunk))
            finally:
                torch.set_num_threads(previous)
                bar.close()
            self.save()
        return [self.entries[s.key()] for s in batched]

    def _batched(self, spec: LayerSpec) -> LayerSpec:
        if spec.input_shape and spec.input_shape[0] != self.batch_size:
            return _replace(spec, input_shape=(self.batch_size,) + tuple(spec.input_shape[1:]))
        return spec

    def _measure(self, specs: list[LayerSpec]) -> list[float]:
        """Minimum milliseconds per forward of each spec over ``samples`` interleaved samples."""
        built = [s.build(self.device) for s in specs]
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        best = [math.inf] * len(built)
        with torch.inference_mode():
            reps = []
            for layer, x in built:
                for _ in range(self.warmup):
                    layer(x)
                sync()
                start = time.perf_counter()
                layer(x)
                sync()
                once = (time.perf_counter() - start) * 1e3
                reps.append(max(1, min(100, math.ceil(TARGET_MS / max(once, 1e-4)))))
            for _ in range(self.samples):
                for i, ((layer, x), n) in enumerate(zip(built, reps)):
                    start = time.perf_counter()
                    for _ in range(n):
                        layer(x)
                    sync()
                    best[i] = min(best[i], (time.perf_counter() - start) * 1e3 / n)
        return best

    def predict(self, model: nn.Module, example_inputs: ExampleInputs) -> float:
        """Summed milliseconds of ``model``'s timed layers at their traced shapes (batch set to this
        table's): a deterministic proxy of its forward time, for comparing two widths of one model
        without the noise of timing whole models. Functional ops (``F.relu``, additions) are left out."""
        specs = list(layer_specs(model, example_inputs).values())
        if not specs:
            raise ValueError(f"{type(model).__name__} runs no Conv1d/Conv2d/Linear/BatchNorm layer, activation or "
                             "pooling module to predict from")
        return float(sum(self.measure_all(specs, desc="latency prediction")))

    def curve(self, spec: LayerSpec, role: str, widths: Sequence[int]) -> dict[int, float]:
        """Milliseconds of ``spec`` with each of ``widths`` channels along ``role`` (others unchanged)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {list(ROLES)}, got {role!r}")
        ws = sorted(set(widths))
        if not ws or ws[0] < 1:
            raise ValueError(f"widths must be positive integers, got {list(widths)[:10]}")
        return dict(zip(ws, self.measure_all([spec.at(role, w) for w in ws])))


def interpolate(points: dict[int, float], width: float) -> float:
    """Milliseconds at ``width`` read off a measured staircase: exact at its points, linear between,
    clamped at its ends."""
    if not points:
        raise ValueError("interpolate needs at least one measured point")
    ws = sorted(points)
    if width <= ws[0]:
        return points[ws[0]]
    if width >= ws[-1]:
        return points[ws[-1]]
    hi = next(i for i, w in enumerate(ws) if w >= width)
    a, b = ws[hi - 1], ws[hi]
    return points[a] + (points[b] - points[a]) * (width - a) / (b - a)


def staircase_widths(size: int, around: int | None = None, tolerance: float = 0.25) -> list[int]:
    """Candidate widths of a ``size``-channel layer: multiples of 8 and 16 (and ``size`` itself), all of
    them near ``around`` (within ``tolerance`` of it, with ``around`` itself), or a coarse sweep of the
    whole range when ``around`` is None."""
    if around is None:
        step = max(8, 8 * math.ceil(size / 8 / 12))
        ws = set(range(step, size + 1, step)) | {1, size}
        return sorted(ws)
    lo = max(1, math.floor(around * (1 - tolerance)))
    hi = min(size, math.ceil(around * (1 + tolerance)))
    ws = {w for w in range(lo, hi + 1) if w % 8 == 0} | {around}
    if hi == size:
        ws.add(size)
    return sorted(ws)


def _safe(key: str) -> str:
    short = "".join(c if c.isalnum() or c in "-._" else "_" for c in key)[:120]
    return f"{short}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
