"""PyTorch Lightning: ``trainer = L.Trainer(callbacks=[PrunerCallback(pruner)])``.

Build the Pruner on the LightningModule's model before ``trainer.fit`` (so the optimizer that
``configure_optimizers`` makes sees the masked parameters). ``pruner.step()`` runs after every
training batch (``every="step"``, a step being an optimizer step once gradients are accumulated) or
at the end of every training epoch (``every="epoch"``); the Pruner's state rides in Lightning's
checkpoints, so ``trainer.fit(..., ckpt_path=...)`` resumes with the same masks and schedule position.
Regularisers go into ``training_step``'s loss.
"""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from ..pruner import Pruner
from ._args import check_callback_args


class PrunerCallback(pl.Callback):
    """Steps a secateurs Pruner from Lightning's training loop and checkpoints its state."""

    def __init__(self, pruner: Pruner, every: str = "step"):
        check_callback_args(pruner, every)
        self.pruner = pruner
        self.every = every
        self._seen = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every == "step" and trainer.global_step > self._seen:  # an optimizer step happened
            self._seen = trainer.global_step
            self.pruner.step()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every == "epoch":
            self.pruner.step()

    def state_dict(self) -> dict[str, Any]:
        return {"pruner": self.pruner.state_dict(), "seen": self._seen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pruner.load_state_dict(state_dict["pruner"])
        self._seen = state_dict["seen"]
