"""int8 quantisation for CPU deployment, done by onnxruntime on the exported ONNX model.

Why onnxruntime and not torchao: on this machine (torch 2.14, torchao 0.18, x86 CPU, one thread)
torchao's ``Int8DynamicActivationInt8WeightConfig`` made a 512-1024-512 MLP 22x *slower* in eager
PyTorch (1.0 ms -> 23 ms) and ``Int8WeightOnlyConfig`` no faster (1.3 ms); neither state dict
saves with safetensors. onnxruntime's static QDQ quantisation made the MNIST-1D CNN 3x faster
(1.32 -> 0.43 ms) and its file 2.6x smaller, and quantised ONNX files are what a CPU server runs.

- ``calibration`` given: static quantisation (QDQ format, int8 weights per output channel, uint8
  activations with ranges observed on the calibration batches). Covers Conv, Gemm/MatMul, and more.
- ``calibration=None``: dynamic quantisation (int8 weights; activation ranges computed per batch at
  run time) of MatMul/Gemm, Conv and Gather (embeddings). Fast for Linear/embedding models; a conv
  net runs slower dynamically (ConvInteger), so give it calibration data.

Weights use 7 of their 8 bits (``reduce_range=True``) in both modes: x86 CPUs without VNNI multiply
uint8 activations by int8 weights in int16 pairs that saturate at full range; without it a single
``Linear(6, 4)`` was off by 25% of its output range on this machine, with it by 1%.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .._inputs import ExampleInputs, check_bool, check_inputs, check_int
from .onnx_export import DEFAULT_OPSET, check_close, onnx_bytes
from .runtime import OnnxModel, require

BACKENDS = ("onnxruntime",)
#: Weight tensors at least this large that stay float after quantisation are reported.
REPORT_MIN_NUMEL = 1024


def quantize(
    model: nn.Module,
    example_inputs: ExampleInputs,
    calibration: torch.Tensor | Iterable[ExampleInputs] | None = None,
    *,
    backend: str = "onnxruntime",
    per_channel: bool = True,
    opset: int = DEFAULT_OPSET,
    threads: int | None = None,
    batch_size: int = 32,
    compact: bool = True,
) -> OnnxModel:
    """int8-quantise ``model`` (pruned, masked or dense) for CPU; return it as an ``OnnxModel`` in onnxruntime.

    ``calibration``: a tensor of inputs (split into batches of ``batch_size``) or an iterable of
    batches shaped like ``example_inputs``; with it, static quantisation; without, dynamic. The fp32
    export is checked against PyTorch before quantising. Weight tensors that the quantiser left in
    float (ops it has no int8 kernel for) are listed in ``result.unquantized`` and warned about, by
    ONNX node name (module scope) and op. The user's model is not modified. ``compact`` drops doc
    strings and value_info and renames inner tensors and nodes to short names (for a small model the
    names are most of the file: 15.1 -> 8.5 kB on the 60%-pruned MNIST-1D CNN); False keeps the
    module-scope names for debugging.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r} (torchao's CPU int8 paths "
                         "were slower than fp32 with torch 2.14: see secateurs/deploy/quantize.py)")
    per_channel = check_bool(per_channel, "per_channel")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    compact = check_bool(compact, "compact")
    check_inputs(example_inputs)
    batches = None if calibration is None else _calibration_batches(calibration, batch_size)
    q = require("onnxruntime.quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    data, baked = onnx_bytes(model, example_inputs, dynamic_batch=True, opset=opset)
    fp32 = OnnxModel(data, threads=threads)
    check_close(baked, fp32, example_inputs, atol=1e-4, rtol=1e-4)
    with tempfile.TemporaryDirectory(prefix="secateurs-quant-") as tmp:
        source, prepared, out = (os.path.join(tmp, n) for n in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        with open(source, "wb") as f:
            f.write(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(source, prepared, skip_symbolic_shape=True)
            try:
                if batches is None:
                    q.quantize_dynamic(prepared, out, weight_type=q.QuantType.QInt8, per_channel=per_channel,
                                       op_types_to_quantize=["MatMul", "Gemm", "Conv", "Gather"], reduce_range=True)
                    how = "int8 dynamic"
                else:
                    reader = _Reader([fp32.feeds(b) for b in batches])
                    q.quantize_static(prepared, out, reader, quant_format=q.QuantFormat.QDQ, per_channel=per_channel,
                                      weight_type=q.QuantType.QInt8, activation_type=q.QuantType.QUInt8,
                                      reduce_range=True)
                    how = f"int8 static ({len(batches)} calibration batches)"
            except Exception as exc:  # noqa: BLE001 - onnxruntime's quantiser raises assorted types
                raise ValueError(f"onnxruntime could not quantise {type(model).__name__}: "
                                 f"{type(exc).__name__}: {exc}") from exc
        with open(out, "rb") as f:
            result = OnnxModel(f.read(), threads=threads, description=f"{how}, opset {opset}")
    result.unquantized = unquantized_weights(result.model_bytes)
    if compact:
        unquantized = result.unquantized
        result = OnnxModel(compact_graph(result.model_bytes), threads=threads, description=result.description)
        result.unquantized = unquantized
    if result.unquantized:
        warnings.warn(f"quantize left {len(result.unquantized)} weight tensors in float, in nodes "
                      f"{result.unquantized[:5]}: onnxruntime has no int8 kernel for these ops", stacklevel=2)
    return result


def compact_graph(model_bytes: bytes) -> bytes:
    """``model_bytes`` without doc strings, metadata or value_info, inner tensors and nodes renamed ``t0``, ``n0``...

    Graph inputs and outputs keep their names, so feeds and outputs are unchanged; only the file shrinks.
    A graph with subgraphs (If, Loop) is returned unchanged.
    """
    import onnx
    m = onnx.load_from_string(model_bytes)
    subgraph = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    if any(a.type in subgraph for n in m.graph.node for a in n.attribute):
        return model_bytes  # subgraphs (If, Loop) refer to outer names: left as they are
    keep = {v.name for v in m.graph.input} | {v.name for v in m.graph.output} | {""}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        return name if name in keep else names.setdefault(name, f"t{len(names)}")

    m.doc_string = m.graph.doc_string = ""
    del m.metadata_props[:]
    del m.graph.value_info[:]
    for init in m.graph.initializer:
        init.name = short(init.name)
        init.doc_string = ""
    for i, node in enumerate(m.graph.node):
        node.name, node.doc_string = f"n{i}", ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    return m.SerializeToString()


def unquantized_weights(model_bytes: bytes) -> list[str]:
    """``"node name (op)"`` (module scope, as the exporter names nodes) for every node that still reads a float
    weight of >= ``REPORT_MIN_NUMEL`` elements."""
    onnx = require("onnx")
    import math

    proto = onnx.load_from_string(model_bytes)
    floats = {t.name for t in proto.graph.initializer
              if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
              and math.prod(t.dims) >= REPORT_MIN_NUMEL}
    # a DequantizeLinear reads int8 data; only float initializers fed to compute ops count
    return [f"{n.name.removeprefix('/model')} ({n.op_type})" for n in proto.graph.node
            if n.op_type != "DequantizeLinear" and any(i in floats for i in n.input)]


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of input dicts."""

    def __init__(self, feeds: list[dict[str, Any]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)


def _calibration_batches(calibration: Any, batch_size: int) -> list[ExampleInputs]:
    if isinstance(calibration, torch.Tensor):
        if calibration.dim() == 0 or len(calibration) == 0:
            raise ValueError("calibration must hold at least one input: got an empty or 0-d tensor")
        return list(calibration.split(batch_size))
    if isinstance(calibration, (str, bytes, Mapping)) or not isinstance(calibration, Iterable):
        raise TypeError("calibration must be a tensor of inputs or an iterable of batches shaped like example_inputs, "
                        f"got {type(calibration).__name__}")
    batches = list(calibration)
    if not batches:
        raise ValueError("calibration holds no batches")
    for b in batches:
        check_inputs(b)
    return batches

