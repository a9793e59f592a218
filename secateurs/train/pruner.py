"""Prune while training: a schedule raises the sparsity step by step, masks keep pruned weights at zero.

    pruner = sc.Pruner(model, x, schedule=Polynomial(0.0, 0.9, begin_step=100, end_step=1000, frequency=50))
    opt = torch.optim.AdamW(model.parameters())
    for batch in loader:
        loss = loss_fn(model(batch.x), batch.y)
        opt.zero_grad(); loss.backward(); opt.step()
        pruner.step()                       # once per optimizer step (or once per epoch: your unit)
    small = pruner.finalize()               # physically smaller (channel/head) or baked sparse weights

The Pruner works on ``model`` itself (training it is the point): masks are installed on it as
parametrizations (``weight = original * mask``), so a pruned weight reads as exactly zero and gets
a zero gradient whatever the optimizer does (momentum, Adam moments, weight decay). Installing a
mask keeps the parameter object, so an optimizer built before or after the Pruner works; build it
after the Pruner when you will save and resume (the masks move each weight under
``parametrizations``, which changes the order of ``model.parameters()``, and an optimizer's
``state_dict`` is matched by that order).

At each pruning event of the schedule the mask is chosen by the planner (``sc.plan``) on a copy of
the model with its masks baked in, with the criterion's scores of already pruned elements forced
to the bottom (masks only grow; ``Constant`` re-selects freely; ``regrow=True`` ranks the stored dense
weights, pruned ones included). Data criteria (taylor, snip,
hessian and any registered one that needs data) are fed from training itself: backward hooks keep
the gradients of the last ``data_steps`` optimizer steps, and the criterion sees them as its
batches (through a surrogate loss whose gradient is the recorded one). Movement pruning (Sanh et
al. 2020) accumulates ``S -= w_t * g_t`` at every step from the same hooks, over the whole run.
Activation criteria (``wanda``: |W| x input norms) see the model inputs of the last ``data_steps``
training forwards, kept by a forward pre-hook, as their calibration batches.

Under ``torchrun`` with DistributedDataParallel the Pruner runs unchanged on every rank: build it on
the model, then wrap the model in DDP (the masks move each weight under ``parametrizations``, which a
DDP built earlier does not follow; after ``compact`` wrap the smaller model again). The hooks see this
rank's gradient before DDP averages it, so inside a process group the Pruner averages its records
over the ranks at each ``step()`` (one all-reduce; every rank must call ``step()``): with equal
shares of each global batch every rank then picks the same masks as one process on the whole batch.
"""
from __future__ import annotations

import copy
import math
import warnings
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import parametrize

from .._inputs import ExampleInputs, check_bool, check_inputs, check_int, check_module
from ..criteria import Context, Criterion, aggregate, get_criterion
from ..graph import Graph, trace
from ..prune import GRANULARITIES, SCOPES, Plan, apply, finalize, plan
from ..prune.elements import default_targets, pack, parse_nm, unpack
from ..prune.planner import RoundingWarning
from ..prune.surgery import Mask
from .distributed import world_size
from .optim_state import plain_parameters, shrink
from .schedules import LotteryTicket, Schedule

STATE_VERSION = 1


def _inside(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _input_recorder(model: nn.Module, inputs: deque):
    """A forward pre-hook keeping detached copies of ``model``'s inputs in ``inputs`` (a tensor, a tuple,
    or a dict of keyword inputs, as ``call_model`` takes them). A closure, not a method, so that copies
    of the model (which copy its hooks) neither copy the Pruner nor record into it."""
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if module is not model:
            return
        if kwargs and not args:
            batch: Any = {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in kwargs.items()}
        else:
            batch = tuple(a.detach().clone() if torch.is_tensor(a) else a for a in args)
            batch = batch[0] if len(batch) == 1 else batch
        inputs.append(batch)
    return hook


class _Steered(Criterion):
    """A criterion as the planner sees it inside a Pruner: the base one's scores (or accumulated
    movement scores), with elements pruned earlier forced below every other score of every tensor
    or group, so a global ranking drops them first too. Group scores of a criterion whose scores
    are not comparable across groups are divided by their group's mean magnitude here (over the
    live elements), as the planner would, and handed over as comparable."""

    comparable = True

    def __init__(self, base: Criterion, movement: dict[str, torch.Tensor] | None,
                 forced_elements: dict[str, torch.Tensor], forced_groups: dict[int, list[int]]):
        self.name = base.name
        self.base = base
        self.needs_data = base.needs_data and movement is None
        self.movement = movement
        self.forced_elements = forced_elements
        self.forced_groups = forced_groups

    def elements(self, model: nn.Module, names: list[str], ctx: Context) -> dict[str, torch.Tensor]:
        if self.movement is not None:
            scores = {n: self.movement[n].clone() for n in names}
        else:
            scores = {n: s.detach().double().cpu() for n, s in self.base.elements(model, names, ctx).items()}
        pruned = {n: self.forced_elements[n] for n in scores if n in self.forced_elements}
        return _below(scores, pruned)

    def groups(self, model: nn.Module, graph: Graph, ctx: Context) -> dict[int, torch.Tensor]:
        if self.movement is not None:
            scores = aggregate(graph, self.movement)
        else:
            scores = {g: s.double() for g, s in self.base.groups(model, graph, ctx).items()}
        pruned = {}
        for gid, s in scores.items():
            pruned[gid] = torch.zeros(s.shape, dtype=torch.bool)
            pruned[gid][self.forced_groups.get(gid, [])] = True
        if not self.base.comparable or self.movement is not None:
            scores = {g: s / (s[~pruned[g]].abs().mean() + 1e-12) if (~pruned[g]).any() else s
                      for g, s in scores.items()}
        return _below(scores, pruned)


def _below(scores: dict, pruned: dict) -> dict:
    """``scores`` with the ``pruned`` entries of every tensor set below the lowest live score of all."""
    live = [s[~pruned[k]] if k in pruned else s.flatten() for k, s in scores.items()]
    live = [t for t in live if t.numel()]
    if not live or not any(bool(p.any()) for p in pruned.values()):
        return scores
    low = min(float(t.min()) for t in live)
    floor = low - max(1.0, abs(low))
    return {k: s.masked_fill(pruned[k], floor) if k in pruned else s for k, s in scores.items()}


class Pruner:
    """Gradual pruning during training: masks follow ``schedule``; ``finalize`` makes it permanent."""

    def __init__(self, model: nn.Module, example_inputs: ExampleInputs, schedule: Schedule, *,
                 granularity: str = "unstructured", criterion: str = "l2", scope: str = "local",
                 ignore: Iterable[str] = (), ratios: Mapping[str, float] | None = None, round_to: int = 1,
                 seed: int = 0, data_steps: int = 8, regrow: bool = False):
        """Prepare ``model`` (in place) for pruning along ``schedule``.

        ``granularity``, ``criterion``, ``scope``, ``ignore``, ``ratios``, ``round_to`` and ``seed``
        mean what they mean for ``sc.plan``; ``ratios`` scale with the schedule (a module given 0.5
        when the schedule is at its final sparsity gets ``0.5 * s / final`` at sparsity ``s``).
        ``data_steps``: how many recent optimizer steps' gradients a data criterion sees.
        ``regrow``: at each pruning event rank the stored (dense) weights, pruned ones included, so a
        weight pruned earlier comes back, with its stored value, when it outranks a live one (the
        masks of Zhu & Gupta 2017's code and TensorFlow's ``prune_low_magnitude``); by default pruned
        elements stay pruned. Either way masked weights read as exactly zero between events.
        Under DistributedDataParallel, give the unwrapped model and wrap it afterwards.
        For N:M granularity the pattern is fixed, so the schedule only says when it is applied: its
        final sparsity must be ``1 - N/M``.
        """
        if isinstance(model, DistributedDataParallel):
            raise TypeError("Pruner: give it the model before wrapping it in DistributedDataParallel "
                            "(pruner = sc.Pruner(model, ...); ddp = DDP(model)): its masks move each weight under "
                            "parametrizations, which a DDP built earlier does not follow")
        check_module(model)
        check_inputs(example_inputs)
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a secateurs schedule (OneShot, Iterative, Polynomial, Constant, "
                            f"LotteryTicket), got {type(schedule).__name__}")
        if any(parametrize.is_parametrized(m) for m in model.modules()):
            raise ValueError("model already carries parametrizations (masks?): give the Pruner an unmasked model "
                             "(sc.finalize bakes secateurs masks)")
        if not isinstance(granularity, str) or (granularity not in GRANULARITIES[:3] and parse_nm(granularity) is None):
            raise ValueError(f"granularity must be one of {list(GRANULARITIES[:4])} (N:M as numbers, e.g. '2:4'; "
                             f"whole experts cannot be masked: prune them with sc.prune), got {granularity!r}")
        self.nm = parse_nm(granularity)
        if self.nm is not None and not math.isclose(schedule.final, 1 - self.nm[0] / self.nm[1]):
            raise ValueError(f"schedule: granularity {granularity!r} keeps {self.nm[0]} of every {self.nm[1]} weights, "
                             f"so the schedule's final sparsity must be {1 - self.nm[0] / self.nm[1]}, "
                             f"got {schedule.final}")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {list(SCOPES)}, got {scope!r}")
        regrow = check_bool(regrow, "regrow")
        self.criterion = get_criterion(criterion)
        data_steps = check_int(data_steps, "data_steps", minimum=1)
        if self.criterion.needs_data and self.criterion.name != "movement" and schedule.prunes_at(0):
            raise ValueError(f"criterion {self.criterion.name!r} scores from training gradients, but the schedule "
                             "prunes at step 0, before any backward pass: start the schedule later (call "
                             "loss.backward() before pruner.step())")
        if self.criterion.needs_inputs and schedule.prunes_at(0):
            raise ValueError(f"criterion {self.criterion.name!r} scores from the training inputs, but the schedule "
                             "prunes at step 0, before any forward pass: start the schedule later")
        self.model = model
        self.example_inputs = example_inputs
        self.schedule = schedule
        self.granularity = granularity
        self.structured = granularity in ("channel", "head")
        self.scope = scope
        self.ignore = sorted(ignore) if not isinstance(ignore, str) else ignore
        self.ratios = dict(ratios or {})
        self.round_to = round_to
        self.seed = seed
        self.regrow = regrow
        self.graph = trace(model, example_inputs) if self.structured else None
        # One plan at ratio 0 checks granularity, ignore, ratios, round_to (and a data-free criterion's
        # fit to the granularity) against this model now, before anything is installed.
        check = "l2" if self.criterion.needs_data or self.criterion.needs_inputs else self.criterion
        plan(model, example_inputs, 0.0, granularity=granularity, criterion=check, scope=scope, ignore=self.ignore,
             ratios=self.ratios, round_to=round_to, graph=self.graph, verify=False)
        self.targets = self._targets()
        self.step_count = 0
        self.masks: dict[str, torch.Tensor] = {}  # plain tensor name -> bool keep-mask (only masked tensors)
        self.removed: dict[int, list[int]] = {}  # structured: group id -> removed indices
        self.plan: Plan | None = None
        self.rewind: dict[str, torch.Tensor] | None = None
        self.movement = self.criterion.name == "movement"
        self.scores: dict[str, torch.Tensor] | None = None
        self._latest: dict[str, torch.Tensor] = {}
        self._window: deque[dict[str, torch.Tensor]] = deque(maxlen=data_steps)
        self._hooks = []
        self._compacted = False
        if self.movement:
            self.scores = {n: torch.zeros(p.shape, dtype=torch.float64) for n, p in plain_parameters(model).items()}
        self._inputs: deque[Any] = deque(maxlen=data_steps)
        if self.criterion.needs_inputs:
            self._hooks.append(model.register_forward_pre_hook(_input_recorder(model, self._inputs), with_kwargs=True))
        if self.criterion.needs_data:
            for n, p in plain_parameters(model).items():
                if p.requires_grad:
                    self._hooks.append(p.register_post_accumulate_grad_hook(self._recorder(n)))
        self._install({n: torch.ones(p.shape, dtype=torch.bool) for n, p in plain_parameters(model).items()
                       if n in self._maskable()})
        self.masks = {}
        self._start()

    # -- the training-loop side ------------------------------------------------------------------
    def step(self) -> None:
        """Call once per optimizer step (after ``optimizer.step()``), or once per epoch if the
        schedule counts epochs: advances the schedule and prunes when it says so."""
        if self._compacted:
            if self.schedule.prunes_at(self.step_count + 1):
                raise ValueError("the Pruner was compacted: the model has no masks to change any more "
                                 f"(the schedule wants to prune at step {self.step_count + 1})")
            self.step_count += 1
            return
        self._flush()
        self.step_count += 1
        self._at(self.step_count)

    @property
    def target(self) -> float:
        """The schedule's sparsity at the current step."""
        return self.schedule.sparsity_at(self.step_count)

    @property
    def sparsity(self) -> float:
        """The sparsity reached: the fraction of prunable elements (weights of the targeted tensors,
        or channels/heads of the prunable groups) that are pruned now."""
        if self.structured:
            total = sum(self.targets.values())
            return sum(len(v) for g, v in self.removed.items() if g in self.targets) / total if total else 0.0
        total = sum(self.targets.values())
        gone = sum(int((~m).sum()) for n, m in self.masks.items() if n in self.targets)
        return gone / total if total else 0.0

    @property
    def done(self) -> bool:
        """True once the schedule's last pruning event is behind (``Constant`` never finishes re-selecting)."""
        return self.step_count >= self.schedule.end_step

    def finalize(self) -> nn.Module:
        """The pruned model as a new module: physically smaller (channel/head) or with the masks
        baked into plain weights (unstructured, N:M). The training model is left as it is."""
        if self.structured:
            if self.plan is None:
                return finalize(copy.deepcopy(self.model))
            return apply(self.model, self.plan)
        return finalize(copy.deepcopy(self.model))

    def compact(self, optimizer: torch.optim.Optimizer | None = None) -> nn.Module:
        """Channel/head granularity, once the schedule is over: remove the pruned channels or heads
        from the training model itself, now, and carry ``optimizer``'s state over to the smaller
        parameters (``shrink``), so training goes on with the same optimizer object. Returns the
        model; the Pruner has done its work afterwards (its hooks are removed)."""
        if not self.structured:
            raise ValueError(f"compact removes channels or heads; granularity {self.granularity!r} masks single "
                             "weights (finalize() bakes them)")
        if not self.done:
            raise ValueError(f"compact needs the schedule to be over (step {self.step_count} of "
                             f"{self.schedule.end_step}): later pruning events would need the removed channels")
        if self.plan is not None:
            shrink(self.model, self.plan, optimizer)
        else:
            finalize(self.model)
        self.close()
        self._compacted = True
        return self.model

    def close(self) -> None:
        """Remove the hooks (gradient and input records of data criteria); the masks stay on the model."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: schedule, step, masks, removed groups, movement scores, the
        weights kept for rewinding. Plain data and tensors (``torch.save``-able)."""
        return {
            "version": STATE_VERSION, "model_class": type(self.model).__name__,
            "shapes": {n: list(p.shape) for n, p in plain_parameters(self.model).items()},
            "schedule": self.schedule.to_dict(), "granularity": self.granularity, "criterion": self.criterion.name,
            "scope": self.scope, "regrow": self.regrow, "step": self.step_count,
            "masks": {n: {"shape": list(m.shape), "bits": pack(m)} for n, m in self.masks.items()},
            "removed": {str(g): list(v) for g, v in self.removed.items()},
            "scores": None if self.scores is None else {n: s.clone() for n, s in self.scores.items()},
            "rewind": None if self.rewind is None else {n: t.clone() for n, t in self.rewind.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from ``state_dict()``: same masks and schedule position. Everything is checked
        before anything changes; a state from another model, schedule or setting is a ValueError."""
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise ValueError(f"state must be a Pruner.state_dict() (version {STATE_VERSION})")
        mine = self.state_dict()
        if state.get("model_class") != mine["model_class"] or state.get("shapes") != mine["shapes"]:
            diff = sorted(n for n in set(mine["shapes"]) | set(state.get("shapes") or {})
                          if mine["shapes"].get(n) != (state.get("shapes") or {}).get(n))[:3]
            raise ValueError(f"state was saved for another model ({state.get('model_class')}; parameters that differ: "
                             f"{diff}), not this {mine['model_class']}")
        for key in ("schedule", "granularity", "criterion", "scope", "regrow"):
            if state.get(key, False if key == "regrow" else None) != mine[key]:
                raise ValueError(f"state was saved with {key}={state.get(key)!r}, this Pruner has {key}={mine[key]!r}")
        masks = {n: unpack(e["bits"], e["shape"]) for n, e in state["masks"].items()}
        params = plain_parameters(self.model)
        for n, m in masks.items():
            if n not in params or list(params[n].shape) != list(m.shape):
                raise ValueError(f"state has a mask for {n!r} of shape {list(m.shape)}, which this model does not fit")
        self.step_count = int(state["step"])
        self.removed = {int(g): list(v) for g, v in state["removed"].items()}
        self._install(masks)
        self.scores = None if state["scores"] is None else {n: s.clone() for n, s in state["scores"].items()}
        self.rewind = None if state["rewind"] is None else {n: t.clone() for n, t in state["rewind"].items()}
        self._window.clear()
        self._inputs.clear()
        self._latest.clear()
        if self.structured and self.removed:
            self.plan = self._plan_for(self.removed)

    # -- internals -------------------------------------------------------------------------------
    def _targets(self) -> dict[Any, int]:
        """Prunable units and their sizes: tensor name -> numel, or group id -> size."""
        if self.structured:
            assert self.graph is not None
            return {g.id: g.size for g in self.graph.groups if g.kind == self.granularity
                    and not any(_inside(t.rpartition(".")[0], ig) for t, _, _ in g.tensors for ig in self.ignore)}
        params = dict(self.model.named_parameters())
        return {n: params[n].numel() for n in default_targets(self.model)
                if not any(_inside(n.rpartition(".")[0], ig) for ig in self.ignore)}

    def _maskable(self) -> set[str]:
        """Every tensor a mask may land on (all get an all-ones mask up front, so the order of
        ``model.parameters()`` is fixed from the start)."""
        if not self.structured:
            return set(self.targets)
        assert self.graph is not None
        return {t for g in self.graph.groups if g.id in self.targets for t, _, _ in g.tensors}

    def _start(self) -> None:
        if isinstance(self.schedule, LotteryTicket) and self.schedule.rewind_step == 0:
            self._keep_for_rewind()
        if self.schedule.prunes_at(0):
            self._prune(self.schedule.sparsity_at(0))

    def _at(self, t: int) -> None:
        lt = isinstance(self.schedule, LotteryTicket)
        if lt and t == self.schedule.rewind_step:
            self._keep_for_rewind()
        if self.schedule.prunes_at(t):
            self._prune(self.schedule.sparsity_at(t))
        if lt and t == self.schedule.end_step and self.rewind is not None:
            params = plain_parameters(self.model)
            with torch.no_grad():
                for n, value in self.rewind.items():
                    params[n].copy_(value)

    def _keep_for_rewind(self) -> None:
        self.rewind = {n: p.detach().clone() for n, p in plain_parameters(self.model).items()}

    def _recorder(self, name: str):
        def hook(p: torch.Tensor) -> None:
            if p.grad is None:
                return
            g = p.grad.detach()
            self._latest[name] = p.detach().double() * g.double() if self.movement else g.clone()
        return hook

    def _flush(self) -> None:
        """Move the last backward's record into the movement scores or the data window."""
        if not self._latest:
            return
        if world_size() > 1:
            self._latest = _averaged_over_ranks(self._latest)
        if self.movement:
            assert self.scores is not None
            for n, wg in self._latest.items():
                self.scores[n] -= wg.cpu()
        else:
            self._window.append(dict(self._latest))
        self._latest = {}

    def _context(self) -> Context:
        if self.criterion.needs_inputs:
            if not self._inputs:
                raise ValueError(f"criterion {self.criterion.name!r} scores from the training inputs, but the schedule "
                                 f"prunes at step {self.step_count} before any forward pass of the model was seen")
            return Context(seed=self.seed, batches=list(self._inputs))
        if not self.criterion.needs_data or self.movement:
            return Context(seed=self.seed)
        if not self._window:
            raise ValueError(f"criterion {self.criterion.name!r} scores from training gradients, but the schedule "
                             f"prunes at step {self.step_count} before any backward pass was seen: call "
                             "loss.backward() before pruner.step(), or start the schedule later")
        return Context(seed=self.seed, batches=list(self._window), loss_fn=_surrogate)

    def _scaled_ratios(self, ratio: float) -> dict[str, float]:
        final = self.schedule.final
        return {k: (v * ratio / final if final > 0 else 0.0) for k, v in self.ratios.items()}

    def _prune(self, ratio: float) -> None:
        if self.nm is None and ratio <= 0 and not self.masks:
            return
        work = copy.deepcopy(self.model)
        if self.regrow:  # rank the stored weights, pruned ones included
            for mod in work.modules():
                if parametrize.is_parametrized(mod):
                    for plist in mod.parametrizations.values():
                        plist[0].mask.fill_(True)
        work = finalize(work)
        keep_pruned = self.schedule.monotone and not self.regrow
        forced_e = {n: ~m for n, m in self.masks.items()} if keep_pruned else {}
        forced_g = dict(self.removed) if keep_pruned else {}
        crit = _Steered(self.criterion, self.scores if self.movement else None, forced_e, forced_g)
        ctx = self._context()
        with warnings.catch_warnings():  # small ratios early in a schedule floor to zero on purpose
            warnings.simplefilter("ignore", RoundingWarning)
            p = plan(work, self.example_inputs, ratio, granularity=self.granularity, criterion=crit, scope=self.scope,
                     ignore=self.ignore, ratios=self._scaled_ratios(ratio), round_to=self.round_to, seed=self.seed,
                     batches=ctx.batches, loss_fn=ctx.loss_fn, graph=self.graph)
        p.settings["criterion"] = self.criterion.name
        if p.masks or self.nm is not None or not self.structured:
            masks = {n: unpack(e["bits"], e["shape"]) for n, e in p.masks.items()}
        else:
            masks = _structured_masks(work, p)
            self.removed = p.removals()
            self.plan = p
        self._install(masks)

    def _plan_for(self, removed: dict[int, list[int]]) -> Plan:
        """A structural plan with exactly these removals (for ``finalize`` after a resume)."""
        work = finalize(copy.deepcopy(self.model))
        crit = _Steered(get_criterion("l2"), None, {}, removed)
        ratio = {g: len(v) / self.targets[g] for g, v in removed.items()}
        p = plan(work, self.example_inputs, 0.0, granularity=self.granularity, criterion=crit, scope="local",
                 ignore=self.ignore, round_to=1, group_ratios=ratio, graph=self.graph, verify=False)
        p.settings["criterion"] = self.criterion.name
        return p

    def _install(self, masks: dict[str, torch.Tensor]) -> None:
        """Make the model's masks these (tensors not named go back to all-ones). In sorted order: the
        order in which masks are first installed is the order of ``model.parameters()``, which DDP
        needs to be the same on every rank (a set's order differs between processes)."""
        for name in sorted(set(self.masks) | set(masks)):
            mod_name, _, attr = name.rpartition(".")
            mod = self.model.get_submodule(mod_name) if mod_name else self.model
            keep = masks.get(name)
            if not (parametrize.is_parametrized(mod) and attr in mod.parametrizations):
                if keep is None:
                    continue
                w = getattr(mod, attr)
                # bool keep-mask: 1 byte per weight where a float one takes 4 (w * mask keeps w's dtype)
                keep_all = torch.ones(w.shape, dtype=torch.bool, device=w.device)
                parametrize.register_parametrization(mod, attr, Mask(keep_all), unsafe=True)
            m = mod.parametrizations[attr][0].mask
            with torch.no_grad():
                m.copy_(keep.to(m.device, m.dtype) if keep is not None else torch.ones_like(m))
        self.masks = {n: m.clone() for n, m in masks.items()}


def _averaged_over_ranks(records: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The mean of each record over the process group's ranks (what DDP does to ``.grad``), in one
    all-reduce per dtype (every rank records the same parameters: DDP gives each one a gradient)."""
    out = {}
    names = sorted(records)
    for dtype in sorted({records[n].dtype for n in names}, key=str):
        part = [n for n in names if records[n].dtype == dtype]
        flat = torch.cat([records[n].reshape(-1) for n in part]) / world_size()
        dist.all_reduce(flat)
        for n, chunk in zip(part, flat.split([records[n].numel() for n in part])):
            out[n] = chunk.view_as(records[n])
    return out


def _surrogate(model: nn.Module, grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """A loss whose gradient with respect to each parameter is the recorded training gradient."""
    named = dict(model.named_parameters())
    total = torch.zeros((), dtype=torch.float64)
    for n, g in grads.items():
        if n in named and named[n].requires_grad:
            total = total + (named[n].double() * g.to(named[n].device, torch.float64)).sum().cpu()
    return total


def _structured_masks(work: nn.Module, p: Plan) -> dict[str, torch.Tensor]:
    """Per parameter, the keep-mask a structural plan implies (read off ``apply(..., mode="mask")``)."""
    masked = apply(work, p, mode="mask", inplace=True)
    out = {}
    for name, mod in masked.named_modules():
        if parametrize.is_parametrized(mod):
            for attr, plist in mod.parametrizations.items():
                out[f"{name}.{attr}" if name else attr] = plist[0].mask.detach().bool().cpu()
    return out
