"""Recipes: a sweep described in YAML, validated field by field before anything runs (see ``RECIPE_HELP``).

A recipe is code, not data: ``model`` and ``data`` name Python functions that are imported and
called (with ``model_kwargs``), so run only recipes you would run as a script. What can be checked
before calling is: the whole recipe is validated first (nothing runs or is written before every field
is known good), the targets must be classes or plain Python functions defined in a module (no
builtins, nothing from ``os``, ``subprocess`` and the like), and the model must come back as an
``nn.Module``. Trained weights (``weights``) are read from safetensors only, never from pickles.
"""
from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Callable
from typing import Any

import torch
import yaml

from ._inputs import check_round_to, is_int, is_real
from .criteria import get_criterion
from .measure import DEFAULT_THREADS
from .search import explore
from .search.allocate import check_target
from .search.candidate import COSTS
from .search.explore import parse_method

RECIPE_HELP = """\
A recipe is a YAML file; every field (only model and workdir are required):

  model: mypkg.models:make_cnn           module:function (or class) returning an nn.Module
  model_kwargs: {num_classes: 10}        keyword arguments for it
  weights: runs/cnn.safetensors          trained weights for it (safetensors only; every tensor must fit)
  data: mypkg.data:load                  function returning a dict: "example_inputs" (a batch the model
                                         takes), "evaluate" (model -> float, higher is better) and
                                         optionally "finetune" (model, steps=N -> model) and
                                         "calibration" (a list of model-input batches: BatchNorm
                                         recalibration of one-shot candidates, posttrain methods)
  input_shape: [1, 3, 224, 224]          without data: a random normal example input of this shape
  evaluate: fidelity                     without data: output similarity to the unpruned model
  methods: [channel/l2/local, channel/lamp/global]   granularity/criterion/scope, each at every ratio
  ratios: [0.3, 0.5, 0.7]                fractions of each method's elements removed
  round_to: auto                         kept widths: a multiple of this int, or "auto" (snapped to fast
                                         widths of this machine's measured latency table); one method
                                         alone: a suffix, channel/l2/local+auto or channel/l2/local+round16
  targets: [{macs: 0.5}]                 sensitivity-allocated candidates at that fraction of dense cost
  budget: 200                            fine-tuning steps per candidate (needs data with finetune)
  constraint: {max_drop: 0.01, minimize: latency}   the pick: lowest cost within max_drop of dense
  workdir: runs/cnn                      where results, candidate folders and the report go

Paths are relative to the current directory. Every candidate folder loads with
sc.load(fresh_model, folder); the last lines printed show how for the picked one.
"""

FIELDS = {"model", "model_kwargs", "weights", "input_shape", "data", "evaluate", "methods", "ratios", "targets",
          "budget", "constraint", "workdir", "round_to"}
# Modules (and their submodules) whose functions a recipe may never name: they run commands, touch
# files, fetch or import code.
FORBIDDEN = frozenset({
    "torch.hub", "torch.package", "torch.utils.cpp_extension",
    "os", "posix", "nt", "sys", "subprocess", "shutil", "builtins", "importlib", "pty", "socket", "ctypes",
    "multiprocessing", "concurrent", "signal", "pickle", "marshal", "shelve", "runpy", "code", "codeop",
    "pdb", "webbrowser", "urllib", "http", "ftplib", "smtplib", "telnetlib", "asyncio", "threading", "_thread",
    "tempfile", "pathlib", "io", "glob", "fileinput", "zipfile", "tarfile", "gc", "inspect", "types",
    "functools", "operator", "platform", "sysconfig", "site", "pydoc", "cProfile", "profile", "trace", "timeit",
})
_REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a recipe; a bad field raises ValueError naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"recipe {path} does not exist")
    with open(path) as f:
        try:
            recipe = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ValueError(f"recipe {path} is not valid YAML: {exc}") from exc
    return validate(recipe)


def validate(recipe: Any) -> dict[str, Any]:
    """Check every field's presence, type and value before anything runs (recipes are edited by hand)."""
    if not isinstance(recipe, dict):
        raise ValueError("recipe must be a mapping of fields")
    unknown = set(recipe) - FIELDS
    if unknown:
        raise ValueError(f"recipe has unknown field(s) {sorted(map(str, unknown))}; valid fields: {sorted(FIELDS)}")
    for key in ("model", "workdir"):
        if not isinstance(recipe.get(key), str) or not recipe[key].strip():
            raise ValueError(f"recipe field '{key}' is required and must be a string")
    check_ref(recipe["model"], "recipe field 'model'")
    if "weights" in recipe:
        check_weights_path(recipe["weights"], "recipe field 'weights'")
    if "data" in recipe:
        check_ref(recipe["data"], "recipe field 'data'")
        if "evaluate" in recipe:
            raise ValueError("recipe field 'evaluate' must be left out when 'data' supplies the evaluate function")
    else:
        shape = recipe.get("input_shape")
        if not (isinstance(shape, list) and shape and all(is_int(v, 1) for v in shape)):
            raise ValueError("recipe field 'input_shape' must be a list of positive integers (or give 'data')")
        if recipe.get("evaluate", "fidelity") != "fidelity":
            raise ValueError("recipe field 'evaluate' must be 'fidelity' unless 'data' supplies an evaluate function, "
                             f"got {recipe['evaluate']!r}")
    if "model_kwargs" in recipe and not (isinstance(recipe["model_kwargs"], dict)
                                         and all(isinstance(k, str) for k in recipe["model_kwargs"])):
        raise ValueError("recipe field 'model_kwargs' must be a mapping of argument names to values")
    for key, kind in (("methods", "strings 'granularity/criterion/scope'"), ("ratios", "numbers in (0, 1)"),
                      ("targets", "mappings such as {macs: 0.5}")):
        if key in recipe and not (isinstance(recipe[key], list) and recipe[key]):
            raise ValueError(f"recipe field '{key}' must be a list of {kind} (at least one), got {recipe[key]!r}")
    for m in recipe.get("methods", []):
        if not isinstance(m, str):
            raise ValueError("recipe field 'methods' must be a list of strings 'granularity/criterion/scope', "
                             f"got {m!r}")
        try:
            method = parse_method(m)
        except ValueError as exc:
            raise ValueError(f"recipe field 'methods': {exc}") from None
        if get_criterion(method["criterion"]).needs_data:
            raise ValueError(f"recipe field 'methods': criterion {method['criterion']!r} needs gradient batches, "
                             "which a recipe cannot supply; use a criterion such as l2, lamp, fpgm or bn_scale")
    for r in recipe.get("ratios", []):
        if not is_real(r, "(0, 1)"):
            raise ValueError(f"recipe field 'ratios' must be a list of numbers in (0, 1), got {r!r}")
    for t in recipe.get("targets", []):
        try:
            check_target(t)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"recipe field 'targets': {exc}") from None
    if "round_to" in recipe:
        check_round_to(recipe["round_to"], "recipe field 'round_to'")
    if "budget" in recipe:
        if not is_int(recipe["budget"], 0):
            raise ValueError(f"recipe field 'budget' must be a non-negative integer, got {recipe['budget']!r}")
        if recipe["budget"] > 0 and "data" not in recipe:
            raise ValueError("recipe field 'budget' > 0 fine-tunes each candidate: "
                             "it needs 'data' with a finetune function")
    c = recipe.get("constraint", {})
    if not isinstance(c, dict) or set(c) - {"max_drop", "minimize"}:
        raise ValueError(f"recipe field 'constraint' must be a mapping with max_drop and/or minimize, got {c!r}")
    if "max_drop" in c and not is_real(c["max_drop"], "[0, inf)"):
        raise ValueError(f"recipe field 'constraint': max_drop must be a non-negative number, got {c['max_drop']!r}")
    if "minimize" in c and c["minimize"] not in COSTS:
        raise ValueError(f"recipe field 'constraint': minimize must be one of {list(COSTS)}, got {c['minimize']!r}")
    return recipe


def check_weights_path(path: Any, what: str) -> str:
    """``path`` if it names an existing ``.safetensors`` file (pickled checkpoints are refused: they run code)."""
    if not isinstance(path, str) or not path.endswith(".safetensors"):
        raise ValueError(f"{what} must be the path of a .safetensors file (pickled .pt/.pth checkpoints can run "
                         f"code; convert with safetensors.torch.save_file(model.state_dict(), ...)), got {path!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: {path} does not exist")
    return path


def load_weights(model: torch.nn.Module, path: str, what: str = "weights") -> torch.nn.Module:
    """Load the safetensors file ``path`` into ``model`` strictly: every tensor present, named and shaped alike."""
    from safetensors.torch import load_file
    check_weights_path(path, what)
    try:
        state = load_file(path)  # onto the CPU: models are built there and moved to --device afterwards
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"{what}: {path} is not a readable safetensors file ({exc})") from None
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{label} {names[:5]}" + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                 for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                 if names]
        raise ValueError(f"{what}: {path} does not fit the model {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state)
    return model


def factory_code(ref: str, kwargs: dict[str, Any] | None = None) -> tuple[str, str]:
    """``(module, expression)``: the module to import and the Python expression that builds the model."""
    module, name = ref.split(":")
    args = ", ".join(f"{k}={v!r}" for k, v in (kwargs or {}).items())
    return module, f"{module}.{name}({args})"


def check_ref(ref: Any, what: str) -> tuple[str, str]:
    """``ref`` as ``(module, name)`` if it is a well-formed ``module:function`` outside ``FORBIDDEN``
    (nothing imported)."""
    if not isinstance(ref, str) or not _REF.match(ref):
        raise ValueError(f"{what} must be 'module:function' (dotted module path, colon, name), got {ref!r}")
    module, name = ref.split(":")
    if _forbidden(module):
        raise ValueError(f"{what}: {ref!r} is refused: secateurs never calls into {_forbidden(module)!r} "
                         "(name a model function or class of your own code or of a model library)")
    return module, name


def load_callable(ref: str, what: str) -> Callable[..., Any]:
    """Import the class or Python function ``module:name`` names, after ``check_ref``; never calls it.

    Builtins, other callables (partials, instances, C functions) and anything defined in a module of
    ``FORBIDDEN`` (re-exported or not) are refused with a ValueError naming ``what``.
    """
    module, name = check_ref(ref, what)
    try:
        obj = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ValueError(f"{what}: cannot import module {module!r}: {exc}") from exc
    except AttributeError:
        raise ValueError(f"{what}: module {module!r} has no attribute {name!r}") from None
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        raise ValueError(f"{what}: {ref!r} is a {type(obj).__name__}, not a class or a Python function "
                         "defined in a module")
    home = getattr(obj, "__module__", None) or ""
    if _forbidden(home):
        raise ValueError(f"{what}: {ref!r} is {home}.{obj.__qualname__}, which secateurs never calls")
    return obj


def build_model(ref: str, kwargs: dict[str, Any] | None = None, what: str = "recipe field 'model'") -> torch.nn.Module:
    """Call the class or function ``ref`` names with ``kwargs``; the result must be an ``nn.Module``."""
    factory = load_callable(ref, what)
    if inspect.isclass(factory) and not issubclass(factory, torch.nn.Module):
        raise ValueError(f"{what}: {ref!r} is a class but not an nn.Module subclass")
    model = factory(**(kwargs or {}))
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{what}: {ref} returned {type(model).__name__}, not an nn.Module")
    return model


def run_recipe(recipe: dict[str, Any], *, device: str = "cpu", threads: int = DEFAULT_THREADS, seed: int = 0,
               quiet: bool = False, executor: Any = "local"):
    """Validate, build the model (with its ``weights``) and data, explore (on ``executor``), pick under the
    constraint, report.

    Prints the table, the pick (or that nothing met the constraint, and the closest), the rule, and the
    two lines of Python that load the picked model; ``quiet`` prints only the pick, on one line.
    """
    recipe = validate(recipe)
    model = build_model(recipe["model"], recipe.get("model_kwargs"))
    if "weights" in recipe:
        load_weights(model, recipe["weights"], "recipe field 'weights'")
    model = model.to(device).eval()
    finetune = calibration = None
    if "data" in recipe:
        data = load_callable(recipe["data"], "recipe field 'data'")()
        if not isinstance(data, dict) or "example_inputs" not in data or "evaluate" not in data:
            raise ValueError("recipe field 'data' must name a function returning a dict with 'example_inputs' "
                             "and 'evaluate' (and optionally 'finetune' and 'calibration')")
        x, evaluate, finetune = data["example_inputs"], data["evaluate"], data.get("finetune")
        calibration = data.get("calibration")
        if recipe.get("budget", 0) > 0 and finetune is None:
            raise ValueError("recipe field 'budget' > 0 needs 'data' to return a 'finetune' function")
    else:
        x, evaluate = torch.randn(*recipe["input_shape"], device=device), "fidelity"
    kwargs = {k: recipe[k] for k in ("methods", "ratios", "targets", "budget") if k in recipe}
    if "round_to" in recipe:
        kwargs["plan_kwargs"] = {"round_to": recipe["round_to"]}
    front = explore(model, x, evaluate, finetune=finetune, workdir=recipe["workdir"], threads=threads,
                    seed=seed, quiet=quiet, executor=executor, calibration=calibration, **kwargs)
    c = {"max_drop": 0.01, "minimize": "latency", **recipe.get("constraint", {})}
    best = front.pick(**c)
    module, build = factory_code(recipe["model"], recipe.get("model_kwargs"))
    paths = front.report(os.path.join(recipe["workdir"], "report.html"), factory=build, **c)
    if quiet:
        print(best.summary())
        return front, best
    print(front.table())
    print(f"\n{best.summary()}")
    print(f"measured at batch {_batch(x)}, {threads} thread{'s' if threads != 1 else ''}; report: {paths['html']}")
    code = best.load_code(build).replace("import secateurs as sc", f"import secateurs as sc, {module}")
    print("load it with:\n" + code)
    return front, best


def _batch(x: Any) -> str:
    from ._inputs import batch_size_of
    size = batch_size_of(x)
    return "?" if size is None else str(size)


def _forbidden(module: str) -> str | None:
    """The ``FORBIDDEN`` entry ``module`` is or lies inside, if any."""
    parts = module.split(".")
    return next((".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in FORBIDDEN), None)


