"""One timm zoo check, shared by tests/zoo/test_timm.py and benchmarks/timm_zoo.py."""
from __future__ import annotations

import functools
import re
import time
import warnings

import timm
import torch
from torch import nn

import secateurs as sc
from secateurs.measure import count_macs, count_params
from secateurs.prune.planner import carried_plan

HEAD_CLASSES = 1000  # every zoo model is measured with an ImageNet-1k classifier (see build)
SIDES = (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 384, 448, 512)
# Size words in timm names, smallest first; a name's rank is its smallest word's.
SIZE_WORDS = ["atto", "femto", "pico", "nano", "micro", "xxxs", "xxs", "tiny", "xs", "tn", "t", "lite", "mini",
              "small", "s", "b0", "0", "light", "m", "medium", "base", "b", "l", "large"]


def size_key(name: str) -> tuple:
    """Sort key that puts a family's smallest variant first (size word, then the first number, then length)."""
    words = re.split(r"[_.]", name)
    rank = min((SIZE_WORDS.index(w) for w in words if w in SIZE_WORDS), default=len(SIZE_WORDS))
    nums = [int(n) for n in re.findall(r"\d+", name)]
    return rank, nums[0] if nums else 0, len(name), name


@functools.lru_cache(maxsize=1)
def families() -> dict[str, list[str]]:
    """timm's model names per family (the module that defines them), smallest-looking variant first."""
    module_of = timm.models._registry._model_to_module  # one pass; list_models(module=...) per family is slow
    out: dict[str, list[str]] = {}
    for name in timm.list_models():
        out.setdefault(module_of[name], []).append(name)
    return {mod: sorted(names, key=size_key) for mod, names in sorted(out.items())}


def representative(names: list[str]) -> str:
    """A family's smallest-looking variant that builds and runs (of its first four), else its first."""
    for name in names[:4]:
        try:
            build(name)
            return name
        except Exception:  # noqa: BLE001 - try the next variant
            continue
    return names[0]


@functools.lru_cache(maxsize=2)  # representative(), check() and the Torch-Pruning column build the same model
def build(name: str, **kwargs) -> tuple[nn.Module, torch.Tensor]:
    """The model (random init, eval) and the smallest square batch-1 input it accepts (cached: callers
    must not modify them; check() verifies it leaves the model untouched).

    Every model is measured with an ImageNet-1k classifier: a variant made with another head gets a
    1000-class one instead (``head_added``). A feature encoder (``num_classes=0``: eva02_tiny,
    qwen3_vit) outputs its residual width, which pruning must keep, so without a head its main width
    could not shrink at all; a 21k-class or embedding head (tiny_vit, fastvit_mci) would weigh the
    parameter count by a head whose output size pruning keeps.
    """
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    if head_added(model, kwargs):
        kwargs = {**kwargs, "num_classes": HEAD_CLASSES}
        model = timm.create_model(name, pretrained=False, **kwargs).eval()
    attempts: list[tuple[dict, int]] = [] if set(kwargs) - {"num_classes"} else [
        ({"img_size": s}, s) for s in SIDES[:2]]
    chans, _, default = model.pretrained_cfg.get("input_size", (3, 224, 224))
    if "img_size" in kwargs:
        default = kwargs["img_size"]
    attempts += [({}, s) for s in SIDES if s < default] + [({}, default)]
    last: Exception | None = None
    for extra, side in attempts:
        try:
            m = timm.create_model(name, pretrained=False, **kwargs, **extra).eval() if extra else model
            x = torch.randn(1, chans, side, side)
            with torch.no_grad():
                m(x)
            return m, x
        except Exception as exc:  # noqa: BLE001 - try the next size
            last = exc
    raise ValueError(f"{name} runs on none of the input sizes tried: {last}")


def head_added(model: nn.Module, kwargs: dict) -> bool:
    """True when ``build`` gives (or gave) this model a 1000-class head in place of its own."""
    return "num_classes" not in kwargs and model.pretrained_cfg.get("num_classes", HEAD_CLASSES) != HEAD_CLASSES


def check(name: str, ratio: float = 0.3, **kwargs) -> dict:
    """Prune a randomly initialised timm model with default arguments; verify output shape and the
    untouched input model; return params/MACs before and after, prune time and what was left."""
    model, x = build(name, **kwargs)
    before = _fingerprint(model)
    t0 = time.perf_counter()
    graph = sc.trace(model, x)
    small = sc.prune(model, x, ratio=ratio, graph=graph)
    seconds = time.perf_counter() - t0
    plan = carried_plan(small)
    floor, (ref, out) = _floor(model, small, x)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert _fingerprint(model) == before, "the input model was modified"
    shown = name + (f" (num_classes={HEAD_CLASSES})" if head_added(model, kwargs) else "")
    return dict(model=shown, side=x.shape[-1], seconds=round(seconds, 2), floor=floor,
                params=(count_params(model), count_params(small)),
                macs=(count_macs(model, x).total, count_macs(small, x).total),
                skipped=[s["reason"] for s in plan.skipped if "id" in s],
                unsupported=[u.reason for u in graph.unsupported])


def _floor(model: nn.Module, small: nn.Module, x: torch.Tensor) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
    """Seconds of the work no pruner that checks its result can skip: a forward of the model (to see how its
    layers connect), one read of its weights (to score them), a copy of the kept ones into fresh memory (a
    smaller model), a forward of the pruned model (to check it runs). Also returns both outputs."""
    with torch.no_grad():
        t0 = time.perf_counter()
        ref = model(x)
        for w in model.parameters():
            torch.linalg.vector_norm(w)
        kept = [torch.empty_like(w).copy_(w) for w in small.parameters()]
        out = small(x)
        seconds = time.perf_counter() - t0
    del kept
    return seconds, (ref, out)


def _fingerprint(model: nn.Module) -> list[tuple]:
    """Each tensor's storage, in-place version counter and shape: any change to the model shows."""
    return [(k, v.data_ptr(), v._version, tuple(v.shape)) for k, v in model.state_dict(keep_vars=True).items()]
