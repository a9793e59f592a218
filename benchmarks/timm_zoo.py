"""Prune one model per timm family with default arguments and print a Markdown table and a summary.

    python benchmarks/timm_zoo.py [--ratio 0.3] [--families beit,resnet] [--limit N] [--torch-pruning]

Per family (a module of timm.list_models()): its smallest-looking variant, random init, the smallest
square input it accepts, batch 1, ratio 0.3, defaults. The check is tests/zoo/timm_check.py (the
same as `pytest -m timm`): output shape kept, input model untouched. Printed per model: params and
MACs before/after, prune time (trace + plan with verification + apply), groups skipped by
verification and what the trace left unpruned, with reasons. A family whose smallest variant is a
feature encoder (made with num_classes=0: eva02, qwen3_vit ...) gets a 1000-class head
(tests/zoo/timm_check.build), so its residual width is prunable at all; the table names these.

With --torch-pruning (needs `pip install torch-pruning==1.6.1 --no-deps`, not a secateurs
dependency) each model is also pruned by Torch-Pruning's MetaPruner (L2 magnitude importance,
pruning_ratio as given, classifier ignored, other arguments at their defaults): the table shows
its time and whether it ran and kept the output shape, and the summary compares the total prune
times of both on the models both handle, and both with a floor: the time of the work any pruner that
checks its result does (a forward of each model and of its pruned copy, one read of the weights, a
copy of the kept ones), measured on the same models in the same run.
"""
from __future__ import annotations

import argparse
import collections
import copy
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import timm  # noqa: E402
import torch  # noqa: E402

from tests.zoo.timm_check import build, check, families, representative  # noqa: E402


def torch_pruning(name: str, ratio: float, limit_s: int) -> tuple[bool, float, str]:
    """Prune ``name`` (as tests/zoo/timm_check.build makes it) with Torch-Pruning's MetaPruner.

    Returns (success, seconds for building the dependency graph and pruning, why it failed); a run
    over ``limit_s`` seconds is stopped and counted as failed.
    """
    import torch_pruning as tp

    model, x = build(name)
    model = copy.deepcopy(model)
    with torch.no_grad():
        want = model(x).shape
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    ignored = [m for m in ([head] if isinstance(head, torch.nn.Module) else []) if list(m.parameters())]

    def stop(*_):
        raise TimeoutError(f"over {limit_s} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(limit_s)
    t0 = time.perf_counter()
    try:
        pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=2),
                                      pruning_ratio=ratio, ignored_layers=ignored)
        pruner.step()
        seconds = time.perf_counter() - t0
        signal.alarm(0)
        with torch.no_grad():
            got = model(x).shape
        if got != want:
            return False, seconds, f"output shape {tuple(got)}, expected {tuple(want)}"
        return True, seconds, ""
    except Exception as exc:  # noqa: BLE001 - reported in the table
        return False, time.perf_counter() - t0, f"{type(exc).__name__}: {str(exc)[:60]}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _short(reasons: list[str], n: int = 2) -> str:
    counts = collections.Counter(r.split(" in ")[0][:60] for r in reasons)
    return "; ".join(f"{k} (x{v})" if v > 1 else k for k, v in counts.most_common(n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--families", default="")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--torch-pruning", action="store_true", help="also prune each model with Torch-Pruning")
    ap.add_argument("--tp-limit", type=int, default=120, help="seconds before a Torch-Pruning run counts as failed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    fams = families()
    if args.families:
        fams = {k: v for k, v in fams.items() if k in args.families.split(",")}
    if args.limit:
        fams = dict(list(fams.items())[:args.limit])
    print(f"timm {timm.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"ratio {args.ratio}, batch 1, {len(fams)} families\n")
    tp_head, tp_rule = (" Torch-Pruning s |", "---|") if args.torch_pruning else ("", "")
    print("| family | model | input | result | prune s | params (M) | MACs (M) | skipped by verification "
          f"| left unpruned by the trace |{tp_head}")
    print(f"|---|---|---|---|---|---|---|---|---|{tp_rule}")
    rows, failed, both = [], [], []
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
        tp_cell = ""
        if args.torch_pruning:
            ok, secs, why = torch_pruning(name, args.ratio, args.tp_limit)
            tp_cell = f" {secs:.2f} ok |" if ok else f" failed ({secs:.1f} s): {why} |"
            if ok:
                both.append((r["seconds"], secs, r["floor"]))
        print(f"| {fam} | {r['model']} | {r['side']} | ok | {r['seconds']:.2f} | {p0 / 1e6:.2f} -> {p1 / 1e6:.2f} "
              f"({r['cut']:.0%}) | {m0 / 1e6:.1f} -> {m1 / 1e6:.1f} | {len(r['skipped'])} {_short(r['skipped'])} "
              f"| {len(r['unsupported'])} {_short(r['unsupported'])} |{tp_cell}", flush=True)
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
    if args.torch_pruning:
        ours, theirs, floor = (sum(b[i] for b in both) for i in range(3))
        print(f"Torch-Pruning pruned {len(both)} of {len(rows)} models (ran and kept the output shape); on those, "
              f"secateurs took {ours:.0f} s in all, Torch-Pruning {theirs:.0f} s "
              f"(secateurs/Torch-Pruning = {ours / max(theirs, 1e-9):.3f})")
        print(f"floor on those (a forward of each model and of its pruned copy, one read of the weights, a copy of "
              f"the kept ones: tests/zoo/timm_check._floor): {floor:.1f} s "
              f"(floor/Torch-Pruning = {floor / max(theirs, 1e-9):.3f}, "
              f"secateurs/floor = {ours / max(floor, 1e-9):.2f})")


if __name__ == "__main__":
    main()
