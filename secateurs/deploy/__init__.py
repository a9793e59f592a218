"""Ship a pruned model: ONNX export verified in onnxruntime, int8 quantisation for CPU, side-by-side comparison."""
from ..measure.measurement import register_runtime
from .compare import Variant, compare, table
from .onnx_export import export_onnx, onnx_latency
from .quantize import quantize
from .runtime import OnnxModel

register_runtime("onnxruntime", onnx_latency)

__all__ = ["OnnxModel", "Variant", "compare", "export_onnx", "onnx_latency", "quantize", "table"]
