"""Measure what a model costs: parameters, MACs, serialized bytes, sparsity and latency."""
from secateurs.measure.latency import (
                                      DEFAULT_THREADS,
                                      Latency,
                                      LatencyRatio,
                                      compare_latency,
                                      latency_ratio,
                                      measure_latency,
)
from secateurs.measure.macs import MacCount, count_macs
from secateurs.measure.measurement import Measurement, measure
from secateurs.measure.params import count_params, effective_parameters, size_bytes
from secateurs.measure.sparsity import ENCODINGS, LayerSparsity, Sparsity, sparsity

__all__ = [
    "DEFAULT_THREADS",
    "ENCODINGS",
    "LayerSparsity",
    "Latency",
    "LatencyRatio",
    "MacCount",
    "Measurement",
    "Sparsity",
    "count_macs",
    "compare_latency",
    "count_params",
    "effective_parameters",
    "latency_ratio",
    "measure",
    "measure_latency",
    "size_bytes",
    "sparsity",
]
