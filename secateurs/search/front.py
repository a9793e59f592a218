"""The measured front: every candidate, the non-dominated ones, and a pick under a constraint."""
from __future__ import annotations

import copy
import os
import platform
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from .._inputs import ExampleInputs, batch_size_of
from ..prune import Plan, apply
from ..prune.surgery import finalize
from .candidate import Candidate, choose, pareto


@dataclass
class Pick:
    """The chosen candidate, rebuilt: ``model``, ``plan`` (None for the dense model), ``measurement``."""

    candidate: Candidate
    model: nn.Module
    plan: Plan | None
    measurement: dict[str, Any]

    @property
    def quality(self) -> float:
        return self.candidate.quality


class Front:
    """All candidates of a sweep; ``pick`` the best under a quality constraint."""

    def __init__(self, base: nn.Module, example_inputs: ExampleInputs, candidates: list[Candidate],
                 workdir: str | None = None, models: dict[str, nn.Module] | None = None,
                 sensitivity: dict | None = None):
        by_name = {c.name: c for c in candidates}
        if "dense" not in by_name:
            raise ValueError("a front needs the dense baseline candidate named 'dense'")
        self.base = base
        self.example_inputs = example_inputs
        self.candidates = candidates
        self.baseline = by_name["dense"]
        self.workdir = workdir
        self.models = models or {}
        self.sensitivity = sensitivity

    def pareto(self, cost: str = "latency") -> list[Candidate]:
        """Non-dominated candidates for (quality up, ``cost`` down), cheapest first."""
        return pareto(self.candidates, cost)

    def pick(self, max_drop: float = 0.01, minimize: str = "latency") -> Pick:
        """The cheapest candidate (by ``minimize``) whose quality is within ``max_drop`` of the dense model.

        ``max_drop`` is absolute, in the units of ``evaluate`` (0.01 = one point of accuracy in [0, 1]).
        """
        best = choose(self.candidates, self.baseline, max_drop, minimize)
        model, p = self.rebuild(best)
        return Pick(best, model, p, best.measurement)

    def rebuild(self, cand: Candidate) -> tuple[nn.Module, Plan | None]:
        """The candidate's model and plan: from memory, or from the workdir (plan + safetensors)."""
        p = None
        if cand.plan_path is not None and self.workdir is not None:
            with open(os.path.join(self.workdir, cand.plan_path)) as f:
                p = Plan.from_json(f.read())
        if cand.name in self.models:
            return self.models[cand.name], p
        if cand.name == "dense":
            return copy.deepcopy(self.base), None
        if p is None:
            raise ValueError(f"candidate {cand.name!r} has no plan on disk to rebuild it from")
        model = apply(self.base, p, mode="mask" if p.masks else "remove")
        if cand.weights_path is not None:
            finalize(model)
            model.load_state_dict(load_file(os.path.join(self.workdir, cand.weights_path)))
        return model, p

    def table(self, cost: str = "latency") -> str:
        """An aligned text table of all candidates, front members marked with '*'."""
        on_front = {c.name for c in self.pareto(cost if self._has(cost) else "macs")}
        rows = [("", "candidate", "quality", "drop", "params", "MACs", "size", "latency ms")]
        for c in sorted(self.candidates, key=lambda c: c.cost("macs")):
            m = c.measurement
            lat = m.get("latency") or {}
            rows.append(("*" if c.name in on_front else "", c.name, f"{c.quality:.4f}",
                         f"{self.baseline.quality - c.quality:+.4f}", _si(m["params"]), _si(m["macs"]),
                         _si(m["size_bytes"], "B"), f"{lat['median_ms']:.2f}" if lat else "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        notes = {c.extra["latency_note"] for c in self.candidates if c.extra.get("latency_note")}
        return "\n".join(["  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
                          for r in rows] + sorted(notes))

    def _has(self, cost: str) -> bool:
        return cost != "latency" or all(c.measurement.get("latency") for c in self.candidates)

    def report_data(self, picked: Pick | None = None, constraint: str = "") -> dict[str, Any]:
        """Everything the report shows, as plain data (see ``secateurs.report``)."""
        return report_data(self.baseline, self.candidates, picked.candidate if picked else None, constraint,
                           self.sensitivity, f"secateurs: {type(self.base).__name__}",
                           batch_size_of(self.example_inputs))

    def report(self, path: str | os.PathLike, max_drop: float = 0.01, minimize: str = "latency",
               quality_name: str = "quality", title: str | None = None) -> dict[str, str]:
        """Write the HTML report (plots embedded) with Markdown and JSON beside it; returns the paths."""
        from ..report import write_report
        picked = self.pick(max_drop=max_drop, minimize=minimize)
        data = self.report_data(picked, f"max_drop={max_drop}, minimize={minimize}")
        data["quality_name"] = quality_name
        if title is not None:
            data["title"] = title
        return write_report(data, os.fspath(path))

    def plot(self, cost: str = "latency", path: str | os.PathLike | None = None):
        """Quality against ``cost`` for every candidate, the front as a line; saved to ``path`` if given."""
        from ..report.plots import pareto_figure
        fig = pareto_figure(self.report_data(), cost)
        if path is not None:
            fig.savefig(os.fspath(path), dpi=120, bbox_inches="tight")
        return fig


def layer_widths(model: nn.Module) -> dict[str, int]:
    """Output width of every conv and linear layer, by module name."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.conv._ConvNd):
            out[name] = int(mod.out_channels)
        elif isinstance(mod, nn.Linear):
            out[name] = int(mod.out_features)
    return out


def report_data(baseline: Candidate, candidates: list[Candidate], picked: Candidate | None, constraint: str,
                sensitivity: dict | None, title: str, batch_size: int | None) -> dict[str, Any]:
    """The report's input (see ``secateurs.report``) from candidates alone: no model needed."""
    widths = []
    if picked is not None:
        before, after = baseline.extra.get("widths", {}), picked.extra.get("widths", {})
        widths = [{"layer": k, "before": v, "after": after[k]} for k, v in before.items() if k in after]
    lat = baseline.measurement.get("latency") or {}
    return {
        "title": title,
        "quality_name": "quality",
        "baseline": baseline.to_dict(),
        "candidates": [c.to_dict() for c in candidates],
        "picked": picked.name if picked is not None else None,
        "constraint": constraint,
        "sensitivity": (sensitivity or {}).get("curves"),
        "widths": widths,
        "machine": {"cpu": _cpu(), "threads": lat.get("threads", torch.get_num_threads()),
                    "batch_size": lat.get("batch_size", batch_size), "platform": platform.platform(),
                    **({"latency": baseline.extra["latency_note"]} if baseline.extra.get("latency_note") else {})},
        "versions": _versions(),
    }


def _si(v: float, unit: str = "") -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f}{suffix}{unit}"
    return f"{v:.0f}{unit}"


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    from .. import __version__
    return {"secateurs": __version__, "torch": torch.__version__, "python": platform.python_version()}
