"""Hugging Face round trips: a pruned transformers model saved as its base config + plan + weights.

``save_hf`` writes ``config.json`` (the *unpruned* architecture, with its class name), the plan and
the weights; ``load_hf`` rebuilds the base model from that config alone (no network, no remote code:
the class must be one ``transformers`` itself exports) and applies the plan. Nothing is unpickled.
"""
from __future__ import annotations

import copy
import json
import os
from typing import Any

from torch import nn

from .._files import atomic_write
from ..prune import Plan
from .saving import load, save

CONFIG = "config.json"


def save_hf(model: nn.Module, directory: str | os.PathLike, plan: Plan | None = None, *,
            compressed: bool | str = False) -> None:
    """Save a pruned ``transformers`` model so ``load_hf(directory)`` rebuilds it in a fresh process."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise TypeError(f"model must be a transformers PreTrainedModel (with a .config), got {type(model).__name__}")
    if plan is None:
        save(model, directory, compressed=compressed)
    else:
        save(model, plan, directory, compressed=compressed)
    base = copy.deepcopy(config)
    base.architectures = [type(model).__name__]
    text = base.to_json_string(use_diff=False)
    atomic_write(os.path.join(directory, CONFIG), text)


def load_hf(directory: str | os.PathLike) -> nn.Module:
    """Rebuild a model written by ``save_hf``: base model from ``config.json``, then the plan and weights."""
    import transformers

    path = os.path.join(directory, CONFIG)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{directory} holds no {CONFIG}: not a directory written by secateurs save_hf")
    with open(path) as f:
        try:
            data: dict[str, Any] = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    names = data.get("architectures") or []
    cls = getattr(transformers, names[0], None) if names and isinstance(names[0], str) else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ValueError(f"{path} names architecture {names[:1]}, which is not a model class of transformers "
                         f"{transformers.__version__}")
    config = transformers.AutoConfig.for_model(**data)
    base = cls(config).eval()
    return load(base, directory)


#: Config fields that set the MLP width of common transformers architectures (and, for mixtures of
#: experts, each expert's width and the number of experts).
WIDTH_KEYS = ("intermediate_size", "n_inner", "ffn_dim", "d_ff", "moe_intermediate_size", "num_local_experts",
              "num_experts")


def pretrained_config(model: nn.Module) -> Any:
    """A copy of ``model.config`` that describes the pruned shapes, so ``from_pretrained`` rebuilds it directly.

    Found by building the architecture on the meta device from candidate configs: it exists when the
    pruning is expressible in the config (element masks; the same MLP width in every layer). Removed
    attention heads or per-layer widths are not (transformers 5 dropped ``pruned_heads``): a
    ValueError names the tensors that differ; ``save_hf``/``load_hf`` handle those models.
    """
    import torch

    from ..prune.surgery import finalize

    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise TypeError(f"model must be a transformers PreTrainedModel (with a .config), got {type(model).__name__}")
    target = {k: tuple(v.shape) for k, v in finalize(copy.deepcopy(model)).state_dict().items()}

    def shapes(cfg: Any) -> dict[str, tuple[int, ...]]:
        with torch.device("meta"):
            return {k: tuple(v.shape) for k, v in type(model)(cfg).state_dict().items()}

    base = shapes(config)
    if base == target:
        return copy.deepcopy(config)
    differing = [k for k in target if base.get(k) != target[k]]
    candidates = sorted({d for k in differing for d in target[k]} - {d for k in differing for d in base.get(k, ())})
    for key in (k for k in WIDTH_KEYS if k in config.to_dict()):
        for value in candidates:
            cfg = copy.deepcopy(config)
            setattr(cfg, key, value)
            if shapes(cfg) == target:
                return cfg
    raise ValueError(f"the pruned shapes of {type(model).__name__} are not expressible in its config (e.g. removed "
                     f"heads or per-layer widths): {differing[:4]} differ; save it with save_hf instead")


def save_pretrained(model: nn.Module, directory: str | os.PathLike) -> None:
    """``model.save_pretrained(directory)`` with ``pretrained_config``'s config, on a copy: ``from_pretrained``
    reloads it."""
    from ..prune.surgery import finalize

    config = pretrained_config(model)
    baked = finalize(copy.deepcopy(model))
    baked.config = config
    baked.save_pretrained(directory)
