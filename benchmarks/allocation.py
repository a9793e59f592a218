"""Sensitivity-driven allocation vs a uniform ratio at the same measured MACs target (MNIST-1D).

The BatchNorm 1D CNN of ``secateurs.examples`` (``mnist1d_cnn``, trained 40 epochs and cached, the
same model as ``benchmarks/criteria.py``) is pruned by channels (L2 magnitude) to keep a fraction of
its dense MACs (default 0.5 and 0.3), three ways:

* **uniform**: one ratio for every group, the smallest whose plan meets the target as measured by
  ``count_macs`` (``secateurs.search.allocate.uniform_ratio``: bisection on the measured MACs);
* **allocated**: ``sensitivity`` (each group pruned alone at 25/50/75%, scored on a separate
  validation draw of MNIST-1D) + ``allocate(model, x, sens, {"macs": f})`` (greedy on the curves,
  then verified and corrected on the measured MACs). ``allocate`` gets no ``evaluate``, so this is
  the allocation alone, with no fall-back to uniform;
* **global** (for context): ``scope="global"`` L2 (one threshold over all groups' normalised
  scores), its ratio found by the same bisection.

Each pruned model is scored on the MNIST-1D test set right after pruning (batch-norm statistics
re-estimated on 1,024 training samples, as any one-shot number for a BN model needs), and after the
same fine-tune for every method (``--ft-epochs`` epochs of ``examples.fit``, AdamW with a cosine
schedule, over ``--seeds`` fine-tune seeds: mean and standard deviation).

Run::

    python benchmarks/allocation.py                      # targets 0.5 and 0.3, 1 thread
    python benchmarks/allocation.py --targets 0.5,0.3,0.2 --seeds 3

The table and a verdict are printed and written to ``benchmarks/results/allocation.md``. Needs
``pip install -e ".[examples]"``.
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import secateurs as sc  # noqa: E402
from secateurs.examples import data, models, train  # noqa: E402
from secateurs.measure import count_macs, count_params  # noqa: E402
from secateurs.posttrain import recalibrate  # noqa: E402
from secateurs.search.allocate import allocate, uniform_ratio  # noqa: E402
from secateurs.search.sensitivity import sensitivity  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "allocation.md"
METHODS = ("uniform", "allocated", "global")


@dataclass
class Row:
    target: float
    method: str
    setting: str
    channels: list[int]
    macs: int
    params: int
    one_shot: float
    tuned: list[float] = field(default_factory=list)


def widths(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv1d)]


def global_ratio(model: nn.Module, ex: torch.Tensor, f: float, dense: int, criterion: str,
                 tol: float = 1e-3, hi: float = 0.9) -> float:
    """Smallest scope='global' ratio whose plan keeps at most ``f`` of the dense MACs (bisection)."""
    def meets(r: float) -> bool:
        return count_macs(sc.prune(model, ex, r, criterion=criterion, scope="global"), ex).total <= f * dense
    if not meets(hi):
        raise ValueError(f"global pruning cannot reach {f:g} of the MACs")
    lo = 0.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if meets(mid) else (mid, hi)
    return hi


def run(args) -> tuple[str, list[Row]]:
    t0 = time.perf_counter()
    x, y, xt, yt = data.mnist1d()
    _, _, xv, yv = data.mnist1d(seed=1)  # an independent draw: the sensitivity's validation set
    model = train.fit_cached("mnist1d-mnist1d_cnn", models.mnist1d_cnn(), x, y, epochs=40, lr=3e-3,
                             batch_size=128, seed=0).eval()
    xcal = x[: args.recal_samples]
    args.steps = args.ft_epochs * -(-len(x) // 128)
    ex = x[:1]
    dense_macs, dense_params = count_macs(model, ex).total, count_params(model)
    dense_acc = train.accuracy(model, xt, yt)
    print(f"dense: test accuracy {100 * dense_acc:.1f}%, {dense_macs:,} MACs, {dense_params:,} params", flush=True)

    def one_shot(m: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> float:
        return train.accuracy(recalibrate(m, xcal.split(128)), xs, ys)

    t = time.perf_counter()
    sens = sensitivity(model, ex, lambda m: one_shot(m, xv, yv), ratios=args.ratios, criterion=args.criterion,
                       quiet=args.quiet)
    sens_s = time.perf_counter() - t
    print(sens, flush=True)

    rows: list[Row] = []
    alloc_s: dict[float, float] = {}
    for f in args.targets:
        target = {"macs": f}
        built: dict[str, tuple[nn.Module, str]] = {}
        u = uniform_ratio(model, ex, target, criterion=args.criterion)
        built["uniform"] = (sc.prune(model, ex, u, criterion=args.criterion), f"ratio {u:.3f}")
        t = time.perf_counter()
        gr = allocate(model, ex, sens, target, criterion=args.criterion)
        alloc_s[f] = time.perf_counter() - t
        built["allocated"] = (sc.apply(model, sc.plan(model, ex, 0.0, criterion=args.criterion, group_ratios=gr)),
                              "ratios " + "/".join(f"{gr[g.id]:.2f}" for g in sens.groups))
        gl = global_ratio(model, ex, f, dense_macs, args.criterion)
        built["global"] = (sc.prune(model, ex, gl, criterion=args.criterion, scope="global"), f"ratio {gl:.3f}")
        for method in METHODS:
            pruned, setting = built[method]
            row = Row(f, method, setting, widths(pruned), count_macs(pruned, ex).total, count_params(pruned),
                      one_shot(pruned, xt, yt))
            for seed in range(args.seeds):
                tuned = train.fit(copy.deepcopy(pruned), x, y, epochs=args.ft_epochs, lr=args.ft_lr,
                                  batch_size=128, seed=seed)
                row.tuned.append(train.accuracy(tuned, xt, yt))
            rows.append(row)
            print(f"  MACs {f:g}  {method:<9} {setting:<32} MACs kept {row.macs / dense_macs:6.1%}  "
                  f"one-shot {100 * row.one_shot:5.1f}  fine-tuned {100 * statistics.mean(row.tuned):5.1f}"
                  f" +- {100 * sd(row.tuned):.1f}", flush=True)
    wall = time.perf_counter() - t0
    return report(args, rows, sens, dense_acc, dense_macs, dense_params, sens_s, alloc_s, wall), rows


def sd(v: list[float]) -> float:
    return statistics.stdev(v) if len(v) > 1 else 0.0


def report(args, rows: list[Row], sens, dense_acc: float, dense_macs: int, dense_params: int,
           sens_s: float, alloc_s: dict[float, float], wall: float) -> str:
    n = args.seeds
    lines = ["# Sensitivity-driven allocation vs uniform ratio (MNIST-1D, BatchNorm 1D CNN)", "",
             (f"`python benchmarks/allocation.py`: torch {torch.__version__}, python {platform.python_version()}, "
              f"CPU, `torch.set_num_threads({args.threads})`; wall time {wall / 60:.1f} min."), "",
             (f"Model: `mnist1d_cnn` (5 x Conv1d k5 32 ch + BatchNorm + ReLU, then Linear), trained 40 epochs "
              f"(cached, as in `criteria.py`): **dense test accuracy {100 * dense_acc:.1f}%**, "
              f"{dense_macs:,} MACs per sample, {dense_params:,} params. Channel pruning, criterion "
              f"`{args.criterion}`. Target = fraction of the dense MACs kept, measured with `count_macs` "
              "on the pruned model."), "",
             ("- **uniform**: the smallest single ratio meeting the target (bisection on measured MACs);\n"
              f"- **allocated**: `sensitivity` (each group alone at {', '.join(f'{r:g}' for r in sens.ratios)}; "
              "quality = accuracy on an independent MNIST-1D draw, `mnist1d(seed=1)`, after BN recalibration; "
              f"{sens_s:.1f} s) + `allocate(..., {{\"macs\": f}})` (no `evaluate`: no fall-back to uniform; "
              + ", ".join(f"{v:.1f} s at {k:g}" for k, v in alloc_s.items()) + ");\n"
              "- **global** (context): `scope=\"global\"`, ratio found by the same bisection."), "",
             (f"One-shot = test accuracy right after pruning, batch-norm statistics re-estimated on "
              f"{args.recal_samples:,} training samples (no weight update). Fine-tuned = test accuracy after "
              f"{args.ft_epochs} epochs of `examples.fit` (AdamW lr {args.ft_lr:g}, cosine, batch 128; "
              f"{args.steps} steps, the same for every method), mean +- std over fine-tune seeds "
              f"0..{n - 1}. Channels = conv1..conv5 output channels kept (of 32)."), "",
             ("| MACs target | method | setting | channels | MACs kept (measured) | params | one-shot acc | "
              "fine-tuned acc |"),
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.target:g} | {r.method} | {r.setting} | {'/'.join(map(str, r.channels))} | "
                     f"{r.macs / dense_macs:.1%} ({r.macs:,}) | {r.params:,} | {100 * r.one_shot:.1f}% | "
                     f"{100 * statistics.mean(r.tuned):.1f}% +- {100 * sd(r.tuned):.1f} |")
    lines += ["", "## Verdict", ""]
    for f in args.targets:
        by = {r.method: r for r in rows if r.target == f}
        a, u = by["allocated"], by["uniform"]
        ma, mu = statistics.mean(a.tuned), statistics.mean(u.tuned)
        diff = ma - mu
        noise = 2 * ((sd(a.tuned) ** 2 + sd(u.tuned) ** 2) / n) ** 0.5  # ~95% band of the mean difference
        if n > 1 and abs(diff) <= noise:
            word = "ties with"
        else:
            word = "beats" if diff > 0 else "loses to"
        lines.append(
            f"- **MACs {f:g}**: allocation {word} uniform after fine-tuning: {100 * ma:.1f}% vs {100 * mu:.1f}% "
            f"({100 * diff:+.1f} points; 2 x standard error of the difference {100 * noise:.1f}) at "
            f"{a.macs / dense_macs:.1%} vs {u.macs / dense_macs:.1%} of the dense MACs; one-shot "
            f"{100 * a.one_shot:.1f}% vs {100 * u.one_shot:.1f}% ({100 * (a.one_shot - u.one_shot):+.1f}).")
    words = {}
    for f in args.targets:
        by = {r.method: r for r in rows if r.target == f}
        a, u = by["allocated"], by["uniform"]
        diff = statistics.mean(a.tuned) - statistics.mean(u.tuned)
        noise = 2 * ((sd(a.tuned) ** 2 + sd(u.tuned) ** 2) / n) ** 0.5
        words[f] = ("one-shot " + ("better" if a.one_shot > u.one_shot else "not better"),
                    "fine-tuned " + ("within noise" if n > 1 and abs(diff) <= noise else
                                     ("better" if diff > 0 else "worse")))
    lines += ["", "Overall: " + "; ".join(f"MACs {f:g}: {', '.join(w)}" for f, w in words.items())
              + f" (allocation vs uniform; fine-tune {args.steps} steps, {n} seeds)."]
    lines += ["", ("Sensitivity measured (validation accuracy after pruning one group alone; the curves "
                   "`allocate` used):"), "", "```", str(sens), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="0.5,0.3", help="fractions of the dense MACs to keep, comma-separated")
    ap.add_argument("--ratios", default="0.25,0.5,0.75", help="sensitivity ratios")
    ap.add_argument("--criterion", default="l2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ft-epochs", type=int, default=5)
    ap.add_argument("--ft-lr", type=float, default=3e-3)
    ap.add_argument("--seeds", type=int, default=5, help="fine-tune seeds per pruned model")
    ap.add_argument("--recal-samples", type=int, default=1024)
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    args.targets = [float(v) for v in args.targets.split(",") if v.strip()]
    args.ratios = tuple(float(v) for v in args.ratios.split(",") if v.strip())
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    torch.set_num_threads(args.threads)
    text, _ = run(args)
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
