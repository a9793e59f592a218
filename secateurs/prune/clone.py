"""``copy.deepcopy`` of a module tree, several times faster on models of a thousand modules.

Surgery copies the whole model once per plan it applies (verification included). ``deepcopy`` spends
most of that time on Python bookkeeping of each module's dozen empty hook dicts; this walks plain
modules itself and hands everything else to ``deepcopy`` with the same memo, so the copy is the one
``deepcopy`` makes: same classes, attributes, sharing (tied weights, a module used twice) and memo use.
"""
from __future__ import annotations

import copy
import copyreg
import functools
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

_ATOMIC = frozenset({type(None), bool, int, float, complex, str, bytes})
_SLOTS = ("_parameters", "_buffers", "_modules")  # the dicts that hold tensors and submodules


def deepcopy_module(module: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """``copy.deepcopy(module, memo)``: the same result, made faster for modules that copy the default way."""
    return _copy(module, memo)


@functools.cache
def _plain(cls: type) -> bool:
    """A module class that ``deepcopy`` copies the default way: ``cls.__new__``, then ``__setstate__`` (if
    any) of a deep copy of ``__getstate__()`` (no ``__deepcopy__``, reduce override, slots or copyreg entry)."""
    return (cls.__reduce_ex__ is object.__reduce_ex__ and cls.__reduce__ is object.__reduce__
            and all(getattr(cls, a, None) is None for a in ("__deepcopy__", "__getnewargs__", "__getnewargs_ex__"))
            and cls not in copyreg.dispatch_table
            and not any("__slots__" in vars(c) for c in cls.__mro__))


def _copy(obj: Any, memo: dict[int, Any]) -> Any:
    if type(obj) is nn.Parameter:  # what Parameter.__deepcopy__ does, without deepcopy's dispatch
        done = memo.get(id(obj))
        if done is None:
            done = memo[id(obj)] = nn.Parameter(obj.data.clone(memory_format=torch.preserve_format),
                                                obj.requires_grad)
        return done
    if type(obj) is torch.Tensor and _plain_tensor(obj):
        return _copy_tensor(obj, memo)
    if not isinstance(obj, nn.Module) or not _plain(type(obj)):
        return copy.deepcopy(obj, memo)
    done = memo.get(id(obj))
    if done is not None:
        return done
    state = obj.__getstate__()
    if type(state) is not dict:
        return copy.deepcopy(obj, memo)
    new = type(obj).__new__(type(obj))
    memo[id(obj)] = new
    copied = {}
    for k, v in state.items():
        t = type(v)
        if t in _ATOMIC or t is tuple and all(type(e) in _ATOMIC for e in v):
            copied[k] = v  # what deepcopy returns for these
        elif t in (dict, OrderedDict) and (k in _SLOTS or not v) or t is set and not v:
            if id(v) in memo:
                copied[k] = memo[id(v)]
                continue
            d = memo[id(v)] = t()
            for name, x in v.items() if t is not set else ():
                d[name] = _copy(x, memo)
            copied[k] = d
        else:
            copied[k] = copy.deepcopy(v, memo)
    if hasattr(new, "__setstate__"):
        new.__setstate__(copied)
    else:
        new.__dict__.update(copied)
    return new


def _plain_tensor(t: torch.Tensor) -> bool:
    """A tensor that ``Tensor.__deepcopy__`` copies by cloning its storage: a strided, unquantized leaf on
    CPU or CUDA that carries no gradient, no Python attributes and no torch-function override."""
    return (t.layout == torch.strided and t.device.type in ("cpu", "cuda") and t.is_leaf and not t.requires_grad
            and t.grad is None and not t.is_quantized and not t.is_conj() and not t.is_neg() and not vars(t)
            and not torch.overrides.has_torch_function((t,)))


def _copy_tensor(t: torch.Tensor, memo: dict[Any, Any]) -> torch.Tensor:
    """What ``Tensor.__deepcopy__`` makes of a plain tensor (buffers such as batch-norm statistics): a view of
    a copy of its storage, the storage copied once per memo (``UntypedStorage.__deepcopy__``'s own memo)."""
    done = memo.get(id(t))
    if done is not None:
        return done
    storages = memo.setdefault("torch", {})
    old = t.untyped_storage()
    new_storage = storages.get(old._cdata)
    if new_storage is None:
        new_storage = storages[old._cdata] = old.clone()
    with torch.no_grad():
        new = t.new_empty([]).set_(new_storage, t.storage_offset(), t.size(), t.stride())
    memo[id(t)] = new
    return new
