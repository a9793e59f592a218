"""One call that measures a model: parameters, MACs, serialized bytes and (optionally) latency."""
from __future__ import annotations

import html
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from secateurs._inputs import ExampleInputs, check_bool, check_inputs, check_module
from secateurs.measure.latency import DEFAULT_THREADS, SPREAD_WARNING, Latency, check_latency_args, measure_latency
from secateurs.measure.macs import count_macs
from secateurs.measure.params import count_params, deployed_size_bytes, effective_parameters, is_masked
from secateurs.measure.sparsity import weight_bytes


@dataclass(frozen=True)
class Measurement:
    """What a model costs: parameter count, MACs (total and by kind), bytes and latency.

    - ``params``: parameter elements (tied parameters once).
    - ``macs`` / ``macs_by_kind``: multiply-accumulates of one forward on the example inputs (of the
      model as it will be once pending structured masks are applied).
    - ``size_bytes``: bytes of the state dict (parameters *and* buffers) serialized with safetensors,
      as deployed: a masked model (``masked`` True) counts its weights with the masks baked in, not
      its originals plus masks, and a model with pending structured masks counts its pruned form.
    - ``nonzero_params``: nonzero values among the effective parameters (masks applied, tied once).
    - ``dense_bytes``: sum of ``numel * element_size`` over the effective parameters; buffers
      (BatchNorm running statistics, masks ...) are excluded, so this is the weights' dense payload.
    - ``compressed_bytes``: the same parameters in sparse encodings, by name. For ``"bitmask+fp32"``
      and ``"bitmask+fp16"`` each parameter tensor costs ``ceil(numel / 8)`` bytes of bitmask plus
      ``nonzero * 4`` (or ``* 2``) bytes of values, summed over tensors; buffers excluded, no headers.

    "Effective" means torch parametrizations (e.g. 0/1 masks) resolved: a masked weight counts as the
    model computes with it. The three sparse fields are None on a Measurement built without them.
    The printed "% sparse" is ``1 - nonzero_params / params``.
    - ``onnx_latency``: the same timing of the model exported to ONNX and run in onnxruntime
      (``measure(..., runtime="onnxruntime")``), beside PyTorch's ``latency``; None otherwise.
    """

    params: int
    macs: int
    macs_by_kind: dict[str, int]
    size_bytes: int
    latency: Latency | None = None
    nonzero_params: int | None = None
    dense_bytes: int | None = None
    compressed_bytes: dict[str, int] | None = None
    onnx_latency: Latency | None = None
    masked: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (latency as a nested dict, or None)."""
        return asdict(self)

    def _rows(self) -> list[tuple[str, str]]:
        rows = [("params", "{}{}".format(*_human(self.params, ("", "K", "M", "B", "T"), 2)))]
        rows.append(("MACs", _macs(self.macs)))
        rows += [(f"  {kind}", _macs(macs)) for kind, macs in self.macs_by_kind.items() if macs]
        rows.append(("size", _bytes(self.size_bytes) + (" (as deployed: the model is masked; masks baked in)"
                                                         if self.masked else "")))
        if self.dense_bytes is not None and self.nonzero_params is not None:
            zeros = 1 - self.nonzero_params / self.params if self.params else 0.0
            nonzero = "{}{}".format(*_human(self.nonzero_params, ("", "K", "M", "B", "T"), 2))
            rows.append(("weights", f"dense {_bytes(self.dense_bytes)}, {nonzero} nonzero ({100 * zeros:.1f}% sparse)"))
        if self.compressed_bytes:
            packed = ", ".join(f"{name} {_bytes(size)}" for name, size in self.compressed_bytes.items())
            rows.append(("" if rows[-1][0] == "weights" else "weights", f"compressed: {packed}"))
        if self.latency is not None:
            rows.append(("latency", _describe(self.latency)))
        if self.onnx_latency is not None:
            rows.append(("onnxruntime", _describe(self.onnx_latency)))
        return rows

    def __str__(self) -> str:
        rows = self._rows()
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)

    def _repr_html_(self) -> str:
        """An HTML table for Jupyter (every cell escaped)."""
        cells = "".join(f"<tr><th style=\"text-align:left\">{html.escape(label)}</th><td style=\"text-align:left\">"
                        f"{html.escape(value)}</td></tr>" for label, value in self._rows())
        return f"<table class=\"secateurs-measurement\">{cells}</table>"


#: Runtimes ``measure`` can time a model in; all but "torch" are timed by a layer above (deploy/).
RUNTIMES = ("torch", "onnxruntime")
_TIMERS: dict[str, Callable[..., Latency]] = {}


def register_runtime(name: str, timer: Callable[..., Latency]) -> None:
    """Let ``measure(..., runtime=name)`` time a model with
    ``timer(model, example_inputs, warmup=, runs=, threads=)``."""
    if name not in RUNTIMES[1:]:
        raise ValueError(f"runtime name must be one of {list(RUNTIMES[1:])}, got {name!r}")
    _TIMERS[name] = timer


_PREVIEWS: list[Callable[[nn.Module], nn.Module | None]] = []


def register_preview(fn: Callable[[nn.Module], nn.Module | None]) -> None:
    """Let a higher layer (pruning) say what a model will be once its pending masks are applied."""
    _PREVIEWS.append(fn)


def as_applied(model: nn.Module) -> nn.Module:
    """The model as it will be once pending structured masks are applied (itself when none are)."""
    for fn in _PREVIEWS:
        out = fn(model)
        if out is not None:
            return out
    return model


def measure(
    model: nn.Module,
    example_inputs: ExampleInputs,
    *,
    latency: bool = True,
    warmup: int = 5,
    runs: int = 20,
    threads: int | None = DEFAULT_THREADS,
    runtime: str = "torch",
) -> Measurement:
    """Measure ``model`` on ``example_inputs``; latency (``warmup``/``runs``/``threads``) only when ``latency``.

    A model carrying structured masks (``apply(..., mode="mask")``) reports the MACs it will have once
    the masks are applied, so candidates can be compared before surgery. The sparse accounting
    (``nonzero_params``, ``dense_bytes``, ``compressed_bytes``; see ``Measurement``) reads the model's
    effective parameters as they are, masks applied; ``params`` reads it as stored; ``size_bytes`` as
    deployed (masks are not shipped: see ``Measurement``). Latency runs on ``threads`` threads
    (default ``DEFAULT_THREADS``; None keeps torch's setting) and a p90/p10 spread above
    ``SPREAD_WARNING`` warns that the machine is busy and the numbers unreliable.

    ``runtime="onnxruntime"`` also exports the model to ONNX and times it in onnxruntime with the
    same ``warmup``/``runs``/``threads`` (``onnx_latency``); it needs ``latency=True``.

    A forward that fails raises a ValueError showing the original exception; the model is not changed.
    """
    check_module(model)
    check_inputs(example_inputs)
    latency = check_bool(latency, "latency")
    check_latency_args(warmup, runs, threads)
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
    if runtime == "onnxruntime" and not latency:
        raise ValueError("runtime='onnxruntime' times the model in onnxruntime: it needs latency=True")
    applied = as_applied(model)
    macs = count_macs(applied, example_inputs)
    weights = weight_bytes(effective_parameters(model).items())
    timed = measure_latency(model, example_inputs, warmup=warmup, runs=runs, threads=threads) if latency else None
    if timed is not None and timed.runs >= 5 and timed.spread > SPREAD_WARNING:
        warnings.warn(f"latency is unsteady: p90 {_ms(timed.p90_ms)} ms is {timed.spread:.1f}x p10 "
                      f"{_ms(timed.p10_ms)} ms (over {SPREAD_WARNING}x): the machine is busy, so the median "
                      "is not to be trusted; measure again when it is idle or with fewer threads", stacklevel=2)
    return Measurement(
        params=count_params(model),
        macs=macs.total,
        macs_by_kind=macs.by_kind,
        size_bytes=deployed_size_bytes(applied),
        latency=timed,
        nonzero_params=weights.nonzero,
        dense_bytes=weights.dense_bytes,
        compressed_bytes=weights.compressed_bytes,
        onnx_latency=(_TIMERS["onnxruntime"](model, example_inputs, warmup=warmup, runs=runs, threads=threads)
                      if runtime == "onnxruntime" else None),
        masked=is_masked(model),
    )


def _human(value: float, units: tuple[str, ...], decimals: int) -> tuple[str, str]:
    """``value`` scaled by powers of 1000 to stay below 1000 once rounded (or to the last unit), and that unit."""
    step = 0
    while round(abs(value), decimals) >= 1000 and step < len(units) - 1:
        value /= 1000
        step += 1
    return (f"{value:.0f}" if step == 0 else f"{value:.{decimals}f}"), units[step]


def _bytes(value: int) -> str:
    return "{} {}".format(*_human(value, ("B", "kB", "MB", "GB", "TB"), 1))


def _macs(value: int) -> str:
    return "{} {}MACs".format(*_human(value, ("", "K", "M", "G", "T"), 2))


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 1 else f"{value:.3f}"


def _describe(latency: Latency) -> str:
    batch = "?" if latency.batch_size is None else latency.batch_size
    threads = f"{latency.threads} thread" + ("" if latency.threads == 1 else "s")
    return (
        f"median {_ms(latency.median_ms)} ms (p10 {_ms(latency.p10_ms)}, p90 {_ms(latency.p90_ms)}), "
        f"batch {batch}, {threads}"
    )
