"""Recover a pruned model's accuracy: a short fine-tune, optionally distilled from the dense model.

    small = sc.prune(model, x, ratio=0.5)
    recover(small, train_batches, steps=500)                   # cross-entropy on the labels
    recover(small, train_batches, steps=500, teacher=model)    # + knowledge distillation

The loop is written out in full so it can be read in one sitting: AdamW, a linear warm-up then a
cosine decay to zero, one optimizer step per batch, ``batches`` cycled until ``steps`` steps are
done. Masks are parametrizations (``sc.apply(..., mode="mask")``, unstructured and N:M plans) or
``torch.nn.utils.prune`` hooks; both recompute ``weight = original * mask`` in every forward, so
a pruned weight stays exactly zero however the optimizer moves the underlying tensor.

Distillation follows Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network":

    loss = (1 - alpha) * task + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

The ``T^2`` keeps the soft term's gradients on the scale of the hard term's as ``T`` changes.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._inputs import call_model, check_int, check_module, check_real

LossFn = Callable[[Any, Any], torch.Tensor]


def recover(model: nn.Module, batches: Iterable[Any], loss_fn: LossFn | None = None, *, steps: int,
            lr: float = 1e-3, weight_decay: float = 0.01, teacher: nn.Module | None = None,
            temperature: float = 2.0, alpha: float = 0.5, quiet: bool = True, seed: int = 0) -> nn.Module:
    """Fine-tune ``model`` in place for ``steps`` optimizer steps and return it.

    ``batches`` yields ``(inputs, targets)``; ``inputs`` is a tensor, a tuple of positional inputs or
    a dict of keyword inputs, as for ``sc.plan``. A list or a ``DataLoader`` is iterated again from
    the start whenever it runs out; a one-shot iterator (a generator) must yield at least ``steps``
    batches. Tensors are moved to the device of the model's parameters.

    The task loss is ``loss_fn(output, targets)`` when given, else cross-entropy on the logits (the
    output itself, its ``.logits``, or the first tensor of a tuple; for ``(..., C)`` logits with
    ``(...)`` targets every position counts, and targets of -100 are ignored). A causal language
    model whose labels need shifting needs its own ``loss_fn``.

    With ``teacher``, the loss is ``(1 - alpha) * task + alpha * T**2 * KL`` (Hinton et al. 2015)
    between the teacher's and the student's softened class distributions (``T = temperature``,
    softmax over the last dimension). The teacher runs in eval mode under ``torch.no_grad`` and is
    left as it was (weights and train/eval flags). With ``alpha=1`` the task loss is not computed,
    so ``targets`` may be ``None`` (distillation on unlabelled data). ``alpha`` and ``temperature``
    are unused without a teacher.

    Optimizer: AdamW (``lr``, ``weight_decay`` on tensors of two or more dimensions only: weights,
    not biases or norm scales), a linear warm-up over ``min(100, steps // 10)`` steps, then a cosine
    decay to zero. Only parameters with ``requires_grad`` are trained. The model is in train mode
    while it trains; each module's train/eval flag is restored afterwards.

    ``seed`` seeds torch's RNG for the run (dropout, a shuffling ``DataLoader`` without its own
    generator), so the same seed, model, data and thread count give the same weights; the global
    RNG state is restored afterwards. ``quiet=False`` shows a tqdm progress bar with the loss.
    """
    check_module(model)
    steps = check_int(steps, "steps", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    lr = check_real(lr, "lr", "(0, inf)")
    weight_decay = check_real(weight_decay, "weight_decay", "[0, inf)")
    temperature = check_real(temperature, "temperature", "(0, inf)")
    alpha = check_real(alpha, "alpha", "[0, 1]")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(output, targets) or None, got {type(loss_fn).__name__}")
    if teacher is not None:
        check_module(teacher, "teacher")
        if teacher is model:
            raise ValueError("teacher must be a different module from model (e.g. the dense model before pruning)")
    if isinstance(batches, (torch.Tensor, str, bytes)) or not isinstance(batches, Iterable):
        raise TypeError("batches must be an iterable of (inputs, targets) pairs (a list, a DataLoader, a generator), "
                        f"got {type(batches).__name__}")

    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError("model has no parameters with requires_grad=True: nothing to train")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)
    warmup = min(100, steps // 10)
    device = next(model.parameters()).device
    distill = teacher is not None
    use_task = not distill or alpha < 1

    modes = {m: m.training for m in model.modules()}
    teacher_modes = {m: m.training for m in teacher.modules()} if distill else {}
    cpu_rng = torch.random.get_rng_state()
    on_cuda = torch.cuda.is_available() and (torch.cuda.is_initialized() or device.type == "cuda")
    cuda_rng = torch.cuda.get_rng_state_all() if on_cuda else None
    bar = None if quiet else _progress(steps)
    try:
        torch.manual_seed(seed)
        model.train()
        if distill:
            teacher.eval()
        stream = _cycle(batches, steps)
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr * _lr_factor(step, steps, warmup)
            inputs, targets = _split(next(stream), step)
            inputs, targets = _to(inputs, device), _to(targets, device)

            output = call_model(model, inputs)
            loss = _task_loss(output, targets, loss_fn) if use_task else 0.0
            if distill:
                with torch.no_grad():
                    soft = _logits(call_model(teacher, _to(inputs, _device_of(teacher, device))))
                kd = _kd_loss(_logits(output), soft.to(device), temperature)
                loss = (1 - alpha) * loss + alpha * kd if use_task else kd

            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if bar is not None:
                bar.update(1)
                if step % 10 == 0 or step == steps - 1:
                    bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
    finally:
        if bar is not None:
            bar.close()
        for m, flag in (*modes.items(), *teacher_modes.items()):
            m.training = flag
        torch.random.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
    return model


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    """Multiplier of ``lr`` at 0-based ``step``: linear warm-up to 1, then cosine down towards 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def _task_loss(output: Any, targets: Any, loss_fn: LossFn | None) -> torch.Tensor:
    if loss_fn is not None:
        loss = loss_fn(output, targets)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError(f"loss_fn must return a scalar tensor, got {_describe(loss)}")
        return loss.reshape(())
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"the default cross-entropy loss needs class-index targets as a tensor, got "
                        f"{_describe(targets)}; pass loss_fn(output, targets) for other targets")
    logits = _logits(output)
    if logits.dim() > 2 and targets.shape == logits.shape[:-1]:  # (..., C) logits, (...) targets: every position
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return F.cross_entropy(logits, targets)


def _kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over all predictions."""
    if student.shape != teacher.shape:
        raise ValueError(f"teacher and student logits differ in shape: teacher {tuple(teacher.shape)}, "
                         f"student {tuple(student.shape)}; distillation needs the same classes at the same positions")
    c = student.shape[-1]
    log_p_student = F.log_softmax(student.reshape(-1, c).float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher.reshape(-1, c).float() / temperature, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature ** 2


def _logits(output: Any) -> torch.Tensor:
    """The logits in a model's output: the tensor itself, ``.logits`` / ``["logits"]``, or the first tensor."""
    if isinstance(output, torch.Tensor):
        return output
    logits = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    raise ValueError(f"cannot find logits in the model's output ({_describe(output)}): expected a tensor, an object "
                     "with .logits, or a tuple whose first tensor is the logits; pass loss_fn for other outputs")


def _cycle(batches: Iterable[Any], steps: int) -> Iterator[Any]:
    """Yield from ``batches`` forever, starting over when a re-iterable runs out."""
    done = 0
    while True:
        it = iter(batches)
        one_shot = it is batches
        before = done
        for batch in it:
            done += 1
            yield batch
        if one_shot:
            raise ValueError(f"batches ran out after {done} batches but steps={steps}: a one-shot iterator (e.g. a "
                             "generator) must yield at least `steps` batches; pass a list or a DataLoader to cycle")
        if done == before:
            raise ValueError("batches is empty: it yielded no (inputs, targets) pair")


def _split(batch: Any, step: int) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise ValueError(f"each batch must be an (inputs, targets) pair; batch {step} is {_describe(batch)}")


def _to(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor (nested in tuples, lists and dicts) on ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):  # keyword inputs (a dict, a BatchEncoding): a plain dict is all call_model needs
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_to(v, device) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(v, device) for v in obj)
    return obj


def _device_of(module: nn.Module, default: torch.device) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else default


def _progress(steps: int):
    from tqdm.auto import tqdm
    return tqdm(total=steps, desc="recover", unit="step")


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of length {len(obj)}"
    return f"a {type(obj).__name__}"
