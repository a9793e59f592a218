"""Prune every Hugging Face transformers family built from a tiny config; print one line per family.

    python benchmarks/hf_zoo.py [--ratio 0.3] [--families llama,t5] [--kinds decoder,moe] [--jsonl out.jsonl]

Families are transformers' own auto mappings (causal LM, seq2seq LM, masked LM, image
classification), each built from its config class with small sizes (tests/zoo/hf_check.py, the same
check as `pytest -m hf_full`), random weights, batch 1, `outputs=["logits"]`. Per family: channels at
`ratio` and heads at `ratio` (rounding="up"), each with the logits' shape kept, `generate` run on
causal and seq2seq models, the input model untouched; params before/after, groups skipped by
verification and what the trace left unpruned, with reasons. --jsonl appends one JSON row per family.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402
import transformers  # noqa: E402

from tests.zoo.hf_check import KINDS, check, families, ok, removed, summary  # noqa: E402


def _short(reasons: list[str], n: int = 2) -> str:
    counts = collections.Counter(r.replace("left unpruned by the trace: ", "").split(" in ")[0][:70] for r in reasons)
    return "; ".join(f"{k} (x{v})" if v > 1 else k for k, v in counts.most_common(n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--families", default="")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--limit", type=int, default=240, help="seconds per family and part")
    ap.add_argument("--jsonl", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    kinds = args.kinds.split(",")
    fams = [f for f, (k, _) in families().items() if k in kinds]
    if args.families:
        fams = [f for f in fams if f in args.families.split(",")]
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, threads 1, ratio {args.ratio}, "
          f"batch 1, {len(fams)} families\n", flush=True)
    rows = []
    t_all = time.perf_counter()
    for fam in fams:
        row = check(fam, args.ratio, args.limit)
        rows.append(row)
        print(summary(row), flush=True)
        for g in ("channel", "head"):
            part = row.get(g, {})
            if part.get("skipped") or part.get("unpruned"):
                print(f"    {g}s: skipped by verification: {_short(part['skipped']) or '-'}; "
                      f"left unpruned: {_short(part['unpruned']) or '-'}", flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
    built = [r for r in rows if "build" not in r]
    good = [r for r in built if ok(r)]
    print(f"\n{len(good)} of {len(rows)} families meet every target ({len(built)} built; "
          f"{time.perf_counter() - t_all:.0f} s)")
    for kind in kinds:
        ks = [r for r in built if r["kind"] == kind]
        if ks:
            cut = sorted(removed(r["channel"]) for r in ks)
            print(f"  {kind}: {sum(ok(r) for r in ks)}/{len(ks)} ok, median channel cut {cut[len(cut) // 2]:.0%}")


if __name__ == "__main__":
    main()
