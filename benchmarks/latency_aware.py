"""Latency-aware widths: does ``round_to="auto"`` make pruned models faster than their MACs cut suggests?

Each torchvision model (randomly initialised: speed does not depend on weights) is pruned by
channels at ratio 0.5 (L2 magnitude) three ways: ``round_to=1`` (widths by importance alone),
``round_to=16`` and ``round_to="auto"`` (each width snapped to a fast point of this machine's
measured latency table, ``secateurs.measure.staircase``). The dense model and the three pruned ones
are timed interleaved (one forward of each per round, ``--rounds`` rounds after a warm-up, one
thread), so that load on the machine hits all of them alike; the median is reported with the p10-p90
spread. The figure of merit is ``speed-up / MACs cut``: above 1.0 the pruned model is faster than
its MACs reduction alone predicts.

Run::

    python benchmarks/latency_aware.py                         # batch 8 and 1, 96x96 inputs
    python benchmarks/latency_aware.py --models resnet50 --batches 1 --res 128 --rounds 30

The table is printed and written to ``benchmarks/results/latency_aware.md``. The latency table is
cached (``$SECATEURS_CACHE/latency``), so a second run skips building it.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import secateurs as sc  # noqa: E402
from secateurs.measure import count_macs  # noqa: E402
from secateurs.measure.staircase import LatencyTable  # noqa: E402

SETTINGS = (("round_to=1", 1), ("round_to=16", 16), ("round_to=auto", "auto"))


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def interleaved(models: dict[str, torch.nn.Module], x: torch.Tensor, rounds: int, warmup: int = 3) -> dict:
    """Median, p10 and p90 milliseconds of each model, timed one forward each per round."""
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for m in models.values():
                m(x)
        for _ in range(rounds):
            for k, m in models.items():
                t = time.perf_counter()
                m(x)
                times[k].append((time.perf_counter() - t) * 1e3)
    return {k: (statistics.median(v), _percentile(v, 0.1), _percentile(v, 0.9)) for k, v in times.items()}


def run(name: str, batch: int, res: int, ratio: float, rounds: int) -> list[dict]:
    """Plan the three settings for one model and batch size, time them with the dense model, return rows."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    x = torch.randn(batch, 3, res, res)
    graph = sc.trace(model, x)
    table = LatencyTable(batch, threads=1)
    variants = {"dense": model}
    info = {}
    for label, rt in SETTINGS:
        t = time.perf_counter()
        kw = {"latency_table": table} if rt == "auto" else {}
        p = sc.plan(model, x, ratio, round_to=rt, graph=graph, **kw)
        info[label] = time.perf_counter() - t
        variants[label] = sc.apply(model, p).eval()
    macs = {k: count_macs(m, x).total for k, m in variants.items()}
    ms = interleaved(variants, x, rounds)
    rows = []
    for label, _ in SETTINGS:
        speed = ms["dense"][0] / ms[label][0]
        cut = macs["dense"] / macs[label]
        rows.append(dict(model=name, batch=batch, setting=label, ms=ms[label], dense_ms=ms["dense"],
                         speedup=speed, mac_cut=cut, merit=speed / cut, plan_s=info[label]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet_v2,efficientnet_b0,resnet50")
    ap.add_argument("--batches", default="8,1")
    ap.add_argument("--res", type=int, default=96)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    head = ("| model | batch | setting | ms (p10-p90) | dense ms | speed-up | MACs cut | speed-up / MACs cut | plan s |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    print(head)
    for b in [int(v) for v in args.batches.split(",")]:
        for name in args.models.split(","):
            for r in run(name, b, args.res, args.ratio, args.rounds):
                med, p10, p90 = r["ms"]
                line = (f"| {r['model']} | {r['batch']} | {r['setting']} | {med:.1f} ({p10:.1f}-{p90:.1f}) | "
                        f"{r['dense_ms'][0]:.1f} | {r['speedup']:.2f}x | {r['mac_cut']:.2f}x | {r['merit']:.2f} | "
                        f"{r['plan_s']:.1f} |")
                print(line, flush=True)
                lines.append(line)
    meta = (f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, "
            f"{args.res}x{args.res} inputs, ratio {args.ratio}, {args.rounds} interleaved rounds.\n")
    out = Path(__file__).parent / "results" / "latency_aware.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("# Latency-aware widths (benchmarks/latency_aware.py)\n\n" + "\n".join(lines) + "\n" + meta)
    print(meta)


if __name__ == "__main__":
    main()
