"""The Rotten Tomatoes classifier pruned DURING training, beside today's prune-then-recover.

``secateurs demo text --during-training`` runs ``text_demo_during_training``: the same model, data
and total number of epochs (``EPOCHS + FINETUNE_EPOCHS``) for both ways:

* prune then recover: train ``EPOCHS`` epochs, ``sc.prune`` 40% of every channel group (l2), fine-tune
  ``FINETUNE_EPOCHS`` epochs (the plain ``text_demo``);
* during training: a channel ``sc.Pruner`` with ``Polynomial(0, 0.4)`` from the end of epoch 1 to
  the end of epoch ``EPOCHS`` (one pruning event per epoch), the rest of the run with the final
  masks, then ``finalize()`` to the physically smaller model (the same shape as the other).
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch

from . import text as T
from .train import accuracy


def text_demo_during_training(quiet: bool = False, seed: int = 0, ratio: float = T.PRUNE_RATIO,
                              threads: int | None = 1) -> dict[str, Any]:
    """Train and prune gradually in one run; returns accuracies, parameter counts and seconds for
    both methods (``during_*`` and ``after_*`` keys) and prints a table unless ``quiet``."""
    import secateurs as sc
    from secateurs.train.callbacks import fit

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        reference = T.text_demo(quiet=True, seed=seed, ratio=ratio, cache=False, threads=None)
        after_seconds = time.perf_counter() - start

        start = time.perf_counter()
        data = T.rotten_tomatoes(seed)
        model = T.text_classifier(seed=seed)
        per_epoch = math.ceil(len(data.x_train) / T.BATCH_SIZE)
        epochs = T.EPOCHS + T.FINETUNE_EPOCHS
        steps = epochs * per_epoch
        pruner = sc.Pruner(model, data.x_train[:8], sc.Polynomial(0.0, ratio, begin_step=per_epoch,
                                                                  end_step=T.EPOCHS * per_epoch, frequency=per_epoch),
                           granularity="channel", seed=seed)
        opt = torch.optim.AdamW(model.parameters(), lr=T.LR, weight_decay=T.WEIGHT_DECAY)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))
        g = torch.Generator().manual_seed(seed)
        batches = [(data.x_train[idx], data.y_train[idx]) for _ in range(epochs)
                   for idx in torch.randperm(len(data.x_train), generator=g).split(T.BATCH_SIZE)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fit(model, batches, opt, steps=steps, pruner=pruner, scheduler=sched)
        small = pruner.finalize().eval()
        during_acc = accuracy(small, data.x_test, data.y_test)
        during_params = sum(p.numel() for p in small.parameters())
        during_seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    result = {"dense_accuracy": reference["accuracy_before"], "dense_params": reference["params_before"],
              "after_accuracy": reference["accuracy_after"], "after_params": reference["params_after"],
              "after_seconds": after_seconds, "during_accuracy": during_acc, "during_params": during_params,
              "during_seconds": during_seconds, "epochs": epochs, "ratio": ratio}
    if not quiet:
        print(f"Rotten Tomatoes, {ratio:.0%} of every channel group, {epochs} epochs in all for each method\n"
              f"  dense ({T.EPOCHS} epochs)          {result['dense_accuracy']:.2%}  "
              f"{result['dense_params']:,} params\n"
              f"  prune, then recover         {result['after_accuracy']:.2%}  {result['after_params']:,} params  "
              f"{after_seconds:.1f} s\n"
              f"  pruned during training      {during_acc:.2%}  {during_params:,} params  {during_seconds:.1f} s")
    return result
