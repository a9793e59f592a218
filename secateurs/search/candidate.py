"""Candidates: one measured point of a sweep, and the Pareto front over them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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
    def from_dict(cls, d: dict[str, Any]) -> "Candidate":
        return cls(**d)


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
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or max_drop < 0:
        raise ValueError(f"max_drop must be a non-negative number, got {max_drop!r}")
    floor = baseline.quality - max_drop
    ok = [c for c in candidates if c.quality >= floor] or [baseline]
    return min(ok, key=lambda c: (c.cost(minimize), -c.quality))
