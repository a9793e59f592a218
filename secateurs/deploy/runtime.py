"""An ONNX model in onnxruntime that is called like a PyTorch module: tensors in, tensors out.

``OnnxModel`` is what ``export_onnx`` and ``quantize`` return, so the evaluate function written for
the PyTorch model (``model.eval()``, ``model(x)``, ``.argmax(-1)``) measures the deployed one too.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .._files import atomic_write
from .._inputs import ExampleInputs, batch_size_of, check_inputs, check_int, iter_tensors
from ..measure.latency import Latency, _percentile, check_latency_args


def require(module: str) -> Any:
    """Import an optional deployment dependency, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is needed for ONNX export and quantisation: pip install 'secateurs[deploy]'"
        ) from exc


class OnnxModel:
    """A serialized ONNX model run by onnxruntime on CPU, callable on torch tensors like the module it came from.

    Inputs are given as the PyTorch model took them (positional tensors or keyword tensors); outputs
    come back as a tensor, or a tuple of tensors when the model returned several (nested outputs
    such as Hugging Face ``ModelOutput``s are flattened in order).
    """

    def __init__(self, model_bytes: bytes, *, threads: int | None = None, path: str | None = None,
                 description: str = "fp32") -> None:
        ort = require("onnxruntime")
        if threads is not None:
            threads = check_int(threads, "threads", 1)
        self.model_bytes = model_bytes
        self.path = path
        self.description = description
        self.threads = threads
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ValueError(f"onnxruntime cannot load this model{_where(str(exc))}: {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.num_outputs = len(self.session.get_outputs())
        self.training = False
        self.unquantized: list[str] = []  # set by ``quantize``: nodes whose weights stayed float

    @classmethod
    def load(cls, path: str | os.PathLike, *, threads: int | None = None) -> OnnxModel:
        """Open an ``.onnx`` file written by ``export_onnx`` or ``OnnxModel.save``."""
        with open(path, "rb") as f:
            return cls(f.read(), threads=threads, path=os.fspath(path), description=f"from {os.fspath(path)}")

    @property
    def nbytes(self) -> int:
        """Size of the serialized model in bytes (what ``save`` writes to disk)."""
        return len(self.model_bytes)

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to ``path`` atomically (a temporary name in the same folder, then rename)."""
        atomic_write(path, self.model_bytes)

    def eval(self) -> OnnxModel:
        """No-op, for evaluate functions written for ``nn.Module`` (an ONNX model is always in inference mode)."""
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        """Refuse training mode: an exported model only runs inference."""
        if mode:
            raise ValueError("an OnnxModel runs inference only: it cannot be put in training mode")
        return self

    def feeds(self, example_inputs: ExampleInputs) -> dict[str, np.ndarray]:
        """The onnxruntime input dict for inputs given as the PyTorch model takes them."""
        check_inputs(example_inputs)
        if isinstance(example_inputs, Mapping):
            tensors = [example_inputs[name] for name in self.input_names if name in example_inputs]
            if len(tensors) != len(self.input_names):
                raise ValueError(f"the ONNX model takes inputs {self.input_names}, got keys {sorted(example_inputs)}")
        else:
            tensors = list(iter_tensors(example_inputs))
            if len(tensors) != len(self.input_names):
                raise ValueError(f"the ONNX model takes {len(self.input_names)} input tensors {self.input_names}, "
                                 f"got {len(tensors)}")
        for name, t in zip(self.input_names, tensors):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"ONNX input {name!r} must be a tensor, got {type(t).__name__}")
        return {name: t.detach().cpu().contiguous().numpy() for name, t in zip(self.input_names, tensors)}

    def run(self, example_inputs: ExampleInputs) -> list[np.ndarray]:
        """Run the session on ``example_inputs`` and return onnxruntime's raw numpy outputs."""
        feeds = self.feeds(example_inputs)
        try:
            return self.session.run(None, feeds)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"onnxruntime failed{_where(str(exc))}: {exc}") from exc

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args and kwargs:
            raise TypeError("call an OnnxModel with positional tensors or keyword tensors, not both")
        outputs = [torch.from_numpy(np.asarray(o)) for o in self.run(kwargs if kwargs else args)]
        return outputs[0] if self.num_outputs == 1 else tuple(outputs)

    def latency(self, example_inputs: ExampleInputs, *, warmup: int = 5, runs: int = 20) -> Latency:
        """Median and spread of ``session.run`` wall-clock time in ms, like ``measure_latency`` for PyTorch."""
        check_latency_args(warmup, runs, None)
        feeds = self.feeds(example_inputs)
        for _ in range(warmup):
            self.session.run(None, feeds)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.session.run(None, feeds)
            times.append((time.perf_counter() - start) * 1e3)
        times.sort()
        threads = self.threads if self.threads is not None else (os.cpu_count() or 1)
        return Latency(median_ms=_percentile(times, 0.5), p10_ms=_percentile(times, 0.1),
                       p90_ms=_percentile(times, 0.9), runs=runs, batch_size=batch_size_of(example_inputs),
                       threads=threads)

    def __repr__(self) -> str:
        return f"OnnxModel({self.description}, {self.nbytes} bytes, inputs {self.input_names})"


_NODE = re.compile(r"node (?:name )?['\"]?(/[^\s'\"]*)")


def _where(message: str) -> str:
    # the TorchScript exporter names nodes by module scope and op, e.g. "/layer1/layer1.0/conv1/Conv"
    m = _NODE.search(message)
    return f" at node {m.group(1)} (module scope / op type)" if m else ""
