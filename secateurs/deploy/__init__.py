"""Ship a pruned model: ONNX export verified in onnxruntime, and int8 quantisation for CPU."""
from ..measure.measurement import register_runtime
from .onnx_export import export_onnx, onnx_latency
from .quantize import quantize
from .runtime import OnnxModel

register_runtime("onnxruntime", onnx_latency)

__all__ = ["OnnxModel", "export_onnx", "onnx_latency", "quantize"]
