"""Prune a CNN you trained, end to end: weights in, a smaller saved model out, loaded back and used.

    python examples/prune_my_cnn.py                      # trains the MNIST-1D CNN first (about a minute)
    python examples/prune_my_cnn.py --weights cnn.safetensors   # or start from your own trained weights

Swap in your model, your `evaluate` and your fine-tuning loop: the secateurs calls stay the same.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file

import secateurs as sc
from secateurs.examples import data, models, train
from secateurs.train import recover


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", help="trained weights (.safetensors) of models.mnist1d_cnn(channels=...)")
    ap.add_argument("--workdir", default="runs/my_cnn")
    ap.add_argument("--max-drop", type=float, default=0.01, help="accuracy the pick may lose (default 0.01)")
    ap.add_argument("--small", action="store_true", help="a narrower model and shorter runs (for tests)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    channels, epochs, budget = (8, 8, 30) if args.small else (32, 40, 300)

    # 1. Your trained model and data.
    x_train, y_train, x_test, y_test = data.mnist1d()
    model = models.mnist1d_cnn(channels=channels)
    if args.weights:
        model.load_state_dict(load_file(args.weights))
    else:
        train.fit(model, x_train, y_train, epochs=epochs, lr=3e-3, progress=True)
        os.makedirs(args.workdir, exist_ok=True)
        save_file(model.state_dict(), os.path.join(args.workdir, "trained.safetensors"))
    model.eval()

    # 2. How good a model is (higher is better), and how to fine-tune one.
    def evaluate(m: torch.nn.Module) -> float:
        return train.accuracy(m, x_test, y_test)

    batches = train.batches(x_train, y_train, batch_size=128, n=len(x_train) // 128)

    def finetune(m: torch.nn.Module, steps: int) -> torch.nn.Module:
        return recover(m, batches, steps=steps, lr=3e-3, teacher=model)

    # 3. Explore: every candidate pruned, fine-tuned, scored and timed; then pick.
    front = sc.explore(model, x_test[:256], evaluate, finetune=finetune, budget=budget,
                       methods=["channel/l2/local", "channel/lamp/global"], ratios=[0.3, 0.5, 0.7],
                       workdir=args.workdir)
    print(front.table())
    best = front.pick(max_drop=args.max_drop)
    print(best.summary())
    if best.plan is None:
        return  # nothing met max_drop: keep the dense model

    # 4. Recover a little longer, save (weights + plan), load in a fresh process, use it.
    small = recover(best.model, batches, steps=budget, lr=1e-3, teacher=model)
    print(f"after recovery: accuracy {evaluate(small):.4f} (dense {evaluate(model):.4f})")
    out = os.path.join(args.workdir, "picked")
    sc.save(small, best.plan, out)
    fresh = (f"import secateurs as sc, torch\nfrom secateurs.examples.models import mnist1d_cnn\n"
             f"model = sc.load(mnist1d_cnn(channels={channels}), {out!r})\n"
             f"print('loaded:', sum(p.numel() for p in model.parameters()), 'parameters')")
    subprocess.run([sys.executable, "-c", fresh], check=True)
    loaded = sc.load(models.mnist1d_cnn(channels=channels), out).eval()
    with torch.no_grad():
        print("predictions:", loaded(x_test[:8]).argmax(-1).tolist(), "labels:", y_test[:8].tolist())
    print(sc.measure(loaded, x_test[:256]))


if __name__ == "__main__":
    main()
