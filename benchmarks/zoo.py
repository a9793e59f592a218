"""Prune every torchvision classification model with default arguments and print a Markdown table.

    python benchmarks/zoo.py [--ratio 0.3] [--models resnet18,vit_b_16]

The same check as `pytest -m zoo_full` (tests/zoo/check.py): eval forward, output shape, fewer
params and MACs, and a train-mode forward+backward of the pruned model.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402
import torchvision  # noqa: E402

from tests.zoo.check import check  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--models", default="")
    args = ap.parse_args()
    names = args.models.split(",") if args.models else torchvision.models.list_models(module=torchvision.models)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, threads {torch.get_num_threads()}, "
          f"ratio {args.ratio}\n")
    print("| model | result | prune s | params (M) | MACs (G) | groups skipped by verification |")
    print("|---|---|---|---|---|---|")
    ok = 0
    for name in names:
        try:
            r = check(name, args.ratio)
            ok += 1
            (p0, p1), (m0, m1) = r["params"], r["macs"]
            print(f"| {name} | ok | {r['seconds']:.2f} | {p0 / 1e6:.2f} -> {p1 / 1e6:.2f} | "
                  f"{m0 / 1e9:.3f} -> {m1 / 1e9:.3f} | {r['skipped']} |", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            print(f"| {name} | FAILED: {type(exc).__name__}: {str(exc)[:80]} | | | | |", flush=True)
            traceback.print_exc(file=sys.stderr)
    print(f"\n{ok} of {len(names)} models pruned and verified")


if __name__ == "__main__":
    main()
