"""Structured post-training pruning: attention heads and FFN neurons chosen from calibration
activations, removed physically by secateurs' surgery, with an optional least-squares correction
of the layer that reads them (o_proj / down_proj / output.dense / c_proj).

Scores come from the ``"wanda"`` criterion registered here: every Linear weight scores
|W_ij| * ||X_j||_2 over the calibration tokens, and a head or neuron sums the scores of all the
weights removed with it (its rows in the producing layers, its columns in the consumer), the
structured form of Wanda / FLAP's input-norm-times-column-norm metric. The correction then solves,
per consumer layer, min ||X_K W_K'^T - X W^T||^2 + ridge (with the bias as a column of ones where
the layer has one): the kept inputs take over what the removed ones contributed on the calibration
data.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .._inputs import call_model, check_module, check_real
from ..criteria import Context, Criterion, register
from ..graph import Graph, trace
from ..graph import layout as L
from ..prune import Plan, apply, plan
from .calibration import Tokens, as_list, calibrating, check_finite, collect, columns, from_2d, supported, weight_2d

KINDS = ("head", "neuron")


@register("wanda")
class Wanda(Criterion):
    """|W| x L2 norm of the input feature over calibration batches: model inputs, or whatever
    ``loss_fn(model, batch)`` takes when a ``loss_fn`` is given (only its forward pass is used)."""

    needs_inputs = True

    def elements(self, model: nn.Module, names: list[str], ctx: Context) -> dict[str, torch.Tensor]:
        if ctx.batches is None:
            raise ValueError("criterion 'wanda' needs calibration data: pass batches=<list of model inputs>")
        batches = as_list(ctx.batches)
        owners = {f"{n}.weight": m for n, m in model.named_modules()
                  if supported(m) is None and f"{n}.weight" in names}

        tokens = Tokens(batches)

        def run() -> None:
            for i, b in enumerate(batches):
                tokens.current = tokens.masks[i]
                try:
                    if ctx.loss_fn is not None:  # batches in the loss function's form (e.g. (x, y))
                        ctx.loss_fn(model, b)
                    else:
                        call_model(model, b)
                except Exception as exc:  # noqa: BLE001 - re-raised with the batch named
                    raise ValueError(f"criterion 'wanda': forward failed on calibration batch {i}: "
                                     f"{type(exc).__name__}: {str(exc)[:300]}") from exc

        with calibrating(model), torch.no_grad():
            stats = collect(owners, run, hessian=False, tokens=tokens)
        params = dict(model.named_parameters())
        out = {}
        for name in names:
            p = params[name].detach()
            if name in owners:
                mod = owners[name]
                out[name] = from_2d(mod, weight_2d(mod).abs().float() * stats[name].norms().view(1, -1))
            else:
                out[name] = torch.zeros_like(p, dtype=torch.float32)
        return out


def prune_structured(model: nn.Module, calibration_batches: Iterable[Any], ratio: float = 0.3, *,
                     kinds: Iterable[str] = KINDS, correct: bool = True, ridge: float = 1e-3,
                     ignore: Iterable[str] = (), progress: bool = True) -> tuple[nn.Module, Plan]:
    """Remove ``ratio`` of the attention heads and/or FFN neurons (``kinds``) of every block, ranked by
    calibration activations; (new smaller model, Plan). ``model`` is not modified.

    With ``correct``, each layer reading the pruned heads/neurons is refitted by ridge-regularised
    least squares (``ridge`` x mean diagonal) to reproduce the dense model's outputs on the
    calibration data from the inputs it keeps. The plan saves and loads with ``sc.save``/``sc.load``.
    """
    check_module(model)
    kinds = list(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {list(KINDS)}, got {kinds!r}")
    ratio = check_real(ratio, "ratio", "[0, 1)")
    ridge = check_real(ridge, "ridge", "(0, inf)")
    batches = as_list(calibration_batches)
    example = batches[0]
    dense = copy.deepcopy(model)
    with calibrating(dense), torch.no_grad():
        try:
            graph = trace(dense, example)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise ValueError(f"tracing the model on the first calibration batch failed: {type(exc).__name__}: "
                             f"{str(exc)[:300]}") from exc
    plans = []
    for kind in tqdm(kinds, desc="posttrain structured", disable=not progress, leave=False):
        chosen = _groups(dense, graph, kind)
        if not chosen:
            continue
        with calibrating(dense):
            plans.append(plan(dense, example, 0.0, granularity="head" if kind == "head" else "channel",
                              criterion="wanda", batches=batches, ignore=ignore, graph=graph,
                              group_ratios={g: float(ratio) for g in chosen}))
    if not plans:
        raise ValueError(f"found no {' or '.join(kinds)} groups to prune in {type(model).__name__} "
                         f"(traced groups: {sorted({g.kind for g in graph.groups})})")
    merged = _merge(plans, dict(ratio=ratio, kinds=kinds, criterion="wanda", posttrain=True, correct=correct,
                                ridge=ridge, calibration_batches=len(batches)))
    consumers = _consumers(dense, merged) if correct else {}
    stats = _augmented_hessians(dense, consumers, batches) if consumers else {}
    small = apply(dense, merged, inplace=True)
    with torch.no_grad():
        for name, (kept, _) in consumers.items():
            _refit(small.get_submodule(name), dense_w=stats[name][1], h=stats[name][0], kept=kept, ridge=ridge,
                   layer=name)
    return small, merged


def _groups(model: nn.Module, graph: Graph, kind: str) -> list[int]:
    """Head groups, or channel groups that are a block's hidden neurons: not the residual stream (held by
    norms and embeddings too) and not the width inside every attention head (a channel group of the same
    tensors as a head group, which the tracer exposes since q.k dimensions became prunable)."""
    if kind == "head":
        return [g.id for g in graph.groups if g.kind == "head"]
    mods = dict(model.named_modules())
    in_heads = {t for g in graph.groups if g.kind == "head" for t, _, _ in g.tensors}
    out = []
    for g in graph.groups:
        if g.kind != "channel" or any(t in in_heads for t, _, _ in g.tensors):
            continue
        owners = {t.rpartition(".")[0] for t, _, _ in g.tensors}
        if all(supported(mods[o]) is None for o in owners if o in mods):
            out.append(g.id)
    return out


def _merge(plans: list[Plan], settings: dict) -> Plan:
    """One plan from several made on the same trace (each removing from different groups)."""
    first = plans[0]
    groups = [dict(g) for g in first.groups]
    layouts: dict[str, dict] = {}
    shapes: dict[str, list[int]] = {}
    syncs: dict[str, dict] = {}
    skipped = []
    for p in plans:
        for g, mine in zip(groups, p.groups):
            if mine["remove"]:
                g["remove"] = mine["remove"]
        for name, dims in p.layouts.items():
            layouts.setdefault(name, {}).update(dims)
        shapes.update(p.shapes)
        syncs.update({json.dumps(s, sort_keys=True): s for s in p.syncs})
        skipped += p.skipped
    return Plan(first.model_class, groups, layouts, shapes, list(syncs.values()), settings, skipped)


def _consumers(model: nn.Module, p: Plan) -> dict[str, tuple[torch.Tensor, nn.Module]]:
    """Layers whose input dimension the plan shrinks: name -> (kept input indices, module)."""
    keep = {g["id"]: torch.tensor([i for i in range(g["size"]) if i not in set(g["remove"])], dtype=torch.long)
            for g in p.groups if g["remove"]}
    out = {}
    for name, mod in model.named_modules():
        if supported(mod) is not None or isinstance(mod, nn.modules.conv._ConvNd):
            continue
        dims = p.layouts.get(f"{name}.weight", {})
        in_dim = "0" if type(mod).__name__ == "Conv1D" else "1"
        tree = dims.get(in_dim)
        if tree is not None and L.groups_in(tree) & keep.keys():
            out[name] = (L.kept(tree, keep), mod)
    return out


def _augmented_hessians(model: nn.Module, consumers: dict[str, tuple[torch.Tensor, nn.Module]],
                        batches: list[Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per consumer: ([X, 1]^T [X, 1] over the calibration tokens of the dense model, [W, b] as (out, in + 1))."""
    hs = {n: torch.zeros(weight_2d(m).shape[1] + 1, weight_2d(m).shape[1] + 1, dtype=torch.float64,
                         device=weight_2d(m).device) for n, (_, m) in consumers.items()}
    handles = []
    tokens = Tokens(batches)
    for name, (_, mod) in consumers.items():
        def hook(m, args, _name=name):
            x = tokens.select(m, args[0])
            check_finite(x, f"the input of layer {_name!r}")
            cols = columns(m, x).double()
            aug = torch.cat([cols, cols.new_ones(cols.shape[0], 1)], 1)
            hs[_name] += aug.t() @ aug
        handles.append(mod.register_forward_pre_hook(hook))
    try:
        with calibrating(model), torch.no_grad():
            for i, b in enumerate(batches):
                tokens.current = tokens.masks[i]
                call_model(model, b)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, (_, mod) in consumers.items():
        w = weight_2d(mod).double()
        b = mod.bias.detach().double() if getattr(mod, "bias", None) is not None else w.new_zeros(w.shape[0])
        out[name] = (hs[name], torch.cat([w, b.view(-1, 1)], 1))
    return out


def _refit(mod: nn.Module, dense_w: torch.Tensor, h: torch.Tensor, kept: torch.Tensor, ridge: float,
           layer: str) -> None:
    """Least-squares weights on the kept inputs (and the bias, if any) reproducing the dense outputs."""
    has_bias = getattr(mod, "bias", None) is not None
    n_in = dense_w.shape[1] - 1
    cols = torch.cat([kept, torch.tensor([n_in])]) if has_bias else kept
    target = dense_w if has_bias else dense_w[:, :n_in]
    h_full = h if has_bias else h[:n_in, :n_in]
    h_kk = h_full[cols][:, cols]
    lam = ridge * float(torch.diag(h_kk).mean().clamp_min(1e-12))
    rhs = target @ h_full[:, cols]  # (out, |K|): W H_{:,K}
    sol = torch.linalg.solve(h_kk + lam * torch.eye(len(cols), dtype=torch.float64, device=h.device), rhs.t()).t()
    if not bool(torch.isfinite(sol).all()):
        raise ValueError(f"least-squares correction of layer {layer!r} is not finite; try a larger ridge")
    new_w = sol[:, :len(kept)]
    mod.weight.data.copy_(from_2d(mod, new_w.to(mod.weight.dtype)))
    if has_bias:
        mod.bias.data.copy_(sol[:, -1].to(mod.bias.dtype))
