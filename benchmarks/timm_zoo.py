"""Prune one model per timm family with default arguments and print a Markdown table and a summary.

    python benchmarks/timm_zoo.py [--ratio 0.3] [--families beit,resnet] [--limit N]

Per family (a module of timm.list_models()): its smallest-looking variant, random init, the smallest
square input it accepts, batch 1, ratio 0.3, defaults. The check is tests/zoo/timm_check.py (the
same as `pytest -m timm`): output shape kept, input model untouched. Printed per model: params and
MACs before/after, prune time (trace + plan with verification + apply), groups skipped by
verification and what the trace left unpruned, with reasons.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import timm  # noqa: E402
import torch  # noqa: E402

from tests.zoo.timm_check import check, families, representative  # noqa: E402


def _short(reasons: list[str], n: int = 2) -> str:
    counts = collections.Counter(r.split(" in ")[0][:60] for r in reasons)
    return "; ".join(f"{k} (x{v})" if v > 1 else k for k, v in counts.most_common(n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--families", default="")
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    fams = families()
    if args.families:
        fams = {k: v for k, v in fams.items() if k in args.families.split(",")}
    if args.limit:
        fams = dict(list(fams.items())[:args.limit])
    print(f"timm {timm.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"ratio {args.ratio}, batch 1, {len(fams)} families\n")
    print("| family | model | input | result | prune s | params (M) | MACs (M) | skipped by verification "
          "| left unpruned by the trace |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows, failed = [], []
    t_all = time.perf_counter()
    for fam, names in fams.items():
        name = representative(names)
        try:
            r = check(name, args.ratio)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            failed.append((fam, name, f"{type(exc).__name__}: {str(exc)[:120]}"))
            print(f"| {fam} | {name} | | FAILED: {failed[-1][2]} | | | | | |", flush=True)
            continue
        (p0, p1), (m0, m1) = r["params"], r["macs"]
        r["family"], r["cut"] = fam, 1 - p1 / p0
        rows.append(r)
        print(f"| {fam} | {name} | {r['side']} | ok | {r['seconds']:.2f} | {p0 / 1e6:.2f} -> {p1 / 1e6:.2f} "
              f"({r['cut']:.0%}) | {m0 / 1e6:.1f} -> {m1 / 1e6:.1f} | {len(r['skipped'])} {_short(r['skipped'])} "
              f"| {len(r['unsupported'])} {_short(r['unsupported'])} |", flush=True)
    pruned = [r for r in rows if r["cut"] > 0]
    big = [r for r in pruned if r["cut"] >= 0.4]
    print(f"\n{len(rows)} of {len(fams)} families pruned with defaults, output shape kept, input model untouched "
          f"({time.perf_counter() - t_all:.0f} s in all, {sum(r['seconds'] for r in rows):.0f} s pruning)")
    if pruned:
        print(f"{len(big)} of {len(pruned)} pruned families ({len(big) / len(pruned):.0%}) lose >= 40% of params")
    print("under 40%: " + ", ".join(f"{r['family']} ({r['cut']:.0%})" for r in pruned if r["cut"] < 0.4))
    print("nothing pruned: " + ", ".join(r["family"] for r in rows if r["cut"] <= 0))
    for fam, name, why in failed:
        print(f"failed: {fam} ({name}): {why}")


if __name__ == "__main__":
    main()
