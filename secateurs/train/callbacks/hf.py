"""Hugging Face ``Trainer``: ``Trainer(..., callbacks=[PrunerCallback(pruner)])``.

Build the Pruner on the model before the Trainer makes its optimizer. ``pruner.step()`` runs at
every ``on_step_end`` (one optimizer step, after gradient accumulation) or every epoch end
(``every="epoch"``). Data criteria and movement scores take their gradients from backward hooks,
so the Trainer zeroing gradients before ``on_step_end`` does not matter. Save
``pruner.state_dict()`` beside your checkpoints (``torch.save``) to resume.
"""
from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from ..pruner import Pruner
from ._args import check_callback_args


class PrunerCallback(TrainerCallback):
    """Steps a secateurs Pruner from the Hugging Face Trainer's loop."""

    def __init__(self, pruner: Pruner, every: str = "step"):
        check_callback_args(pruner, every)
        self.pruner = pruner
        self.every = every

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.every == "step":
            self.pruner.step()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.every == "epoch":
            self.pruner.step()
