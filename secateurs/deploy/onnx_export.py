"""Export a pruned, masked or dense model to ONNX and check it in onnxruntime against PyTorch.

The exporter is torch's TorchScript-based one (``dynamo=False``) by default: on torch 2.14 it exports
the zoo models tried here ten times faster than ``dynamo=True`` and keeps a dynamic batch where the
dynamo exporter specialises it (torchvision's ViT at batch 1). ``dynamo=True`` is offered as well.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .._files import atomic_write
from .._inputs import (
    ExampleInputs,
    check_bool,
    check_inputs,
    check_int,
    check_module,
    check_path,
    check_real,
    iter_tensors,
    run_forward,
)
from ..measure.latency import Latency
from ..prune.surgery import finalize
from .runtime import OnnxModel, require

#: Opsets accepted: the TorchScript exporter writes up to 20, the dynamo one from 18; quantisation needs >= 13.
OPSETS = range(13, 21)
DEFAULT_OPSET = 17  # the TorchScript exporter's; the dynamo exporter's is 18
DYNAMO_OPSET = 18


def export_onnx(
    model: nn.Module | OnnxModel,
    example_inputs: ExampleInputs,
    path: str | os.PathLike,
    *,
    dynamic_batch: bool = True,
    opset: int | None = None,
    dynamo: bool = False,
    verify: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    threads: int | None = None,
) -> OnnxModel:
    """Write ``model`` as ONNX to ``path`` (masks baked into a copy first) and return it loaded in onnxruntime.

    ``opset`` defaults to 17 (TorchScript exporter) or 18 (``dynamo=True``).
    With ``verify`` the exported model is run in onnxruntime on ``example_inputs`` (and, with
    ``dynamic_batch``, on a batch three times larger) and must match PyTorch within ``atol``/``rtol``,
    or a ValueError says by how much it differs and nothing is written. The file is written to a
    temporary name and renamed. The user's model is not modified. An ``OnnxModel`` (e.g. from
    ``quantize``) is written as it is.
    """
    path = _check_path(path)
    verify = check_bool(verify, "verify")
    atol, rtol = check_real(atol, "atol", "[0, inf)"), check_real(rtol, "rtol", "[0, inf)")
    if isinstance(model, OnnxModel):  # already exported (e.g. sc.quantize's result): write it as it is
        model.save(path)
        return model
    data, baked = onnx_bytes(model, example_inputs, dynamic_batch=dynamic_batch, opset=opset, dynamo=dynamo)
    exported = OnnxModel(data, threads=threads, path=path, description="fp32")
    if verify:
        check_close(baked, exported, example_inputs, atol=atol, rtol=rtol)
        if dynamic_batch:
            check_close(baked, exported, _repeat_batch(example_inputs, 3), atol=atol, rtol=rtol)
    atomic_write(path, data)
    return exported


def onnx_bytes(
    model: nn.Module,
    example_inputs: ExampleInputs,
    *,
    dynamic_batch: bool = True,
    opset: int | None = None,
    dynamo: bool = False,
) -> tuple[bytes, nn.Module]:
    """The serialized ONNX model of ``model`` and the baked eval-mode copy it was exported from."""
    require("onnx")
    check_module(model)
    check_inputs(example_inputs)
    dynamic_batch, dynamo = check_bool(dynamic_batch, "dynamic_batch"), check_bool(dynamo, "dynamo")
    if opset is None:
        opset = DYNAMO_OPSET if dynamo else DEFAULT_OPSET
    lowest = DYNAMO_OPSET if dynamo else OPSETS.start
    opset = check_int(opset, "opset" + (" (with dynamo=True)" if dynamo else ""), lowest, OPSETS.stop - 1)
    baked = finalize(copy.deepcopy(model)).eval()
    names, tensors = _named_inputs(example_inputs)
    flat = _Flat(baked, list(example_inputs) if isinstance(example_inputs, Mapping) else None).eval()
    with torch.no_grad():
        outputs = run_forward(flat, tuple(tensors))
    if not outputs:
        raise ValueError("the model returns no tensors: there is nothing to export")
    out_names = ["output"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]
    batch = int(tensors[0].shape[0]) if tensors[0].dim() else None
    if dynamic_batch and batch is None:
        raise ValueError("dynamic_batch=True needs a first input with a batch dimension; pass dynamic_batch=False")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            if dynamo:
                data = _export_dynamo(flat, tensors, names, out_names, dynamic_batch, opset)
            else:
                buffer = io.BytesIO()
                axes = None
                if dynamic_batch:
                    axes = {n: {0: "batch"} for n, t in zip(names, tensors) if t.dim()}
                    axes.update({n: {0: "batch"} for n, t in zip(out_names, outputs)
                                 if t.dim() and t.shape[0] == batch})
                torch.onnx.export(flat, tuple(tensors), buffer, dynamo=False, opset_version=opset, input_names=names,
                                  output_names=out_names, dynamic_axes=axes, do_constant_folding=True)
                data = buffer.getvalue()
    except Exception as exc:  # noqa: BLE001 - re-raised naming the module and op
        raise ValueError(f"cannot export {type(model).__name__} to ONNX (opset {opset}): "
                         f"{_culprit(flat, tensors, str(exc))}{type(exc).__name__}: {_first_line(exc)}") from exc
    return data, baked


def check_close(model: nn.Module, exported: OnnxModel, example_inputs: ExampleInputs, *, atol: float,
                rtol: float) -> None:
    """Raise a ValueError when ``exported`` (onnxruntime) and ``model`` (PyTorch) disagree on ``example_inputs``."""
    with torch.no_grad():
        expected = [t.detach().cpu().numpy() for t in iter_tensors(run_forward(model.eval(), example_inputs))]
    got = exported.run(example_inputs)
    if len(got) != len(expected):
        raise ValueError(f"onnxruntime returned {len(got)} outputs, PyTorch {len(expected)}")
    for i, (a, b) in enumerate(zip(got, expected)):
        if a.shape != b.shape:
            raise ValueError(f"output {i}: onnxruntime shape {a.shape}, PyTorch shape {b.shape}")
        if not np.allclose(a, b, atol=atol, rtol=rtol):
            diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
            raise ValueError(f"output {i}: onnxruntime differs from PyTorch by up to {diff:.3g} "
                             f"(atol {atol}, rtol {rtol})")


class _Flat(nn.Module):
    """The model called with positional tensors (keyword inputs re-keyed), returning a flat tuple of tensors."""

    def __init__(self, model: nn.Module, keys: list[str] | None) -> None:
        super().__init__()
        self.model = model
        self.keys = keys

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.keys, tensors))) if self.keys is not None else self.model(*tensors)
        return tuple(iter_tensors(out))


def _named_inputs(example_inputs: ExampleInputs) -> tuple[list[str], list[torch.Tensor]]:
    if isinstance(example_inputs, torch.Tensor):
        pairs = [("input", example_inputs)]
    elif isinstance(example_inputs, Mapping):
        pairs = [(str(k), v) for k, v in example_inputs.items()]
    else:
        pairs = [(f"input_{i}", v) for i, v in enumerate(example_inputs)]
    if not pairs:
        raise ValueError("example_inputs holds no inputs")
    for name, value in pairs:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"ONNX export takes tensor inputs only: input {name!r} is a {type(value).__name__}")
    return [n for n, _ in pairs], [v for _, v in pairs]


def _export_dynamo(flat: nn.Module, tensors: list[torch.Tensor], names: list[str], out_names: list[str],
                   dynamic_batch: bool, opset: int) -> bytes:
    shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        shapes = (tuple({0: batch} if t.dim() else None for t in tensors),)  # forward(*tensors): one varargs entry
    program = torch.onnx.export(flat, tuple(tensors), dynamo=True, opset_version=opset, input_names=names,
                                output_names=out_names, dynamic_shapes=shapes, verbose=False)
    return program.model_proto.SerializeToString()


_OP = re.compile(r"'((?:aten|prim|onnx)::\w+)'")


def _culprit(flat: nn.Module, tensors: list[torch.Tensor], message: str) -> str:
    """``"module 'a.b' (Cls) runs aten::op, which ... "``: the module calling the op the exporter refused."""
    m = _OP.search(message)
    if not m:
        return ""
    op = m.group(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = torch.jit.trace(flat, tuple(tensors), check_trace=False, strict=False).inlined_graph
    except Exception:  # noqa: BLE001 - locating the module is best effort; the op is still named
        return f"op {op} is not supported; "
    for node in graph.nodes():
        if node.kind() == op:
            scope = node.scopeName().split("/")[-1].removeprefix("__module.").removeprefix("model")
            name = scope.lstrip(".") or "<top>"
            owner = flat.model.get_submodule(scope.lstrip(".")) if scope.lstrip(".") else flat.model
            return f"module {name!r} ({type(owner).__name__}) runs {op}, which the exporter does not support; "
    return f"op {op} is not supported; "


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def _repeat_batch(example_inputs: ExampleInputs, times: int) -> ExampleInputs:
    def rep(v: Any) -> Any:
        return torch.cat([v] * times) if isinstance(v, torch.Tensor) and v.dim() else v

    if isinstance(example_inputs, torch.Tensor):
        return rep(example_inputs)
    if isinstance(example_inputs, Mapping):
        return {k: rep(v) for k, v in example_inputs.items()}
    return tuple(rep(v) for v in example_inputs)


def _check_path(path: Any) -> str:
    path = check_path(path, "path")
    if os.path.isdir(path):
        raise ValueError(f"path {path!r} is a directory: give a file name such as model.onnx")
    return path


def onnx_latency(model: nn.Module, example_inputs: ExampleInputs, *, warmup: int = 5, runs: int = 20,
                 threads: int | None = None) -> Latency:
    """Latency of ``model`` exported to ONNX (checked against PyTorch) and run in onnxruntime with ``threads``."""
    data, baked = onnx_bytes(model, example_inputs, dynamic_batch=False)
    exported = OnnxModel(data, threads=threads)
    check_close(baked, exported, example_inputs, atol=1e-4, rtol=1e-4)
    return exported.latency(example_inputs, warmup=warmup, runs=runs)
