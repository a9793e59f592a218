"""Plans: which elements of which groups go. Pure data (JSON), no tensors of weights.

A plan carries, besides the removals, the layout of every parameter dimension it touches and the
module attributes that follow group sizes, so ``apply`` can carry it out on a freshly built model
of the same architecture without tracing it again.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..graph import layout as L

PLAN_VERSION = 1


@dataclass
class Plan:
    """What to remove: per group, the element indices that go."""

    model_class: str
    groups: list[dict[str, Any]]  # {"id", "size", "kind", "remove": [int, ...]}
    layouts: dict[str, dict[str, L.Layout]]  # tensor name -> dim (as str) -> layout
    shapes: dict[str, list[int]]  # shape each touched tensor must have before pruning
    syncs: list[dict[str, Any]] = field(default_factory=list)  # module attributes that follow groups
    settings: dict[str, Any] = field(default_factory=dict)  # how the plan was made
    skipped: list[dict[str, Any]] = field(default_factory=list)  # what was left out, and why
    masks: dict[str, dict[str, Any]] = field(default_factory=dict)  # element masks: {"shape", "bits"}
    version: int = PLAN_VERSION

    def to_json(self, indent: int | None = None) -> str:
        """The plan as JSON text (deterministic: keys sorted)."""
        return json.dumps(asdict(self), sort_keys=True, indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        """Parse and validate a plan written by ``to_json``."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"plan is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("version") != PLAN_VERSION:
            raise ValueError(f"plan must be a JSON object with version {PLAN_VERSION}")
        missing = {"model_class", "groups", "layouts", "shapes"} - set(data)
        if missing:
            raise ValueError(f"plan is missing fields: {sorted(missing)}")
        for dims in data["layouts"].values():
            for tree in dims.values():
                L.validate(tree)
        for name, m in data.get("masks", {}).items():
            if not isinstance(m, dict) or not isinstance(m.get("bits"), str) or not isinstance(m.get("shape"), list):
                raise ValueError(f"malformed mask for {name!r} in plan")
        for g in data["groups"]:
            if not {"id", "size", "remove"} <= set(g) or any(not 0 <= i < g["size"] for i in g["remove"]):
                raise ValueError(f"malformed group in plan: {g!r}")
            if len(set(g["remove"])) >= g["size"]:
                raise ValueError(f"plan removes every element of group {g['id']}")
        return cls(**data)

    def removals(self) -> dict[int, list[int]]:
        """Group id -> removed indices, for groups that lose something."""
        return {g["id"]: list(g["remove"]) for g in self.groups if g["remove"]}

    def __str__(self) -> str:
        if self.masks:
            lines = [f"Plan for {self.model_class}: element masks on {len(self.masks)} tensors ({self.settings})"]
            lines += [f"  skipped {s.get('tensor', s.get('id'))}: {s['reason']}" for s in self.skipped]
            return "\n".join(lines)
        pruned = [g for g in self.groups if g["remove"]]
        total = sum(g["size"] for g in self.groups)
        gone = sum(len(g["remove"]) for g in self.groups)
        lines = [f"Plan for {self.model_class}: {len(pruned)} of {len(self.groups)} groups pruned, "
                 f"{gone} of {total} elements removed ({self.settings})"]
        for g in pruned:
            lines.append(f"  group {g['id']} ({g.get('kind', 'channel')}): {g['size']} -> "
                         f"{g['size'] - len(g['remove'])}  [{', '.join(g.get('producers', [])[:3])}]")
        for s in self.skipped:
            what = f"group {s['id']}" if "id" in s else ", ".join(s.get("tensors", [])[:3]) or "?"
            lines.append(f"  skipped {what}: {s['reason']}")
        return "\n".join(lines)
