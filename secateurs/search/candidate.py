"""Candidates: one measured point of a sweep, and the Pareto front over them."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .._inputs import check_real, shown

# What ``pick(minimize=...)`` and the Pareto front can trade quality against.
COSTS = ("latency", "macs", "size", "params")


@dataclass
class Candidate:
    """How a model was made (``method``), how good it is (``quality``), what it costs (``measurement``).

    ``measurement`` is ``Measurement.to_dict()``; ``plan_path`` and ``weights_path`` name files in the
    sweep's workdir (JSON plan; safetensors of fine-tuned weights, None when one-shot).
    """

    name: str
    method: dict[str, Any]
    quality: float
    measurement: dict[str, Any]
    plan_path: str | None = None
    weights_path: str | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def cost(self, key: str) -> float:
        """The candidate's cost on one axis of ``COSTS`` (latency in ms, the rest in counts/bytes)."""
        if key not in COSTS:
            raise ValueError(f"minimize must be one of {list(COSTS)}, got {key!r}")
        m = self.measurement
        if key == "latency":
            lat = m.get("latency")
            if not lat:
                raise ValueError(f"candidate {self.name!r} has no latency measurement")
            return float(lat["median_ms"])
        return float({"macs": m["macs"], "size": m["size_bytes"], "params": m["params"]}[key])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "candidate") -> Candidate:
        """Rebuild from ``to_dict()`` output, checked key by key (records are read back from files).

        Raises ValueError naming ``where`` and the first missing or ill-typed key; unknown keys are ignored.
        """
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be a Candidate dict (Candidate.to_dict()), got {type(d).__name__}")
        for key in _CANDIDATE_KEYS:
            if key not in d:
                raise ValueError(f"{where} is missing key {key!r}")
        if not isinstance(d["name"], str) or not d["name"]:
            raise ValueError(f"{where}['name'] must be a non-empty string, got {shown(d['name'])}")
        if not isinstance(d["method"], dict):
            raise ValueError(f"{where}['method'] must be a dict, got {type(d['method']).__name__}")
        check_real(d["quality"], f"{where}['quality']", "[-inf, inf]")
        m = d["measurement"]
        _numeric_dict(m, _MEASUREMENT_KEYS, f"{where}['measurement']", "a dict (Measurement.to_dict())")
        if m.get("latency") is not None:
            _numeric_dict(m["latency"], _LATENCY_KEYS, f"{where}['measurement']['latency']", "a dict or None")
        extra = d.get("extra", {})
        onnx_path = extra.get("onnx_path") if isinstance(extra, dict) else None
        for key, path in (("['plan_path']", d.get("plan_path")), ("['weights_path']", d.get("weights_path")),
                          ("['extra']['onnx_path']", onnx_path)):
            if path is not None and (not isinstance(path, str) or os.path.isabs(path)
                                     or ".." in path.replace("\\", "/").split("/")):
                raise ValueError(f"{where}{key} must be None or a relative path inside the workdir, got {shown(path)}")
        if "seconds" in d:
            check_real(d["seconds"], f"{where}['seconds']", "[-inf, inf]")
        if not isinstance(d.get("extra", {}), dict):
            raise ValueError(f"{where}['extra'] must be a dict, got {type(d['extra']).__name__}")
        return cls(**{k: v for k, v in d.items() if k in _FIELDS})


_CANDIDATE_KEYS = ("name", "method", "quality", "measurement")
_MEASUREMENT_KEYS = ("params", "macs", "size_bytes")
_LATENCY_KEYS = ("median_ms", "p10_ms", "p90_ms")
_FIELDS = {f.name for f in fields(Candidate)}


def _numeric_dict(value: Any, keys: Any, where: str, expected: str) -> None:
    """``value`` must be a dict holding a number under every one of ``keys``."""
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be {expected}, got {type(value).__name__}")
    for key in keys:
        if key not in value:
            raise ValueError(f"{where} is missing key {key!r}")
        check_real(value[key], f"{where}[{key!r}]", "[-inf, inf]")


def pareto(candidates: list[Candidate], cost: str) -> list[Candidate]:
    """The non-dominated candidates for (higher quality, lower ``cost``), cheapest first."""
    ordered = sorted(candidates, key=lambda c: (c.cost(cost), -c.quality))
    front: list[Candidate] = []
    best = float("-inf")
    for c in ordered:
        if c.quality > best:
            front.append(c)
            best = c.quality
    return front


def choose(candidates: list[Candidate], baseline: Candidate, max_drop: float, minimize: str) -> Candidate:
    """The cheapest candidate by ``minimize`` whose quality is at most ``max_drop`` below the baseline's."""
    if minimize not in COSTS:
        raise ValueError(f"minimize must be one of {list(COSTS)}, got {minimize!r}")
    max_drop = check_real(max_drop, "max_drop", "[0, inf]")
    floor = baseline.quality - max_drop
    ok = [c for c in candidates if c.quality >= floor] or [baseline]
    return min(ok, key=lambda c: (c.cost(minimize), -c.quality))
