"""The balance targets of the product, measured in one run.

    python benchmarks/balance.py [--workdir runs/balance] [--threads 1]

MNIST-1D: the model `secateurs demo` picks at max_drop=0.01 (lowest latency) must have >= 3x fewer
MACs and >= 2x lower measured latency than the dense CNN, and the demo must finish in < 5 minutes.
Rotten Tomatoes: 40% fewer parameters with at most 1 point of accuracy lost (`secateurs demo text`).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

from secateurs.cli import mnist1d_demo  # noqa: E402
from secateurs.examples.text import text_demo  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/balance")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)  # a fresh sweep: nothing resumed
    t0 = time.perf_counter()
    demo = mnist1d_demo(args.workdir, threads=args.threads, quiet=True)
    demo_s = time.perf_counter() - t0
    text = text_demo(quiet=True, threads=args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s)\n")
    print("| target | measured | met |")
    print("|---|---|---|")
    rows = [
        ("MNIST-1D: picked model (max_drop 0.01) has >= 3x fewer MACs",
         f"{demo['macs_reduction']:.2f}x ({demo['picked']}, accuracy {demo['picked_accuracy']:.3f} vs "
         f"{demo['dense_accuracy']:.3f})", demo["macs_reduction"] >= 3),
        ("MNIST-1D: >= 2x lower measured latency (batch 256)", f"{demo['latency_speedup']:.2f}x",
         demo["latency_speedup"] >= 2),
        ("MNIST-1D: demo (train if uncached, explore, report) < 5 min", f"{demo_s:.0f} s", demo_s < 300),
        ("Rotten Tomatoes: >= 40% fewer parameters",
         f"{100 * text['param_reduction']:.1f}% ({text['params_before']:,} -> {text['params_after']:,})",
         text["param_reduction"] >= 0.4),
        ("Rotten Tomatoes: accuracy drop <= 1 point",
         f"{text['accuracy_drop']:+.2f} points ({100 * text['accuracy_before']:.2f}% -> "
         f"{100 * text['accuracy_after']:.2f}%)", text["accuracy_drop"] <= 1.0),
    ]
    for name, value, ok in rows:
        print(f"| {name} | {value} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
