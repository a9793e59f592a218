"""Dense, pruned, int8 and pruned+int8 side by side: quality, file size and latency where each will run."""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._inputs import ExampleInputs, check_inputs, check_module
from ..measure.latency import Latency, measure_latency
from .onnx_export import export_onnx
from .quantize import quantize
from .runtime import OnnxModel


@dataclass(frozen=True)
class Variant:
    """One deployable form of a model: its quality, ``.onnx`` size, and latency in PyTorch (fp32 only) and
    onnxruntime."""

    name: str
    quality: float
    params: int
    file_bytes: int
    onnx_latency: Latency
    torch_latency: Latency | None
    description: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return asdict(self)


def compare(model: nn.Module, pruned: nn.Module, example_inputs: ExampleInputs,
            evaluate: Callable[[Any], float], *, calibration: Any = None, threads: int = 1, warmup: int = 5,
            runs: int = 20) -> list[Variant]:
    """Measure ``model`` and ``pruned`` in fp32 and int8 (``quantize`` with ``calibration``) the same way.

    ``evaluate`` gets each variant as it will run (an ``nn.Module`` for fp32, an ``OnnxModel`` for int8)
    and returns a quality, higher is better. Latency is timed at the batch size of ``example_inputs``
    on ``threads`` threads, in PyTorch for fp32 and in onnxruntime for all four.
    """
    check_module(model)
    check_module(pruned, "pruned")
    check_inputs(example_inputs)
    if not callable(evaluate):
        raise TypeError(f"evaluate must be a callable(model) -> float, got {type(evaluate).__name__}")
    variants = []
    with tempfile.TemporaryDirectory(prefix="secateurs-compare-") as tmp:
        for name, source in (("dense fp32", model), ("pruned fp32", pruned)):
            onnx = export_onnx(source, example_inputs, Path(tmp) / "model.onnx", threads=threads)
            variants.append(_variant(name, source, source, onnx, example_inputs, evaluate, threads, warmup, runs))
        for name, source in (("int8", model), ("pruned+int8", pruned)):
            q = quantize(source, example_inputs, calibration, threads=threads)
            variants.append(_variant(name, source, q, q, example_inputs, evaluate, threads, warmup, runs))
    return variants


def _variant(name: str, source: nn.Module, runnable: Any, onnx: OnnxModel, example_inputs: ExampleInputs,
             evaluate: Callable[[Any], float], threads: int, warmup: int, runs: int) -> Variant:
    torch_latency = None
    if isinstance(runnable, nn.Module):
        torch_latency = measure_latency(runnable, example_inputs, warmup=warmup, runs=runs, threads=threads)
    with torch.no_grad():
        quality = float(evaluate(runnable))
    return Variant(name=name, quality=quality, params=sum(p.numel() for p in source.parameters()),
                   file_bytes=onnx.nbytes, onnx_latency=onnx.latency(example_inputs, warmup=warmup, runs=runs),
                   torch_latency=torch_latency, description=onnx.description)


def table(variants: list[Variant], quality: str = "quality") -> str:
    """A Markdown table of ``compare``'s variants, sizes and qualities relative to the first (dense) one."""
    dense = variants[0]
    lines = [f"| variant | params | {quality} | .onnx size | vs dense | PyTorch ms | onnxruntime ms |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for v in variants:
        torch_ms = "-" if v.torch_latency is None else f"{v.torch_latency.median_ms:.3f}"
        lines.append(f"| {v.name} | {v.params:,} | {v.quality:.4f} ({v.quality - dense.quality:+.4f}) | "
                     f"{v.file_bytes / 1e3:.1f} kB | {dense.file_bytes / v.file_bytes:.1f}x | {torch_ms} | "
                     f"{v.onnx_latency.median_ms:.3f} |")
    return "\n".join(lines)
