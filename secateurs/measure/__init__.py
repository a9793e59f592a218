"""Measure what a model costs: parameters, MACs, serialized bytes and latency."""
from secateurs.measure.latency import Latency, measure_latency
from secateurs.measure.macs import MacCount, count_macs
from secateurs.measure.measurement import Measurement, measure
from secateurs.measure.params import count_params, size_bytes

__all__ = [
    "Latency",
    "MacCount",
    "Measurement",
    "count_macs",
    "count_params",
    "measure",
    "measure_latency",
    "size_bytes",
]
