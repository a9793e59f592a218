"""The measured front: every candidate, the non-dominated ones, and a pick under a constraint."""
from __future__ import annotations

import base64
import copy
import html
import os
import platform
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from .._inputs import ExampleInputs, batch_size_of
from ..measure import DEFAULT_THREADS, compare_latency
from ..prune import Plan, apply
from ..prune.surgery import finalize
from .candidate import COSTS, Candidate, choose, pareto

# How many of the cheapest candidates that meet the constraint ``pick`` times again, side by side.
FINALISTS = 4
RECALIBRATED_NOTE = ("BatchNorm statistics re-estimated on {batches} calibration batches (sc.posttrain.recalibrate) "
                     "for the {n} of {total} candidates pruned without fine-tuning")
STAIRCASE_GROUPS = 6  # how many snapped groups the report's staircase figure shows
SERVED_NOTE = ("size: parameter bytes for PyTorch rows, the int8 .onnx file for onnxruntime rows; "
               "latency in the runtime named on each row")


@dataclass
class Pick:
    """The chosen candidate, rebuilt: ``model``, ``plan`` (None for the dense model), ``measurement``.

    ``rule`` says how it was chosen; ``met`` is False when no pruned candidate met the constraint (the
    dense model is then picked and ``closest`` names the pruned candidate nearest to it);
    ``remeasured`` holds the finalists' interleaved latencies (``Latency.to_dict``-like dicts) the
    decision used, and ``note`` says when overlapping spreads sent the pick to fewer MACs.
    """

    candidate: Candidate
    model: nn.Module
    plan: Plan | None
    measurement: dict[str, Any]
    rule: str = ""
    met: bool = True
    closest: Candidate | None = None
    remeasured: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""
    directory: str | None = None

    @property
    def quality(self) -> float:
        return self.candidate.quality

    def summary(self) -> str:
        """One line: what was picked under which rule, or that nothing met it and what came closest."""
        if not self.met:
            close = self.closest
            near = (f"; closest: {close.name} (quality {close.quality:.4f})" if close is not None else "")
            return f"no pruned candidate met the rule ({self.rule}): kept dense (quality {self.quality:.4f}){near}"
        line = f"picked {self.candidate.name} (quality {self.quality:.4f}): {self.rule}"
        return line + (f"; {self.note}" if self.note else "")

    def load_code(self, factory: str | None = None) -> str:
        """The two lines of Python that load the picked model from its directory (None without a workdir)."""
        return load_code(self.candidate, self.directory,
                         factory or f"{type(self.model).__name__}(...)  # your model, built as before pruning")


def load_code(cand: Candidate, directory: str | None, build: str) -> str:
    """The two lines of Python that load ``cand`` from its ``directory`` ("" without one); ``build`` is
    the expression that builds the model as it was before pruning."""
    if directory is None:
        return ""
    if cand.extra.get("onnx_path"):  # served as its int8 file in onnxruntime
        path = os.path.join(directory, os.path.basename(cand.extra["onnx_path"]))
        return f"from secateurs.deploy import OnnxModel\nmodel = OnnxModel.load({path!r})"
    return f"import secateurs as sc\nmodel = sc.load({build}, {directory!r})"


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
        self._picks: dict[tuple, Pick] = {}

    def pareto(self, cost: str = "latency") -> list[Candidate]:
        """Non-dominated candidates for (quality up, ``cost`` down), cheapest first."""
        return pareto(self.candidates, cost)

    def pick(self, max_drop: float = 0.01, minimize: str = "latency", rounds: int = 15) -> Pick:
        """The cheapest candidate (by ``minimize``) whose quality is within ``max_drop`` of the dense model.

        ``max_drop`` is absolute, in the units of ``evaluate`` (0.01 = one point of accuracy in [0, 1]).
        By latency, the sweep's numbers only shortlist: the (up to ``FINALISTS``) fastest candidates that
        meet the constraint are timed again interleaved (``compare_latency``, ``rounds`` rounds, the
        sweep's threads) and the lowest new median wins, except that among finalists whose p10-p90
        ranges overlap the winner's, the one with fewest MACs is taken (the pick's ``note`` says so).
        ``rounds=0`` trusts the sweep's numbers. The result is cached per arguments.
        """
        key = (max_drop, minimize, rounds)
        if key in self._picks:
            return self._picks[key]
        best = choose(self.candidates, self.baseline, max_drop, minimize)
        rule = f"within {max_drop:g} of dense quality, lowest {minimize}"
        pruned = [c for c in self.candidates if c.name != "dense"]
        met = best.name != "dense" or not pruned or any(c.quality >= self.baseline.quality - max_drop for c in pruned)
        closest = None if met else max(pruned, key=lambda c: (c.quality, -c.cost("macs")))
        remeasured, note = {}, ""
        if minimize == "latency" and rounds > 0 and self._has("latency"):
            best, remeasured, note = self._remeasure(max_drop, rounds, best)
        model, p = self.rebuild(best)
        out = Pick(best, model, p, best.measurement, rule=rule, met=met, closest=closest, remeasured=remeasured,
                   note=note, directory=self.directory_of(best))
        self._picks[key] = out
        return out

    def _remeasure(self, max_drop: float, rounds: int, best: Candidate) -> tuple[Candidate, dict, str]:
        floor = self.baseline.quality - max_drop
        finalists = sorted((c for c in self.candidates if c.quality >= floor), key=lambda c: c.cost("latency"))
        finalists = finalists[:FINALISTS]
        if len(finalists) < 2:
            return best, {}, ""
        threads = self.baseline.measurement["latency"].get("threads", DEFAULT_THREADS)
        from .tasks import timeable
        timed = compare_latency({c.name: timeable(self.rebuild(c)[0]) for c in finalists}, self.example_inputs,
                                rounds=rounds, threads=threads)
        fastest = min(finalists, key=lambda c: timed[c.name].median_ms)
        tied = [c for c in finalists if timed[c.name].overlaps(timed[fastest.name])]
        chosen = min(tied, key=lambda c: (c.cost("macs"), timed[c.name].median_ms))
        note = ""
        if chosen is not fastest:
            a, b = timed[chosen.name], timed[fastest.name]
            note = (f"{chosen.name} ({a.median_ms:.3g} ms, p10-p90 {a.p10_ms:.3g}-{a.p90_ms:.3g}) and {fastest.name} "
                    f"({b.median_ms:.3g} ms, p10-p90 {b.p10_ms:.3g}-{b.p90_ms:.3g}) overlap in latency: "
                    f"took {chosen.name}, which has fewer MACs")
        stats = {name: {"median_ms": t.median_ms, "p10_ms": t.p10_ms, "p90_ms": t.p90_ms, "runs": t.runs,
                        "threads": t.threads} for name, t in timed.items()}
        return chosen, stats, note

    def directory_of(self, cand: Candidate) -> str | None:
        """The workdir folder ``sc.load`` rebuilds ``cand`` from (None when not saved there)."""
        if self.workdir is None or cand.weights_path is None:
            return None
        return os.path.join(self.workdir, os.path.dirname(cand.weights_path))

    def rebuild(self, cand: Candidate) -> tuple[Any, Plan | None]:
        """The candidate's model and plan: from memory, or from the workdir (plan + safetensors); a quantised
        candidate's model is its int8 ``OnnxModel`` (``candidates/<name>/model.int8.onnx``)."""
        p = None
        if cand.plan_path is not None and self.workdir is not None:
            with open(os.path.join(self.workdir, cand.plan_path)) as f:
                p = Plan.from_json(f.read())
        if cand.name in self.models:
            return self.models[cand.name], p
        if cand.extra.get("onnx_path") and self.workdir is not None:
            from ..deploy import OnnxModel
            threads = (self.baseline.measurement.get("latency") or {}).get("threads", 1)
            return OnnxModel.load(os.path.join(self.workdir, cand.extra["onnx_path"]), threads=threads), p
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
        """An aligned text table of all candidates, front members marked with '*' (the legend follows)."""
        rows = self._rows(cost)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
                 for r in rows]
        notes = {c.extra["latency_note"] for c in self.candidates if c.extra.get("latency_note")}
        if any(c.extra.get("onnx_path") or c.measurement.get("runtime") == "onnxruntime" for c in self.candidates):
            notes.add(SERVED_NOTE)
        recalibrated = [c for c in self.candidates if c.extra.get("bn_recalibrated")]
        if recalibrated:
            notes.add(RECALIBRATED_NOTE.format(n=len(recalibrated), total=len(self.candidates),
                                               batches=recalibrated[0].extra["bn_recalibrated"]))
        return "\n".join(lines + [self._legend(cost)] + sorted(notes))

    def _rows(self, cost: str) -> list[tuple[str, ...]]:
        on_front = {c.name for c in self.pareto(self._axis(cost))}
        rows = [("", "candidate", "quality", "drop", "params", "MACs", "size", "latency ms", "runtime")]
        for c in sorted(self.candidates, key=lambda c: c.cost("macs")):
            m = c.measurement
            lat = m.get("latency") or {}
            rows.append(("*" if c.name in on_front else "", c.name, f"{c.quality:.4f}",
                         f"{self.baseline.quality - c.quality:+.4f}", _si(m["params"]), _si(m["macs"]),
                         _si(m["size_bytes"], "B"), f"{lat['median_ms']:.2f}" if lat else "-",
                         m.get("runtime", "pytorch") if lat else "-"))
        return rows

    def _axis(self, cost: str) -> str:
        if cost not in COSTS:
            raise ValueError(f"cost must be one of {list(COSTS)}, got {cost!r}")
        return cost if self._has(cost) else "macs"

    def _legend(self, cost: str) -> str:
        return f"* on the Pareto front: no other candidate has both higher quality and lower {self._axis(cost)}"

    def _repr_html_(self) -> str:
        """The table as HTML for Jupyter (every cell escaped), front members in bold, then the front's
        plot inline (an embedded PNG)."""
        from ..report.plots import pareto_png
        rows = self._rows("latency")
        head = "".join(f"<th>{html.escape(v)}</th>" for v in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{'<b>' if r[0] else ''}{html.escape(v)}{'</b>' if r[0] else ''}</td>"
                                        for v in r) + "</tr>" for r in rows[1:])
        png = base64.b64encode(pareto_png(self.report_data(), self._axis("latency"))).decode("ascii")
        return (f"<table class=\"secateurs-front\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                f"<p>{html.escape(self._legend('latency'))}</p>"
                f"<img src=\"data:image/png;base64,{png}\" alt=\"quality against {self._axis('latency')}\">")

    def _has(self, cost: str) -> bool:
        return cost != "latency" or all(c.measurement.get("latency") for c in self.candidates)

    def report_data(self, picked: Pick | None = None, constraint: str = "") -> dict[str, Any]:
        """Everything the report shows, as plain data (see ``secateurs.report``)."""
        return report_data(self.baseline, self.candidates, picked.candidate if picked else None, constraint,
                           self.sensitivity, f"secateurs: {type(self.base).__name__}",
                           batch_size_of(self.example_inputs))

    def report(self, path: str | os.PathLike, max_drop: float = 0.01, minimize: str = "latency",
               quality_name: str = "quality", title: str | None = None, factory: str | None = None) -> dict[str, str]:
        """Write the HTML report (plots embedded) with Markdown and JSON beside it; returns the paths.

        ``factory`` is the Python expression that builds the unpruned model (e.g. ``"resnet18()"``), shown
        in the report's two lines that load the picked model.
        """
        from ..report import write_report
        picked = self.pick(max_drop=max_drop, minimize=minimize)
        data = self.report_data(picked, f"max_drop={max_drop}, minimize={minimize}")
        data["decision"], data["load_code"] = picked.summary(), picked.load_code(factory)
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
    stairs, stairs_of = staircase_rows(candidates, picked)
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
        **({"staircase": stairs, "staircase_of": stairs_of} if stairs else {}),
    }


def staircase_rows(candidates: list[Candidate], picked: Candidate | None,
                   limit: int = STAIRCASE_GROUPS) -> tuple[list[dict[str, Any]], str]:
    """The report's staircases: from the picked candidate if its widths were snapped (round_to="auto"), else
    from the snapped candidate with the largest predicted gain; its ``limit`` groups whose width moved most
    (relative to the asked width), with their measured curves. ``([], "")`` when no candidate was snapped."""
    snapped = [c for c in candidates if (c.extra.get("latency_snaps") or {}).get("groups")]
    if not snapped:
        return [], ""
    source = picked if picked is not None and picked.name in {c.name for c in snapped} else max(
        snapped, key=lambda c: (c.extra["latency_snaps"].get("gain_ms", 0.0), c.name))
    groups = [g for g in source.extra["latency_snaps"]["groups"].values() if g.get("curve")]
    groups.sort(key=lambda g: (-abs(g["kept"] - g["asked"]) / max(1, g["asked"]), -abs(g.get("gain_ms", 0.0))))
    rows = [{"layer": g.get("layer") or "?", "asked": g["asked"], "kept": g["kept"], "curve": g["curve"]}
            for g in groups[:limit]]
    return rows, source.name if rows else ""


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
