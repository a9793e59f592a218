"""Dense fp32, pruned, int8 and pruned+int8 side by side: accuracy, file size, latency (PyTorch, onnxruntime).

    python benchmarks/deploy.py            # MNIST-1D CNN and the Rotten Tomatoes text classifier, 1 thread

Each model is trained with the examples' cached recipes, pruned structurally with ``sc.prune`` and
fine-tuned, then exported with ``sc.export_onnx`` (checked against PyTorch) and int8-quantised with
``sc.quantize`` (CNN: static, calibrated on 512 training inputs; text: dynamic). Sizes are the bytes
of the ``.onnx`` file; latency is the median of 200 runs at batch 1 on one thread.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch

import secateurs as sc
from secateurs.examples import text as T
from secateurs.examples.data import mnist1d
from secateurs.examples.models import mnist1d_cnn
from secateurs.examples.train import accuracy, fit, fit_cached
from secateurs.measure import measure_latency


def rows_for(name, model, pruned, x_test, y_test, example, calibration, runs):
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, m in (("dense fp32", model), ("pruned fp32", pruned)):
            onnx = sc.export_onnx(m, example, Path(tmp) / "m.onnx", threads=1)
            out.append(dict(task=name, model=label, params=sum(p.numel() for p in m.parameters()),
                            accuracy=accuracy(m, x_test, y_test), file_bytes=onnx.nbytes,
                            torch_ms=measure_latency(m, example, runs=runs, threads=1).median_ms,
                            ort_ms=onnx.latency(example, runs=runs).median_ms))
        for label, m in (("int8", model), ("pruned+int8", pruned)):
            q = sc.quantize(m, example, calibration=calibration, threads=1)
            out.append(dict(task=name, model=label, params=sum(p.numel() for p in m.parameters()),
                            accuracy=accuracy(q, x_test, y_test), file_bytes=q.nbytes, torch_ms=None,
                            ort_ms=q.latency(example, runs=runs).median_ms, how=q.description))
    return out


def mnist1d_rows(ratio, runs):
    x, y, xt, yt = mnist1d()
    model = fit_cached("mnist1d_cnn", mnist1d_cnn(), x, y, epochs=40, lr=3e-3)
    pruned = sc.prune(model, x[:8], ratio=ratio)
    fit(pruned, x, y, epochs=10, lr=3e-3)
    return rows_for(f"MNIST-1D CNN (channels -{ratio:.0%})", model, pruned, xt, yt, x[:1], x[:512], runs)


def text_rows(ratio, runs):
    data = T.rotten_tomatoes()
    model = T.train_text(T.text_classifier(), data, cache="rotten_tomatoes_text_classifier")
    pruned = sc.prune(model, data.x_train[:8], ratio=ratio)
    T.train_text(pruned, data, epochs=T.FINETUNE_EPOCHS, lr=T.FINETUNE_LR)
    return rows_for(f"Rotten Tomatoes text (channels -{ratio:.0%})", model, pruned, data.x_test, data.y_test,
                    data.x_test[:1], None, runs)


def table(rows):
    lines = ["| task | model | params | accuracy | .onnx size | vs dense | PyTorch ms | onnxruntime ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    dense = {}
    for r in rows:
        dense.setdefault(r["task"], r)
        d = dense[r["task"]]
        torch_ms = "-" if r["torch_ms"] is None else f"{r['torch_ms']:.3f}"
        lines.append(f"| {r['task']} | {r['model']} | {r['params']:,} | {100 * r['accuracy']:.2f}% "
                     f"({100 * (r['accuracy'] - d['accuracy']):+.2f}) | {r['file_bytes'] / 1e3:.1f} kB | "
                     f"{d['file_bytes'] / r['file_bytes']:.1f}x | {torch_ms} | {r['ort_ms']:.3f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.6, help="structured pruning ratio (default 0.6)")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = time.perf_counter()
    rows = mnist1d_rows(args.ratio, args.runs) + text_rows(args.ratio, args.runs)
    print(table(rows))
    print(f"\n{time.perf_counter() - start:.0f} s, torch {torch.__version__}, 1 thread, batch 1")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
