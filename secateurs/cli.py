"""The ``secateurs`` command: demo, run a recipe, measure a model, redraw a report."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from typing import Any, NoReturn

import torch

from . import _inputs
from .measure import DEFAULT_THREADS
from .recipe import RECIPE_HELP, build_model, load_recipe, load_weights, run_recipe

DEVICE_ENV = "SECATEURS_DEVICE"
DEBUG_ENV = "SECATEURS_DEBUG"
# Commands that put models and tensors on --device (checked before they start).
_ON_DEVICE = ("demo", "run", "measure")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``secateurs`` console script; returns the exit status.

    Every error ends the command with one line on stderr and exit status 2 (set SECATEURS_DEBUG=1 for
    the traceback instead).
    """
    args = _parser().parse_args(argv)
    if args.threads < 1:
        _fail(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warn
            if args.command in _ON_DEVICE:
                check_device(args.device)
            return args.func(args)
    except KeyboardInterrupt:
        print("secateurs: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's promise: one line, exit 2, no traceback
        if os.environ.get(DEBUG_ENV):
            raise
        known = (ValueError, TypeError, OSError, ImportError, RuntimeError)
        _fail(str(exc) if isinstance(exc, known) and str(exc) else f"{type(exc).__name__}: {exc}")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default=os.environ.get(DEVICE_ENV, "cpu"),
                        help=f"torch device (default cpu, or ${DEVICE_ENV})")
    common.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="CPU threads for torch: training, the sweep and every latency "
                             f"(default {DEFAULT_THREADS})")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--quiet", action="store_true", help="no progress bars or tables: only the pick, one line")
    p = argparse.ArgumentParser(prog="secateurs",
                                description="Prune PyTorch models for real and find the best balance.",
                                epilog=f"Errors are one line and exit status 2; {DEBUG_ENV}=1 shows the traceback.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", parents=[common], help="the main job on its built-in default")
    d.add_argument("which", nargs="?", default="mnist1d", choices=["mnist1d", "text"])
    d.add_argument("--workdir", default=None, help="where results go (default runs/demo, runs/demo-text for text)")
    d.add_argument("--during-training", action="store_true",
                   help="text: also prune gradually while training, beside prune-then-recover")
    d.set_defaults(func=_demo)
    r = sub.add_parser("run", parents=[common], help="run a recipe (YAML)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run the sweep a recipe describes. A recipe is code: its 'model' and 'data' "
                                   "entries import and call Python functions (module:function), so run only "
                                   "recipes you trust as you would a script. Every field is validated before "
                                   "anything runs.\n\n" + RECIPE_HELP)
    r.add_argument("recipe", help="path of the YAML recipe (trusted: it names code that will be run)")
    r.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="run candidates here one by one, or as Ray tasks (pip install \"secateurs[ray]\")")
    r.add_argument("--ray-address", default=None, help="a Ray cluster's host:port (default: start a local one)")
    r.add_argument("--weights", default=None,
                   help="trained weights for the recipe's model (.safetensors; overrides the recipe's 'weights')")
    r.add_argument("--round-to", default=None, type=_round_to, metavar="N|auto",
                   help="kept widths a multiple of N, or 'auto': snapped to fast widths of this machine's "
                        "measured latency table (overrides the recipe's 'round_to')")
    r.set_defaults(func=_run)
    m = sub.add_parser("measure", parents=[common], help="measure a model built by module:function")
    m.add_argument("factory", help="module:function (or class) returning an nn.Module")
    m.add_argument("--input-shape", required=True, help="e.g. 1,3,224,224")
    m.add_argument("--runs", type=int, default=20)
    m.add_argument("--weights", default=None, help="trained weights to load into the model (.safetensors)")
    m.set_defaults(func=_measure)
    rep = sub.add_parser("report", parents=[common], help="write the report of a sweep's workdir")
    rep.add_argument("workdir")
    rep.add_argument("--max-drop", type=float, default=0.01)
    rep.add_argument("--minimize", default="latency", choices=["latency", "macs", "size", "params"])
    rep.set_defaults(func=_report)
    return p


def _round_to(text: str) -> int | str:
    """``--round-to``: "auto" or a positive integer (argparse reports anything else as a usage error)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {text!r}")
    return value


def _fail(msg: str, limit: int = 500) -> NoReturn:
    line = " ".join(msg.split())
    if len(line) > limit:
        line = line[:limit] + "..."
    print(f"secateurs: error: {line}", file=sys.stderr)
    raise SystemExit(2)


def _warn(message: Warning | str, *_: Any, **__: Any) -> None:
    """Warnings as one line each, like errors (no source line echoed)."""
    print(f"secateurs: warning: {' '.join(str(message).split())}", file=sys.stderr)


def check_device(name: str, hint: str = f"use --device cpu or set ${DEVICE_ENV}") -> torch.device:
    """``--device``'s torch device, which must work here; else a ValueError that ends with ``hint`` (the
    benchmarks, which read no environment variable, pass their own)."""
    return _inputs.check_device(name, "--device", hint)


def _measure(args: argparse.Namespace) -> int:
    from . import measure
    try:
        shape = [int(v) for v in args.input_shape.split(",")]
    except ValueError:
        raise ValueError(f"--input-shape must be comma-separated integers, got {args.input_shape!r}") from None
    model = build_model(args.factory, what="factory")
    if args.weights is not None:
        load_weights(model, args.weights, "--weights")
    x = torch.randn(*shape, device=args.device)
    print(measure(model.to(args.device).eval(), x, runs=args.runs, threads=args.threads))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report
    from .search.candidate import choose
    from .search.explore import read_workdir
    from .search.front import load_code, report_data
    candidates, sens = read_workdir(args.workdir)
    base = next((c for c in candidates if c.name == "dense"), None)
    if base is None:
        raise ValueError(f"{args.workdir} holds no dense baseline: not a finished secateurs workdir")
    picked = choose(candidates, base, args.max_drop, args.minimize)
    data = report_data(base, candidates, picked, f"max_drop={args.max_drop}, minimize={args.minimize}", sens,
                       f"secateurs: {args.workdir}", None)
    paths = write_report(data, os.path.join(args.workdir, "report.html"))
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    print(f"picked {picked.name} (quality {picked.quality:.4f}): max_drop={args.max_drop}, minimize={args.minimize}")
    folder = os.path.join(args.workdir, os.path.dirname(picked.weights_path)) if picked.weights_path else None
    if folder is not None:
        print("load it with:\n" + load_code(picked, folder, "YourModel(...)  # your model, built as before pruning"))
    return 0


def _run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)
    if args.weights is not None:
        recipe["weights"] = args.weights
    if args.round_to is not None:
        recipe["round_to"] = args.round_to
    from .search.executors import get_executor
    executor = get_executor(args.executor, args.ray_address)
    run_recipe(recipe, device=args.device, threads=args.threads, seed=args.seed, quiet=args.quiet,
               executor=executor)
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.which == "text" and args.during_training:
        from .examples.text_training import text_demo_during_training
        if args.device != "cpu":
            raise ValueError("demo text --during-training runs on the CPU only (drop --device)")
        text_demo_during_training(quiet=args.quiet, seed=args.seed, threads=args.threads or 1)
        return 0
    if args.which == "text":
        from .examples.text import text_demo
        r = text_demo(quiet=args.quiet, seed=args.seed, threads=args.threads, device=args.device,
                      workdir=args.workdir or "runs/demo-text")
        if args.quiet:  # the outcome still, on one line
            print(f"pruned {r['ratio']:.0%} of every channel group: params {r['params_before']:,} -> "
                  f"{r['params_after']:,}, accuracy {100 * r['accuracy_before']:.2f}% -> "
                  f"{100 * r['accuracy_after']:.2f}%")
        return 0
    mnist1d_demo(args.workdir or "runs/demo", device=args.device, threads=args.threads, seed=args.seed,
                 quiet=args.quiet)
    return 0


def mnist1d_demo(workdir: str = "runs/demo", *, device: str = "cpu", threads: int = DEFAULT_THREADS, seed: int = 0,
                 quiet: bool = False, max_drop: float = 0.01, ratios: tuple[float, ...] = (0.3, 0.5, 0.7, 0.8),
                 methods: tuple[str, ...] = ("channel/l2/local", "channel/lamp/global", "channel/bn_scale/global"),
                 budget: int = 300, targets: tuple[dict, ...] = ({"macs": 0.25},)) -> dict[str, Any]:
    """Train (or reuse) the MNIST-1D CNN, explore, pick the fastest model within ``max_drop``, report.

    Everything (training, fine-tuning, latency) runs on ``threads`` threads: tiny models on a busy
    machine run far faster and steadier on one.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _mnist1d_demo(workdir, device, threads, seed, quiet, max_drop, ratios, methods, budget, targets)
    finally:
        torch.set_num_threads(previous)


def _mnist1d_demo(workdir: str, device: str, threads: int, seed: int, quiet: bool, max_drop: float,
                  ratios: tuple[float, ...], methods: tuple[str, ...], budget: int,
                  targets: tuple[dict, ...]) -> dict[str, Any]:
    from . import explore
    from .examples import data as D
    from .examples import models as M
    from .examples import train as T
    from .train import recover

    t0 = time.perf_counter()
    x_train, y_train, x_test, y_test = D.mnist1d(seed=seed)
    model = T.fit_cached("mnist1d_cnn", M.mnist1d_cnn(seed=seed), x_train, y_train, epochs=40, lr=3e-3,
                         seed=seed, progress=not quiet).to(device)
    x_train, y_train, x_test, y_test = (t.to(device) for t in (x_train, y_train, x_test, y_test))
    teacher = model

    def evaluate(m: torch.nn.Module) -> float:
        return T.accuracy(m, x_test, y_test)

    train_batches = T.batches(x_train, y_train, batch_size=128, n=len(x_train) // 128, seed=seed)

    def finetune(m: torch.nn.Module, steps: int) -> torch.nn.Module:
        return recover(m, train_batches, steps=steps, lr=3e-3, teacher=teacher, quiet=True, seed=seed)

    x_example = x_test[:256]
    front = explore(model, x_example, evaluate, finetune=finetune, budget=budget, methods=methods, ratios=ratios,
                    targets=targets, workdir=workdir, threads=threads, quiet=quiet, seed=seed)
    best = front.pick(max_drop=max_drop, minimize="latency")
    paths = front.report(os.path.join(workdir, "report.html"), max_drop=max_drop, minimize="latency",
                         quality_name="test accuracy", title="secateurs demo: MNIST-1D CNN",
                         factory="secateurs.examples.models.mnist1d_cnn()")
    base = front.baseline
    summary = {
        "dense_accuracy": base.quality, "picked": best.candidate.name, "picked_accuracy": best.quality,
        "macs_reduction": base.cost("macs") / best.candidate.cost("macs"),
        "latency_speedup": base.cost("latency") / best.candidate.cost("latency"),
        "seconds": time.perf_counter() - t0, "report": paths["html"],
    }
    if quiet:
        print(best.summary())
    else:
        print(front.table())
        print(f"\n{best.summary()}")
        print(f"accuracy {best.quality:.4f} (dense {base.quality:.4f}), "
              f"{summary['macs_reduction']:.1f}x fewer MACs, {summary['latency_speedup']:.1f}x lower latency "
              f"(batch {len(x_example)}, {threads} thread{'s' if threads > 1 else ''})")
        print(f"report: {paths['html']}  ({summary['seconds']:.0f} s)")
        print("load it with:\n" + best.load_code("secateurs.examples.models.mnist1d_cnn()")
              .replace("import secateurs as sc", "import secateurs as sc, secateurs.examples.models"))
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}))
    return summary


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
