"""Structural pruning benchmark: secateurs vs Torch-Pruning on torchvision models.

For every model (weights=None, eval mode, traced on a 1x3x224x224 input) and both tools at the same
ratio (default 0.5, L2 magnitude), it reports:

* the time to prune (secateurs: ``sc.plan`` + ``sc.apply``, i.e. trace, score, plan, verify and
  surgery; Torch-Pruning: ``copy.deepcopy`` + ``MagnitudePruner`` construction, which builds the
  DependencyGraph, + ``pruner.step()``),
* parameters and MACs before/after, both counted with ``secateurs.measure.count_macs`` so the two
  tools are measured identically,
* CPU latency (median) before/after at batch 1 and batch 16 with a fixed number of threads,
* the batch-16 speed-up and that speed-up divided by the MACs reduction factor (1.0 means the
  latency fell exactly as much as the MACs did).

Run::

    python benchmarks/structural.py                      # all models, 1 thread
    python benchmarks/structural.py --models resnet18,resnet50 --threads 2 --runs 30
    python benchmarks/structural.py --quick              # batch 1 only, fewer runs

The table is printed and written to ``benchmarks/results/structural.md``.
"""
from __future__ import annotations

import argparse
import copy
import gc
import importlib.metadata
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODELS = ("resnet18", "resnet50", "mobilenet_v2", "vit_b_16", "densenet201")
# final classifier layer of each model: Torch-Pruning is told to ignore it (its output must stay 1000
# classes). secateurs never prunes a model's outputs, so it gets no ignore list: ignoring the module
# there would also freeze its *input* features and with them the whole last stage.
CLASSIFIER = {
    "resnet18": "fc",
    "resnet50": "fc",
    "mobilenet_v2": "classifier.1",
    "vit_b_16": "heads.head",
    "densenet201": "classifier",
}
RESULTS = ROOT / "benchmarks" / "results" / "structural.md"


@dataclass
class Cost:
    params: int
    macs: int
    lat1_ms: float | None = None
    lat16_ms: float | None = None


@dataclass
class Row:
    model: str
    tool: str
    base: Cost
    pruned: Cost | None = None
    prune_s: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    model_notes: list[str] = field(default_factory=list)  # about the model, not this tool


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def build(name: str) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None).eval()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def static_cost(model: nn.Module, x1: torch.Tensor) -> Cost:
    from secateurs.measure import count_macs

    return Cost(params=n_params(model), macs=count_macs(model, x1).total)


def interleaved_latency(models: list[nn.Module], x: torch.Tensor, warmup: int, runs: int, threads: int) -> list[float]:
    """Median forward latency (ms) of each model; the timed runs alternate between the models.

    Every model is warmed up first, then each round times one forward of every model in turn, so a
    slow patch on a shared machine hits all of them alike instead of biasing whichever ran then.
    """
    from secateurs.measure import measure_latency

    for m in models:
        measure_latency(m, x, warmup=warmup, runs=1, threads=threads)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(runs):
        for i, m in enumerate(models):
            times[i].append(measure_latency(m, x, warmup=0, runs=1, threads=threads).median_ms)
    return [statistics.median(t) for t in times]


def check_output(model: nn.Module, x: torch.Tensor, expected: torch.Size) -> str | None:
    with torch.inference_mode():
        out = model(x)
    if out.shape != expected:
        return f"output shape {tuple(out.shape)} != {tuple(expected)}"
    return None


def prune_secateurs(model: nn.Module, name: str, x: torch.Tensor, ratio: float) -> tuple[nn.Module, float, list[str]]:
    import secateurs as sc

    start = time.perf_counter()
    graph = sc.trace(model, x)
    p = sc.plan(model, x, ratio=ratio, criterion="l2", graph=graph)
    small = sc.apply(model, p)
    elapsed = time.perf_counter() - start
    notes = []
    reasons = sorted({u.reason for u in getattr(graph, "unsupported", None) or []})
    if reasons:
        notes.append(f"secateurs left {len(graph.unsupported)} part(s) unpruned: " + "; ".join(reasons[:2])
                     + ("; ..." if len(reasons) > 2 else ""))
    skipped = getattr(p, "skipped", None) or []
    if skipped:
        notes.append(f"secateurs skipped {len(skipped)} group(s): " + "; ".join(
            f"{s.get('id')}: {str(s.get('reason'))[:80]}" for s in skipped[:3]))
    return small.eval(), elapsed, notes


def prune_torch_pruning(model: nn.Module, name: str, x: torch.Tensor,
                        ratio: float) -> tuple[nn.Module, float, list[str]]:
    import torch_pruning as tp
    from torchvision.models.vision_transformer import VisionTransformer

    Pruner = getattr(tp.pruner, "MagnitudePruner", None) or tp.pruner.BasePruner
    start = time.perf_counter()
    m = copy.deepcopy(model)
    kwargs = {}
    if isinstance(m, VisionTransformer):
        # as in TP's torchvision example: prune head dims per head, keeping channels divisible by heads
        kwargs["num_heads"] = {mod: mod.num_heads for mod in m.modules() if isinstance(mod, nn.MultiheadAttention)}
    pruner = Pruner(
        m,
        example_inputs=x,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[m.get_submodule(CLASSIFIER[name])],
        **kwargs,
    )
    pruner.step()
    if isinstance(m, VisionTransformer):
        # torchvision's ViT reshapes with self.hidden_dim in forward; TP does not update it
        m.hidden_dim = m.conv_proj.out_channels
    elapsed = time.perf_counter() - start
    return m.eval(), elapsed, []


TOOLS = {"secateurs": prune_secateurs, "torch-pruning": prune_torch_pruning}


def run_model(name: str, args) -> list[Row]:
    torch.manual_seed(0)
    x1 = torch.randn(1, 3, 224, 224)
    model = build(name)
    with torch.inference_mode():
        expected = model(x1).shape
    base = static_cost(model, x1)
    rows, pruned = [], []
    for tool, fn in TOOLS.items():
        row = Row(name, tool, base)
        rows.append(row)
        log(f"[{name}] pruning with {tool}")
        try:
            small, row.prune_s, row.notes = fn(model, name, x1, args.ratio)
            bad = check_output(small, x1, expected)
            if bad:
                raise RuntimeError(bad)
            row.pruned = static_cost(small, x1)
        except Exception as e:  # noqa: BLE001 - a tool failing on a model is a result, not a crash
            row.error = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            log(f"[{name}] {tool} failed:\n{traceback.format_exc()}")
            continue
        log(f"[{name}] {tool}: pruned in {row.prune_s:.2f}s")
        pruned.append((row, small))
    if len(pruned) == 2:
        (ra, a), (_, b) = pruned
        sa, sb = a.state_dict(), b.state_dict()
        if {k: v.shape for k, v in sa.items()} == {k: v.shape for k, v in sb.items()}:
            same = all(torch.equal(sa[k], sb[k]) for k in sa)
            ra.model_notes.append("both tools produced the same layer shapes"
                            + (" and the same weights" if same else " (different channels kept)"))
        else:
            ra.model_notes.append("the two tools produced different layer shapes")
    models = [model] + [m for _, m in pruned]
    costs = [base] + [r.pruned for r, _ in pruned]
    batches = [(1, x1, args.warmup, args.runs, "lat1_ms")]
    if not args.quick:
        batches.append((16, torch.randn(16, 3, 224, 224), args.warmup16, args.runs16, "lat16_ms"))
    for bs, x, warmup, runs, attr in batches:
        log(f"[{name}] latency at batch {bs}: {warmup} warm-up + {runs} interleaved runs of {len(models)} models")
        for c, ms in zip(costs, interleaved_latency(models, x, warmup, runs, args.threads)):
            setattr(c, attr, ms)
    del model, models, pruned
    gc.collect()
    return rows


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _m(n: int) -> str:
    return f"{n / 1e6:.2f}"


def _g(n: int) -> str:
    return f"{n / 1e9:.3f}"


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.1f}" if v >= 10 else f"{v:.2f}")


def table(rows: list[Row], args) -> str:
    ver = importlib.metadata.version
    header = (f"torch {torch.__version__}, torchvision {ver('torchvision')}, torch-pruning {ver('torch-pruning')}; "
              f"CPU: {cpu_name()} ({args.threads} thread{'s' if args.threads != 1 else ''}, "
              f"torch.set_num_threads({args.threads})); ratio {args.ratio}, L2 magnitude, local; "
              f"latency = median of {args.runs} runs at batch 1"
              + ("" if args.quick else f", {args.runs16} runs at batch 16")
              + " after warm-up, runs interleaved between the unpruned and pruned models")
    cols = ["Model", "Tool", "Prune time (s)", "Params (M) before → after", "MACs (G) before → after",
            "MACs reduction", "Batch 1 ms before → after", "Batch 16 ms before → after",
            "Speed-up b1" if args.quick else "Speed-up b16",
            "Speed-up / MACs reduction"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        b = r.base
        if r.error or r.pruned is None:
            cells = [r.model, r.tool, "-" if r.prune_s is None else f"{r.prune_s:.2f}",
                     f"{_m(b.params)} → -", f"{_g(b.macs)} → -", "-", f"{_ms(b.lat1_ms)} → -",
                     f"{_ms(b.lat16_ms)} → -", "-", f"failed: {r.error}"]
        else:
            p = r.pruned
            red = b.macs / p.macs if p.macs else float("inf")
            before, after = (b.lat1_ms, p.lat1_ms) if args.quick else (b.lat16_ms, p.lat16_ms)
            if before is not None and after:
                speed = before / after
                speed_s, eff_s = f"{speed:.2f}×", f"{speed / red:.2f}"
            else:
                speed_s, eff_s = "-", "-"
            cells = [r.model, r.tool, f"{r.prune_s:.2f}",
                     f"{_m(b.params)} → {_m(p.params)} ({100 * p.params / b.params:.0f}%)",
                     f"{_g(b.macs)} → {_g(p.macs)} ({100 * p.macs / b.macs:.0f}%)",
                     f"{red:.2f}×", f"{_ms(b.lat1_ms)} → {_ms(p.lat1_ms)}",
                     f"{_ms(b.lat16_ms)} → {_ms(p.lat16_ms)}", speed_s, eff_s]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r.model}: {n}" for r in rows for n in r.model_notes]
    notes += [f"- {r.model} / {r.tool}: {n}" for r in rows for n in r.notes]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated torchvision model names among {', '.join(MODELS)}")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, for stable numbers)")
    ap.add_argument("--runs", type=int, default=20, help="timed runs at batch 1 (default 20)")
    ap.add_argument("--runs16", type=int, default=5, help="timed runs at batch 16 (default 5)")
    ap.add_argument("--warmup", type=int, default=5, help="warm-up runs at batch 1 (default 5)")
    ap.add_argument("--warmup16", type=int, default=1, help="warm-up runs at batch 16 (default 1)")
    ap.add_argument("--ratio", type=float, default=0.5, help="pruning ratio (default 0.5)")
    ap.add_argument("--quick", action="store_true", help="batch 1 only, 5 runs after 2 warm-ups")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"where to write the table (default {RESULTS})")
    args = ap.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in CLASSIFIER]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose among {list(MODELS)}")
    if args.quick:
        args.runs, args.warmup = min(args.runs, 5), min(args.warmup, 2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows: list[Row] = []
    t0 = time.perf_counter()
    for name in args.models:
        rows.extend(run_model(name, args))
    out = table(rows, args)
    out += f"\nTotal benchmark wall time: {time.perf_counter() - t0:.0f} s\n"
    print(out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(out)
    log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
