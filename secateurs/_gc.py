"""Python's cyclic garbage collector paused around allocation-heavy steps (tracing, scoring, planning, surgery).

A trace and a model copy allocate hundreds of thousands of small container objects (spaces, records,
module dicts), each allocation counting towards the collector's thresholds; the collections they
trigger walk every tracked object in the process, the user's model and everything else loaded included
(measured on 34 timm models in one process: about 1.3 s of a 12 s trace-and-prune pass). These steps
make no reference cycles that must be freed while they run, so the collector waits until they return;
the model forwards of verification run with it as the user left it (bisection makes a model copy per try).
"""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block (also a decorator); restore it as it was, even on error.

    Nested and concurrent uses are safe: only the use that found it enabled enables it again.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
