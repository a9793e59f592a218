"""Time ``sc.trace`` alone on timm models, optionally against another checkout's tracer, and check both decide alike.

    python benchmarks/trace_speed.py [--models nasnetalarge,vgg11] [--repeat 3] [--against /tmp/old] [--out t.json]

Models default to the 34 of ``docs/timm_zoo.md``'s "Speed against Torch-Pruning" table, built as
tests/zoo/timm_check.build builds them. Per model: the best of ``--repeat`` trace times (CPU time of
the process, which a loaded machine inflates less than wall time) and the same for a plain forward,
the floor a trace cannot go under. ``--against DIR`` also traces each model with the ``secateurs``
package of the checkout at DIR (``git worktree add /tmp/old main``), alternating with this one so load
affects both alike, and reports any model whose groups, layouts, syncs or unsupported reasons differ.
``--out`` writes this tree's decisions as JSON.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

import secateurs as sc  # noqa: E402
from tests.zoo.timm_check import build  # noqa: E402

MODELS = ("beitv2_base_patch16_224,gernet_s,convmixer_768_32,convnext_atto,cspnext_tiny,densenet121,dla34,"
          "mobilenet_edgetpu_v2_xs,ghostnetv2_100,hardcorenas_b,hgnet_tiny,hrnet_w18_small,inception_next_atto,"
          "inception_resnet_v2,inception_v3,inception_v4,lcnetv2_small,mobilenetv3_small_050,nasnetalarge,"
          "pnasnet5large,rdnet_tiny,regnetx_002,repghostnet_050,repvit_m1_0,test_resnet,resnetv2_18,selecsls42,"
          "legacy_seresnet18,starnet_s1,vgg11,samvit_base_patch16,ese_vovnet19b_dw,legacy_xception,xception41")


def decisions(graph: Any) -> dict:
    """What the trace decided, as plain JSON data."""
    return json.loads(json.dumps({
        "groups": [[g.size, g.kind, g.tensors, g.exact, g.producers, g.multiple] for g in graph.groups],
        "layouts": {k: {str(d): v for d, v in dims.items()} for k, dims in graph.layouts.items()},
        "syncs": graph.syncs, "unsupported": [[u.reason, u.tensors] for u in graph.unsupported],
        "modes": graph.modes}))


def other_trace(root: str) -> Callable:
    """``trace`` of the ``secateurs`` package under ``root``, imported beside this one under another name."""
    dst = tempfile.mkdtemp()
    shutil.copytree(os.path.join(root, "secateurs"), os.path.join(dst, "secateurs_other"))
    sys.path.insert(0, dst)
    return importlib.import_module("secateurs_other").trace


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """The least CPU time of ``repeat`` calls, and the last call's result."""
    least, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        least = min(least, time.process_time() - t0)
    return least, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--against", default="", help="root of another checkout whose tracer to time too")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    theirs = other_trace(args.against) if args.against else None
    totals = {"trace": 0.0, "other": 0.0, "forward": 0.0}
    found, differ = {}, []
    for name in args.models.split(","):
        model, x = build(name)
        with torch.no_grad():
            plain, _ = best(partial(model, x), args.repeat)
        mine, graph = best(partial(sc.trace, model, x), args.repeat)
        found[name] = decisions(graph)
        totals["trace"] += mine
        totals["forward"] += plain
        line = f"{name:28s} trace {mine:6.3f} s"
        if theirs is not None:
            old, other = best(partial(theirs, model, x), args.repeat)
            totals["other"] += old
            same = decisions(other) == found[name]
            differ += [] if same else [name]
            line += f"  other {old:6.3f} s ({mine / old:4.2f}x){'' if same else '  DECIDES DIFFERENTLY'}"
        print(f"{line}  forward {plain:6.3f} s  {len(graph.groups):4d} groups", flush=True)
    print(f"\n{len(found)} models: trace {totals['trace']:.2f} s CPU, a plain forward {totals['forward']:.2f} s")
    if theirs is not None:
        extra = (totals["trace"] - totals["forward"]) / max(totals["other"] - totals["forward"], 1e-9)
        print(f"other checkout {totals['other']:.2f} s: {totals['trace'] / totals['other']:.2f}x the time, "
              f"{extra:.2f}x the time beyond the forward; decisions differ on: {', '.join(differ) or 'none'}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(found, f, sort_keys=True)


if __name__ == "__main__":
    main()
