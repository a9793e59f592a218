"""Plans: which elements of which groups go. Pure data (JSON), no tensors of weights.

A plan carries, besides the removals, the layout of every parameter dimension it touches and the
module attributes that follow group sizes, so ``apply`` can carry it out on a freshly built model
of the same architecture without tracing it again. It also records the signature of the model it
was made for, and ``validate`` checks all of it against a model before anything changes.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from torch import nn

from ..graph import layout as L
from . import validate as V

# Version 2 adds "signature" (the model a plan was made for). Version 1 plans, and plans built in code
# without one, still load and apply: every other check runs, the architecture fingerprint cannot.
PLAN_VERSION = 2
VERSIONS = (1, 2)


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
    signature: dict[str, Any] | None = None  # the model it was made for and a digest of its structure
    version: int = PLAN_VERSION

    def to_json(self, indent: int | None = None) -> str:
        """The plan as JSON text (deterministic: keys sorted; version 1 when it carries no signature)."""
        data = dict(asdict(self), version=PLAN_VERSION if self.signature is not None else 1)
        return json.dumps(data, sort_keys=True, indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Parse a plan written by ``to_json`` and check its form (``validate`` then checks it against a model)."""
        if not isinstance(text, (str, bytes, bytearray)):
            raise TypeError(f"Plan.from_json takes the JSON text (str or bytes), got {type(text).__name__}")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"plan is not valid JSON: {str(exc)[:200]}") from exc
        version = data.get("version") if isinstance(data, dict) else None
        if type(version) is not int or version not in VERSIONS:
            raise ValueError(f"plan must be a JSON object with version {PLAN_VERSION} (or 1, written before "
                             f"plans carried a model signature), got version {V.show(version)}")
        missing = {"model_class", "groups", "layouts", "shapes"} - set(data)
        unknown = set(data) - {f.name for f in fields(cls)}
        if missing or unknown:
            raise ValueError(f"plan is missing fields {sorted(missing)} or has unknown fields "
                             f"{V.show(sorted(unknown))}")
        if (version >= 2) != (data.get("signature") is not None):
            raise ValueError(f"plan version {version} must {'' if version >= 2 else 'not '}carry a model "
                             f"signature (version 2 plans record the model they were made for)")
        plan = cls(**data)
        V.check_form(plan)
        V.check_sealed(plan)
        return plan

    def validate(self, model: nn.Module) -> None:
        """Raise ValueError unless this plan can be applied to ``model`` exactly as made (``apply`` calls it).

        Checks the plan's form, the model signature it records (architecture fingerprint), every
        group size, index, layout, mask and attribute sync against the model's own tensors.
        """
        V.validate(self, model)

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
        snaps = self.settings.get("latency", {}).get("groups", {})  # round_to="auto": shown per group
        shown = {k: v for k, v in self.settings.items() if k != "latency"}
        lines = [f"Plan for {self.model_class}: {len(pruned)} of {len(self.groups)} groups pruned, "
                 f"{gone} of {total} elements removed ({shown})"]
        for g in pruned:
            snap = snaps.get(str(g["id"]))
            moved = f" (asked {snap['asked']}, snapped: {snap['gain_ms']:+.3f} ms)" if snap else ""
            lines.append(f"  group {g['id']} ({g.get('kind', 'channel')}): {g['size']} -> "
                         f"{g['size'] - len(g['remove'])}{moved}  [{', '.join(g.get('producers', [])[:3])}]")
        for s in self.skipped:
            what = f"group {s['id']}" if "id" in s else ", ".join(s.get("tensors", [])[:3]) or "?"
            lines.append(f"  skipped {what}: {s['reason']}")
        return "\n".join(lines)
