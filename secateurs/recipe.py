"""Recipes: a sweep described in YAML, validated field by field before anything runs.

    model: torchvision.models:resnet18     # module:function returning an nn.Module (required)
    model_kwargs: {num_classes: 10}        # optional keyword arguments for it
    input_shape: [1, 3, 224, 224]          # example input (random normal), unless `data` gives one
    data: mypkg.data:load                  # optional: returns {"example_inputs", "evaluate", "finetune"?}
    evaluate: fidelity                     # without `data`: output similarity to the dense model
    methods: [channel/l2/local, channel/lamp/global]
    ratios: [0.3, 0.5, 0.7]
    targets: [{macs: 0.5}]                 # optional: sensitivity-allocated candidates
    budget: 0                              # fine-tuning steps per candidate (needs data.finetune)
    constraint: {max_drop: 0.01, minimize: latency}
    workdir: runs/x
"""
from __future__ import annotations

import os
from typing import Any

import torch
import yaml

FIELDS = {"model", "model_kwargs", "input_shape", "data", "evaluate", "methods", "ratios", "targets", "budget",
          "constraint", "workdir"}


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a recipe; a bad field raises ValueError naming it."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"recipe {path} does not exist")
    with open(path) as f:
        try:
            recipe = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ValueError(f"recipe {path} is not valid YAML: {exc}") from exc
    return validate(recipe)


def validate(recipe: Any) -> dict[str, Any]:
    """Check every field's presence and type (recipes come from files people edit by hand)."""
    if not isinstance(recipe, dict):
        raise ValueError("recipe must be a mapping of fields")
    unknown = set(recipe) - FIELDS
    if unknown:
        raise ValueError(f"recipe has unknown field(s) {sorted(unknown)}; valid fields: {sorted(FIELDS)}")
    for key in ("model", "workdir"):
        if not isinstance(recipe.get(key), str):
            raise ValueError(f"recipe field '{key}' is required and must be a string")
    if ":" not in recipe["model"]:
        raise ValueError(f"recipe field 'model' must be 'module:function', got {recipe['model']!r}")
    if "data" not in recipe:
        shape = recipe.get("input_shape")
        if not (isinstance(shape, list) and shape and all(isinstance(v, int) and v > 0 for v in shape)):
            raise ValueError("recipe field 'input_shape' must be a list of positive integers (or give 'data')")
        if recipe.get("evaluate", "fidelity") != "fidelity":
            raise ValueError("recipe field 'evaluate' must be 'fidelity' unless 'data' supplies an evaluate function")
    for key, kind in (("methods", str), ("ratios", (int, float)), ("targets", dict)):
        if key in recipe and not (isinstance(recipe[key], list) and all(isinstance(v, kind) for v in recipe[key])):
            raise ValueError(f"recipe field '{key}' must be a list of {getattr(kind, '__name__', 'numbers')}")
    if "budget" in recipe and not (isinstance(recipe["budget"], int) and recipe["budget"] >= 0):
        raise ValueError("recipe field 'budget' must be a non-negative integer")
    c = recipe.get("constraint", {})
    if not isinstance(c, dict) or set(c) - {"max_drop", "minimize"}:
        raise ValueError("recipe field 'constraint' must be a mapping with max_drop and/or minimize")
    if "model_kwargs" in recipe and not isinstance(recipe["model_kwargs"], dict):
        raise ValueError("recipe field 'model_kwargs' must be a mapping")
    return recipe


def run_recipe(recipe: dict[str, Any], *, device: str = "cpu", threads: int | None = 1, seed: int = 0,
               quiet: bool = False, executor: Any = "local"):
    """Build the model and data the recipe names, explore (on ``executor``), pick under its constraint, report."""
    from .cli import load_object
    from .search import explore
    model = load_object(recipe["model"], "model")(**recipe.get("model_kwargs", {}))
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"recipe field 'model': {recipe['model']} returned {type(model).__name__}, not an nn.Module")
    model = model.to(device).eval()
    finetune = None
    if "data" in recipe:
        data = load_object(recipe["data"], "data")()
        if not isinstance(data, dict) or "example_inputs" not in data or "evaluate" not in data:
            raise ValueError("recipe field 'data' must name a function returning a dict with 'example_inputs' "
                             "and 'evaluate' (and optionally 'finetune')")
        x, evaluate, finetune = data["example_inputs"], data["evaluate"], data.get("finetune")
    else:
        x, evaluate = torch.randn(*recipe["input_shape"], device=device), "fidelity"
    kwargs = {k: recipe[k] for k in ("methods", "ratios", "targets", "budget") if k in recipe}
    front = explore(model, x, evaluate, finetune=finetune, workdir=recipe["workdir"], threads=threads,
                    seed=seed, quiet=quiet, executor=executor, **kwargs)
    c = {"max_drop": 0.01, "minimize": "latency", **recipe.get("constraint", {})}
    best = front.pick(**c)
    paths = front.report(os.path.join(recipe["workdir"], "report.html"), **c)
    if not quiet:
        print(front.table())
        print(f"\npicked {best.candidate.name} (quality {best.quality:.4f}); report: {paths['html']}")
    return front, best
