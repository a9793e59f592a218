"""Whole experts of mixture-of-experts layers: how many each router must keep (its top-k).

A router that picks ``top_k`` experts per token cannot run with fewer experts than that. The
planner keeps at least ``top_k`` experts in every expert group, and ``Plan.validate`` rejects a
(possibly edited) plan that leaves fewer.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from ..graph.rules.moe import EXPERT_ATTRS, TOP_K_ATTRS


def top_k_of(mod: nn.Module) -> int | None:
    """The number of experts ``mod`` (a router) picks per token, if it holds one."""
    for attr in TOP_K_ATTRS:
        k = vars(mod).get(attr)
        if isinstance(k, int) and not isinstance(k, bool):
            return k
    return None


def expert_floors(model: nn.Module, syncs: Iterable[dict[str, Any]]) -> dict[int, tuple[int, str]]:
    """Group id -> (fewest experts it may keep, the router that needs them), from the expert-count syncs."""
    out: dict[int, tuple[int, str]] = {}
    for s in syncs:
        if s["attr"] not in EXPERT_ATTRS or len(s["layouts"]) != 1 or s["layouts"][0][0] != "g":
            continue
        try:
            mod = model.get_submodule(s["module"])
        except AttributeError:
            continue
        k = top_k_of(mod)
        gid = int(s["layouts"][0][1])
        if k is not None and k > out.get(gid, (0, ""))[0]:
            out[gid] = (k, s["module"])
    return out


def check_top_k(plan: Any, model: nn.Module) -> None:
    """ValueError when the plan leaves a router fewer experts than it picks per token."""
    groups = {g["id"]: g for g in plan.groups}
    for gid, (k, router) in expert_floors(model, plan.syncs).items():
        size = groups[gid]["size"]
        left = size - len(groups[gid]["remove"])
        if left < k:
            raise ValueError(f"plan does not fit this model: it leaves {left} experts in {router}, which picks "
                             f"top_k={k} per token; remove at most {size - k} of group {gid}'s {size} experts")
