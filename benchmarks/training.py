"""Pruning during training vs prune-then-fine-tune, at the same number of training steps.

MNIST-1D CNN (22.7k parameters), one CPU thread, AdamW (lr 3e-3, weight decay 1e-4) with one
cosine learning-rate schedule over the whole run, batch 128, ``--steps`` optimizer steps for EVERY
method (default 1000, about 31 epochs of the 4,000 training samples). Methods:

* dense: no pruning.
* one-shot + fine-tune: ``OneShot(step=steps//2)``: dense for half the run, pruned at once (L2
  magnitude, unstructured, ``--scope global``: one ranking over all layers, each keeping at least
  1%; ``local``: the same fraction of every tensor), fine-tuned for the other half.
* gradual: ``Polynomial(0, s, begin_step=steps//10, end_step=steps*6//10, frequency=steps//40)``
  (Zhu & Gupta 2017), then training continues with the final mask.
* iterative: ``Iterative(ratio_per_prune=0.4, every=..., final_sparsity=s)``, rounds spread over
  the first 60% of the run.
* lottery ticket: the iterative schedule with ``rewind_step=steps//50`` (weights rewound to step
  20 when pruning ends; Frankle et al. 2020's late rewinding).
* L1 then pruned: ``L1(1e-4)`` added to the loss throughout, one-shot prune at ``steps*6//10``.
* network slimming: ``BNGammaL1(1e-3)`` throughout; at ``steps*6//10`` half the channels go
  (``sc.plan(..., criterion="bn_scale", scope="global")``), removed physically mid-run with
  ``shrink`` (the same optimizer continues), fine-tuned to the end.
* gradual channels: a channel ``Pruner`` with the polynomial schedule to 50% of every layer's
  channels, compacted (``Pruner.compact``) once the schedule ends.

Structured rows also give the smaller model's measured latency (batch 1, median of 200 runs).
Run: ``python benchmarks/training.py [--steps 1000] [--seeds 0]``; prints a Markdown table.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

import secateurs as sc
from secateurs.examples import accuracy, mnist1d, mnist1d_cnn
from secateurs.measure.latency import measure_latency
from secateurs.train import BNGammaL1, Iterative, L1, LotteryTicket, OneShot, Polynomial, Pruner, shrink


def run(method: str, sparsity: float, steps: int, seed: int, data, scope: str = "global") -> dict:
    x, y, xt, yt = data
    model = mnist1d_cnn(seed=seed)
    ex = x[:2]
    gradual = Polynomial(0.0, sparsity, begin_step=steps // 10, end_step=steps * 6 // 10, frequency=max(1, steps // 40))
    n_rounds = math.ceil(math.log(1 - sparsity) / math.log(1 - 0.4)) if sparsity else 1
    iterative = Iterative(0.4, every=max(1, steps * 6 // 10 // n_rounds), final_sparsity=sparsity)
    pruner, reg, slim_at = None, None, None
    if method == "one-shot + fine-tune":
        pruner = Pruner(model, ex, OneShot(steps // 2, sparsity), scope=scope)
    elif method == "gradual":
        pruner = Pruner(model, ex, gradual, scope=scope)
    elif method == "iterative":
        pruner = Pruner(model, ex, iterative, scope=scope)
    elif method == "lottery ticket":
        pruner = Pruner(model, ex, LotteryTicket(iterative, rewind_step=steps // 50), scope=scope)
    elif method == "L1 then pruned":
        pruner, reg = Pruner(model, ex, OneShot(steps * 6 // 10, sparsity), scope=scope), L1(1e-4)
    elif method == "network slimming":
        reg, slim_at = BNGammaL1(1e-3), steps * 6 // 10
    elif method == "gradual channels":
        pruner = Pruner(model, ex, gradual, granularity="channel")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))
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
        if slim_at is not None and t + 1 == slim_at:
            reg = None
            shrink(model, sc.plan(model, ex, sparsity, criterion="bn_scale", scope="global"), opt)
    seconds = time.perf_counter() - t0
    final = pruner.finalize() if pruner is not None and method != "gradual channels" else model
    w = [p for n, p in final.named_parameters() if n.endswith("weight") and p.dim() > 1]
    dense_w = sum(p.numel() for n, p in mnist1d_cnn().named_parameters() if n.endswith("weight") and p.dim() > 1)
    out = {"acc": accuracy(final, xt, yt), "seconds": seconds,
           "weight_sparsity": 1 - sum(int((p != 0).sum()) for p in w) / dense_w,
           "params": sum(p.numel() for p in final.parameters())}
    if method in ("dense", "network slimming", "gradual channels"):
        out["latency_ms"] = measure_latency(final, x[:1], warmup=20, runs=200, threads=1).median_ms
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", type=str, default="0")
    ap.add_argument("--only", default="", help="comma-separated method names to run (default: all)")
    ap.add_argument("--scope", default="global", choices=["global", "local"],
                    help="how unstructured methods spread the sparsity: one global magnitude ranking or per tensor")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = mnist1d()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [("dense", 0.0)]
    for s in (0.9, 0.95):
        rows += [("one-shot + fine-tune", s), ("gradual", s)]
    rows += [("iterative", 0.9), ("lottery ticket", 0.9), ("L1 then pruned", 0.9),
             ("network slimming", 0.5), ("gradual channels", 0.5)]
    if args.only:
        rows = [r for r in rows if r[0] in args.only.split(",")]
    print(f"MNIST-1D CNN, {args.steps} steps per method, seeds {seeds}, scope {args.scope}, 1 thread\n")
    print("| method | target | test acc. (mean over seeds) | spread | weight sparsity | params | latency b=1 | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for method, s in rows:
        res = [run(method, s, args.steps, seed, data, args.scope) for seed in seeds]
        accs = [r["acc"] * 100 for r in res]
        spread = f"{statistics.stdev(accs):.2f}" if len(accs) > 1 else "-"
        lat = f"{res[0]['latency_ms']:.3f} ms" if "latency_ms" in res[0] else ""
        target = "" if method == "dense" else (f"{s:.0%} channels" if "channel" in method or "slimming" in method
                                               else f"{s:.0%} weights")
        print(f"| {method} | {target} | {statistics.mean(accs):.2f} | {spread} | {res[0]['weight_sparsity']:.3f} | "
              f"{res[0]['params']:,} | {lat} | {statistics.mean(r['seconds'] for r in res):.0f} |", flush=True)


if __name__ == "__main__":
    main()
