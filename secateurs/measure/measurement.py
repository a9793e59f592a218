"""One call that measures a model: parameters, MACs, serialized bytes and (optionally) latency."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Any

from torch import nn

from secateurs._inputs import ExampleInputs, check_inputs, check_module
from secateurs.measure.latency import Latency, check_latency_args, measure_latency
from secateurs.measure.macs import count_macs
from secateurs.measure.params import count_params, size_bytes


@dataclass(frozen=True)
class Measurement:
    """What a model costs: parameter count, MACs (total and by kind), safetensors bytes and latency."""

    params: int
    macs: int
    macs_by_kind: dict[str, int]
    size_bytes: int
    latency: Latency | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (latency as a nested dict, or None)."""
        return asdict(self)

    def __str__(self) -> str:
        rows = [("params", "{}{}".format(*_human(self.params, ("", "K", "M", "B", "T"), 2)))]
        rows.append(("MACs", _macs(self.macs)))
        rows += [(f"  {kind}", _macs(macs)) for kind, macs in self.macs_by_kind.items() if macs]
        rows.append(("size", "{} {}".format(*_human(self.size_bytes, ("B", "kB", "MB", "GB", "TB"), 1))))
        if self.latency is not None:
            rows.append(("latency", _describe(self.latency)))
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


_PREVIEWS: list[Callable[[nn.Module], "nn.Module | None"]] = []


def register_preview(fn: Callable[[nn.Module], "nn.Module | None"]) -> None:
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
    threads: int | None = None,
) -> Measurement:
    """Measure ``model`` on ``example_inputs``; latency (``warmup``/``runs``/``threads``) only when ``latency``.

    A model carrying structured masks (``apply(..., mode="mask")``) reports the MACs it will have once
    the masks are applied, so candidates can be compared before surgery.

    A forward that fails raises a ValueError showing the original exception; the model is not changed.
    """
    check_module(model)
    check_inputs(example_inputs)
    if not isinstance(latency, bool):
        raise ValueError(f"latency must be True or False, got {latency!r}")
    check_latency_args(warmup, runs, threads)
    macs = count_macs(as_applied(model), example_inputs)
    return Measurement(
        params=count_params(model),
        macs=macs.total,
        macs_by_kind=macs.by_kind,
        size_bytes=size_bytes(model),
        latency=measure_latency(model, example_inputs, warmup=warmup, runs=runs, threads=threads) if latency else None,
    )


def _human(value: float, units: tuple[str, ...], decimals: int) -> tuple[str, str]:
    """``value`` scaled by powers of 1000 to stay below 1000 once rounded (or to the last unit), and that unit."""
    step = 0
    while round(abs(value), decimals) >= 1000 and step < len(units) - 1:
        value /= 1000
        step += 1
    return (f"{value:.0f}" if step == 0 else f"{value:.{decimals}f}"), units[step]


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
