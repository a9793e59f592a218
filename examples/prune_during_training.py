"""Prune while training: the channel count falls along a schedule, then the model is cut for real.

    python examples/prune_during_training.py            # MNIST-1D CNN, 50% of channels, ~1 minute
    python examples/prune_during_training.py --small    # a narrow model and a short run (for tests)

The schedule is data (Zhu & Gupta's cubic ramp); the Pruner masks channels as training goes, so
the network learns around them; `finalize` returns the physically smaller model, saved and loaded
back like any other.
"""
from __future__ import annotations

import argparse
import os

import torch

import secateurs as sc
from secateurs.examples import data, models, train
from secateurs.train.callbacks import fit


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/during_training")
    ap.add_argument("--sparsity", type=float, default=0.5, help="fraction of channels removed at the end")
    ap.add_argument("--small", action="store_true", help="a narrower model and a shorter run (for tests)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    channels, steps = (8, 300) if args.small else (32, 1500)

    x_train, y_train, x_test, y_test = data.mnist1d()
    model = models.mnist1d_cnn(channels=channels)
    schedule = sc.Polynomial(0.0, args.sparsity, begin_step=steps // 5, end_step=steps * 3 // 5, frequency=steps // 20)
    pruner = sc.Pruner(model, x_train[:8], schedule, granularity="channel", criterion="l2")  # before the optimizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batches = train.batches(x_train, y_train, batch_size=128, n=len(x_train) // 128)
    fit(model, batches, optimizer, steps=steps, pruner=pruner)
    print(f"trained {steps} steps; channels pruned {pruner.sparsity:.0%} (schedule: {pruner.target:.0%})")

    small = pruner.finalize()  # physically smaller; outputs equal the masked model's
    dense_params = sum(p.numel() for p in models.mnist1d_cnn(channels=channels).parameters())
    print(f"params {dense_params:,} -> {sum(p.numel() for p in small.parameters()):,}, "
          f"accuracy {train.accuracy(small, x_test, y_test):.4f}")
    print(sc.measure(small, x_test[:1], threads=1))
    sc.save(small, pruner.plan, os.path.join(args.workdir, "model"))
    loaded = sc.load(models.mnist1d_cnn(channels=channels), os.path.join(args.workdir, "model"))
    print(f"loaded back: accuracy {train.accuracy(loaded, x_test, y_test):.4f}")


if __name__ == "__main__":
    main()
