"""Movement pruning (Sanh et al. 2020, "Movement Pruning: Adaptive Sparsity by Fine-Tuning",
NeurIPS): keep the weights that fine-tuning moves away from zero."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ._data import grads_of, loss_of, require_data, scored_names
from .registry import Context, Criterion, register


@register("movement")
class Movement(Criterion):
    """Movement scores (Sanh et al. 2020): ``S = -sum_t w_t * g_t``.

    A deep copy of the model takes one plain SGD step (``w <- w - lr * g``, no momentum, no weight
    decay; ``lr`` is the class attribute, 1e-2 by default) per batch of ``ctx.batches``, in the
    model's own train/eval mode; before each step the scored weights accumulate ``-w_t * g_t``
    (``w_t`` the weight and ``g_t`` its gradient at step t). Every parameter of the copy that
    requires a gradient (and every scored one) is updated. A weight moving away from zero (``w``
    and ``-g`` of the same sign) gains score; one moving towards zero loses it, so scores can be
    negative. The user's model is never touched. A group element gets the sum of the scores of the
    weights removed with it (over all coupled layers).
    """

    needs_data = True
    lr = 1e-2

    def elements(self, model: nn.Module, names: list[str], ctx: Context) -> dict[str, torch.Tensor]:
        require_data(self, ctx)
        names = scored_names(model, names)
        work = copy.deepcopy(model)
        named = dict(work.named_parameters())
        for n in names:
            named[n].requires_grad_(True)
        trained = [p for p in work.parameters() if p.requires_grad]
        index = {id(p): i for i, p in enumerate(trained)}
        scores = {n: torch.zeros(named[n].shape, dtype=torch.float64, device=named[n].device) for n in names}
        count = 0
        for batch in ctx.batches:
            with torch.enable_grad():
                loss = loss_of(self, work, batch, ctx)
                grads = grads_of(self, loss, trained)
            with torch.no_grad():
                for n in names:
                    scores[n] -= named[n].double() * grads[index[id(named[n])]].double()
                for p, g in zip(trained, grads):
                    p.sub_(g, alpha=self.lr)
            count += 1
        if count == 0:
            raise ValueError(f"criterion {self.name!r} needs data, but batches yielded no batch")
        return {n: s.cpu() for n, s in scores.items()}
