"""Prune every Hugging Face transformers family built from a tiny config; print one line per family.

    python benchmarks/hf_zoo.py [--ratio 0.3] [--families llama,t5] [--kinds decoder,moe] [--jsonl out.jsonl]
    python benchmarks/hf_zoo.py --table out.jsonl     # the Markdown table of a saved run (docs/hf_zoo.md)

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


def _cell(part: dict) -> str:
    if "error" in part:
        return "FAIL: " + part["error"][:90].replace("|", "/")
    p0, p1 = part["params"]
    return f"{p0 / 1e3:.0f}k -> {p1 / 1e3:.0f}k (-{removed(part):.0%}), {part['pruned']}/{part['groups']} groups"


def table(path: str) -> None:
    """Print the Markdown table of a run saved with --jsonl, grouped by kind."""
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    print("| family | kind | result | channels: params (cut), groups pruned | heads: params (cut), groups pruned "
          "| skipped by verification; left unpruned by the trace |")
    print("|---|---|---|---|---|---|")
    for kind in KINDS:
        for r in (r for r in rows if r["kind"] == kind):
            if "build" in r:
                print(f"| {r['family']} | {kind} | not built | {r['build'][:110].replace('|', '/')} | | |")
                continue
            reasons = r["channel"].get("skipped", []) + r["head"].get("skipped", [])
            left = r["channel"].get("unpruned", []) + r["head"].get("unpruned", [])
            print(f"| {r['family']} | {kind} | {'ok' if ok(r) else 'NO'} | {_cell(r['channel'])} | {_cell(r['head'])} "
                  f"| {_short(reasons) or '-'}; {_short(left) or '-'} |")
    built = [r for r in rows if "build" not in r]
    print(f"\n{sum(ok(r) for r in built)} of {len(rows)} families meet every target; {len(built)} built.")
    for kind in KINDS:
        ks = [r for r in built if r["kind"] == kind]
        if ks:
            cut = sorted(removed(r["channel"]) for r in ks)
            print(f"- {kind}: {sum(ok(r) for r in ks)}/{len(ks)} built families ok "
                  f"({sum(r['kind'] == kind for r in rows)} in transformers), "
                  f"median channel cut {cut[len(cut) // 2]:.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--families", default="")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--limit", type=int, default=240, help="seconds per family and part")
    ap.add_argument("--jsonl", default="")
    ap.add_argument("--table", default="", help="print the Markdown table of a saved --jsonl run and stop")
    args = ap.parse_args()
    if args.table:
        table(args.table)
        return
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
