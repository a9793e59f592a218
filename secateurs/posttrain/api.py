"""``prune``: one-shot post-training element pruning (magnitude, Wanda, SparseGPT; OWL), block by block."""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from .._inputs import check_bool, check_int, check_module, check_real, is_real
from ..prune import Plan, apply, finalize
from ..prune.elements import pack, parse_nm
from .calibration import (
    Call,
    Stats,
    Tokens,
    advance,
    as_list,
    calibrating,
    collect,
    feed,
    find_blocks,
    first_inputs,
    from_2d,
    supported,
    weight_2d,
)
from .owl import outlier_ratio, owl_sparsities
from .sparsegpt import sparsegpt
from .wanda import magnitude_scores, select, wanda_scores

METHODS = ("magnitude", "wanda", "sparsegpt")


def prune(model: nn.Module, calibration_batches: Iterable[Any], method: str = "wanda",
          sparsity: float | str = 0.5, *, owl: bool = False, owl_m: float = 5.0, owl_lambda: float = 0.08,
          ignore: Iterable[str] = (), blocks: str | None = None, blocksize: int = 128, damp: float = 0.01,
          inplace: bool = False, progress: bool = True) -> tuple[nn.Module, Plan]:
    """Prune the Linear/Conv weights of a trained model in one shot from calibration data: (masked model, Plan).

    ``calibration_batches`` are model inputs (tensor, tuple of args, or dict of kwargs each; a dict's
    ``attention_mask`` keeps padding tokens out of the statistics).
    ``method``: "magnitude" (|W| per layer), "wanda" (|W| x input norm, per output row) or
    "sparsegpt" (mask and weight update from the inverse input Hessian). ``sparsity``: a fraction in
    [0, 1) or "N:M" such as "2:4". The model's repeated blocks (``blocks`` names the ModuleList;
    found automatically otherwise; without one the whole model is one block) are pruned in order,
    each on the outputs of the pruned blocks before it. ``owl`` makes per-block sparsities
    non-uniform (OWL) at the same mean. Layers outside the blocks, in ``ignore`` or not fitting
    N:M are left dense and listed in ``plan.skipped``. The result works with ``sc.finalize``,
    ``sc.sparsity``, ``sc.measure`` and ``sc.save``; ``model`` is untouched unless ``inplace``.
    """
    check_module(model)
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    nm = _check_sparsity(sparsity)
    owl, inplace, progress = check_bool(owl, "owl"), check_bool(inplace, "inplace"), check_bool(progress, "progress")
    sparsity = sparsity if nm is not None else float(sparsity)
    if owl and nm is not None:
        raise ValueError(f"owl=True gives non-uniform sparsities and needs a fractional sparsity, got {sparsity!r}")
    owl_m, owl_lambda = check_real(owl_m, "owl_m", "(0, inf)"), check_real(owl_lambda, "owl_lambda", "(0, 1)")
    damp = check_real(damp, "damp", "(0, inf)")
    blocksize = check_int(blocksize, "blocksize", 1)
    if nm is not None and blocksize % nm[1]:
        raise ValueError(f"blocksize ({blocksize}) must be a multiple of M ({nm[1]}) for N:M sparsity {sparsity!r}")
    ignore = _check_ignore(model, ignore)
    batches = as_list(calibration_batches)

    work = copy.deepcopy(model)
    if any(parametrize.is_parametrized(m) for m in work.modules()):
        finalize(work)
    prefix, units = find_blocks(work, blocks)
    layers, skipped = _targets(work, prefix, units, ignore, nm)
    with calibrating(work), torch.no_grad():
        if prefix == "":
            calls = [_as_call(b) for b in batches]
        else:  # magnitude reads no activations: the batches are only checked, one at a time
            calls = first_inputs(work, units[0], batches, keep=method != "magnitude" or owl)
        tokens = Tokens(batches)
        unit_sparsity = [sparsity if nm is None else None] * len(units)
        if owl:
            unit_sparsity = _owl(units, layers, calls, tokens, sparsity, owl_m, owl_lambda, progress)
        entries: dict[str, dict[str, Any]] = {}
        bar = tqdm(list(enumerate(units)), desc=f"posttrain {method}", disable=not progress, leave=False)
        for i, unit in bar:
            mine = layers[i]
            stats = {}
            if method != "magnitude" and mine:
                stats = collect(mine, lambda u=unit, c=calls, k=i: _run(feed, u, c, k, prefix, tokens),
                                hessian=method == "sparsegpt", tokens=tokens)
            for name, mod in mine.items():
                if method != "magnitude" and stats[name].rows == 0:
                    skipped.append({"tensor": f"{name}.weight", "reason": "received no calibration input"})
                    continue
                keep = _prune_layer(mod, name, method, stats.pop(name, None), unit_sparsity[i], nm, blocksize, damp)
                if not bool(keep.all()):
                    entries[f"{name}.weight"] = {"shape": list(mod.weight.shape), "bits": pack(keep)}
            del stats  # this block's statistics (Hessians) go before the next block's activations are made
            if i + 1 < len(units) and method != "magnitude":  # magnitude needs no activations
                _run(advance, unit, calls, i, prefix)
        del calls
    params = dict(work.named_parameters())
    settings = dict(method=method, sparsity=sparsity, owl=owl, blocks=prefix, ignore=sorted(ignore),
                    granularity="N:M" if nm else "unstructured", posttrain=True, calibration_batches=len(batches))
    if method == "sparsegpt":
        settings.update(blocksize=blocksize, damp=damp)
    if owl:
        settings.update(owl_m=owl_m, owl_lambda=owl_lambda, unit_sparsity=unit_sparsity)
    plan = Plan(type(model).__name__, [], {}, {n: list(params[n].shape) for n in entries}, [], settings,
                skipped, entries)
    if not inplace:
        return apply(work, plan, mode="mask", inplace=True), plan
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        finalize(model)
    with torch.no_grad():
        own = dict(model.named_parameters())
        for n in entries:
            own[n].copy_(params[n])
    return apply(model, plan, mode="mask", inplace=True), plan


def _prune_layer(mod: nn.Module, name: str, method: str, stats: Stats | None, sparsity: float | None,
                 nm: tuple[int, int] | None, blocksize: int, damp: float) -> torch.Tensor:
    """Prune one layer's weight in place (SparseGPT also updates the kept weights); its boolean keep-mask
    in the layer's weight layout."""
    w = weight_2d(mod)  # a view of the weight for Linear and Conv1D: updated without a copy
    own = w.dtype == torch.float32 and w.data_ptr() == mod.weight.data_ptr()
    w = w if own else w.float()
    if method == "sparsegpt":
        w, keep = sparsegpt(w, stats.take_hessian(), sparsity, nm, blocksize=blocksize, damp=damp, layer=name)
    else:
        scores = magnitude_scores(w) if method == "magnitude" else wanda_scores(w, stats.norms())
        keep = select(scores, sparsity, nm, per_row=method == "wanda")
        del scores
        w.mul_(keep)
    if not own:
        mod.weight.data.copy_(from_2d(mod, w.to(mod.weight.dtype)))
    return from_2d(mod, keep)


def _check_sparsity(sparsity: float | str) -> tuple[int, int] | None:
    if isinstance(sparsity, str):
        nm = parse_nm(sparsity)
        if nm is None:
            raise ValueError(f"sparsity must be a number in [0, 1) or 'N:M' such as '2:4', got {sparsity!r}")
        return nm
    if not is_real(sparsity, "[0, 1)"):
        raise ValueError(f"sparsity must be a number in [0, 1) or 'N:M' such as '2:4', got {sparsity!r}")
    return None


def _check_ignore(model: nn.Module, ignore: Iterable[str]) -> set[str]:
    if isinstance(ignore, str):
        raise TypeError(f"ignore must be a list of module names, got the string {ignore!r}")
    names = {n for n, _ in model.named_modules()}
    out = set(ignore)
    for n in out:
        if n not in names:
            raise ValueError(f"ignore names module {n!r}, which the model does not have")
    return out


def _inside(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _targets(model: nn.Module, prefix: str, units: list[nn.Module], ignore: set[str],
             nm: tuple[int, int] | None) -> tuple[list[dict[str, nn.Module]], list[dict[str, str]]]:
    """Per unit, the layers to prune by full name; and what is left out with the reason."""
    skipped: list[dict[str, str]] = []
    per_unit: list[dict[str, nn.Module]] = []
    inside: set[int] = set()
    uses: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        uses[id(p)] = uses.get(id(p), 0) + 1
    for i, unit in enumerate(units):
        mine: dict[str, nn.Module] = {}
        for sub, mod in unit.named_modules():
            full = ".".join(p for p in ((prefix, str(i)) if prefix else ()) + (sub,) if p)
            if getattr(mod, "weight", None) is None or not isinstance(mod.weight, torch.Tensor):
                continue
            why = supported(mod)
            inside.add(id(mod))
            if why is not None:
                if isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)):
                    skipped.append({"tensor": f"{full}.weight", "reason": why})
                continue
            if any(_inside(full, ig) for ig in ignore):
                skipped.append({"tensor": f"{full}.weight", "reason": "in ignore"})
                continue
            if uses.get(id(mod.weight), 1) > 1:
                skipped.append({"tensor": f"{full}.weight", "reason": "weight tied to another module's"})
                continue
            n_in = mod.weight.shape[1] if mod.weight.dim() > 2 else weight_2d(mod).shape[1]  # N:M runs along this
            if nm is not None and n_in % nm[1]:
                skipped.append({"tensor": f"{full}.weight",
                                "reason": f"input dimension {n_in} is not a multiple of {nm[1]}"})
                continue
            mine[full] = mod
        per_unit.append(mine)
    for name, mod in model.named_modules():
        if id(mod) not in inside and supported(mod) is None and getattr(mod, "weight", None) is not None:
            skipped.append({"tensor": f"{name}.weight", "reason": f"outside the repeated blocks ({prefix})"})
    return per_unit, skipped


def _as_call(batch: Any) -> Call:
    if isinstance(batch, torch.Tensor):
        return Call((batch,), {})
    if isinstance(batch, dict):
        return Call((), dict(batch))
    if isinstance(batch, (tuple, list)):
        return Call(tuple(batch), {})
    raise TypeError(f"each calibration batch must be a tensor, a tuple of inputs or a dict, got {type(batch).__name__}")


def _run(how: Callable[..., Any], unit: nn.Module, calls: list[Call], i: int, prefix: str,
         tokens: Tokens | None = None) -> None:
    """``how(unit, calls, tokens)`` (``feed`` or ``advance``), a failing forward re-raised naming the block."""
    try:
        how(unit, calls, tokens)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised with the block named
        where = f"block {prefix}.{i}" if prefix else "the model"
        raise ValueError(f"forward of {where} failed on calibration data: "
                         f"{type(exc).__name__}: {str(exc)[:300]}") from exc


def _owl(units: list[nn.Module], layers: list[dict[str, nn.Module]], calls: list[Call], tokens: Tokens,
         target: float, m: float, lam: float, progress: bool) -> list[float]:
    """One dense pass to measure each unit's outlier ratio; OWL's sparsity per unit."""
    if len(units) == 1:
        raise ValueError("owl=True needs a model with repeated blocks (OWL sets one sparsity per block); "
                         "pass blocks=<name of the ModuleList>")
    ratios = []
    calls = list(calls)  # advanced in place below; the caller's list keeps block 0's inputs
    for i, unit in enumerate(tqdm(units, desc="posttrain owl", disable=not progress, leave=False)):
        stats = collect(layers[i], lambda u=unit, c=calls: feed(u, c, tokens), hessian=False, tokens=tokens)
        scores = [wanda_scores(weight_2d(mod).float(), stats[n].norms()) for n, mod in layers[i].items()]
        ratios.append(outlier_ratio(scores, m) if scores else 0.0)
        del stats, scores
        if i + 1 < len(units):
            advance(unit, calls)
    return owl_sparsities(ratios, target, lam)
