"""Crash-safe workdir files: atomic writes, torn-line-proof appends, JSON-lines reading, a per-workdir lock.

A sweep's workdir is written while the sweep runs and read back when it resumes, possibly after a
kill at any instant or while a second process is pointed at it by mistake. So every whole-file write
goes to a temporary name in the same folder and is renamed over the target once flushed to disk
(readers see the old file or the new one, never half of one); an append to a JSON-lines file first
ends a torn last line, so a record cut short by a kill never swallows the next one; and
``locked(workdir)`` holds an exclusive, non-blocking ``flock`` on ``workdir/.lock`` for as long as
a sweep writes there, so a second process stops at once with a message naming the workdir.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .._files import fsync_dir

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; sweeps there are not protected by a lock
    fcntl = None

LOCK = ".lock"
# what parsing a damaged or hand-edited record can raise
_BAD_RECORD = (ValueError, TypeError, KeyError, AttributeError)
T = TypeVar("T")


class WorkdirBusy(RuntimeError):
    """Another process holds the workdir's lock (it is running a sweep there)."""


def atomic_folder(path: str | os.PathLike, fill: Callable[[str], None]) -> None:
    """Create folder ``path`` as a unit: ``fill(tmp)`` writes into a fresh sibling, which then replaces ``path``."""
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        fill(tmp)
        for name in os.listdir(tmp):
            with open(os.path.join(tmp, name), "rb") as f:
                os.fsync(f.fileno())
        if os.path.isdir(path):  # a leftover of a run killed before it recorded this candidate
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(parent)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append ``line`` (no newline inside) to ``path`` and fsync; a torn last line is ended first."""
    if "\n" in line:
        raise ValueError("append_line writes one line: the text must not contain a newline")
    with open(path, "ab+") as f:
        f.seek(0, os.SEEK_END)
        prefix = b""
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":  # a write killed mid-line: close it so it stays one (skipped) bad line
                prefix = b"\n"
        f.write(prefix + line.encode("utf-8") + b"\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike, parse: Callable[[Any], T]) -> list[T]:
    """Every line of ``path`` through ``json.loads`` then ``parse``; a line either rejects is warned about and skipped.

    ``parse`` raises ``ValueError``, ``TypeError``, ``KeyError`` or ``AttributeError`` for a record it cannot use.
    """
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(parse(json.loads(line)))
            except _BAD_RECORD as exc:  # JSONDecodeError is a ValueError
                warnings.warn(f"{path}:{i}: skipping a corrupt or truncated line ({_short(exc)}); "
                              f"its candidate will be recomputed", stacklevel=3)
    return out


def read_json(path: str | os.PathLike, parse: Callable[[Any], T]) -> T | None:
    """``parse(json of path)``, or None (with a warning) when the file is unreadable, truncated or invalid."""
    try:
        with open(path, encoding="utf-8") as f:
            return parse(json.load(f))
    except _BAD_RECORD as exc:  # UnicodeDecodeError is a ValueError
        warnings.warn(f"{path} is corrupt or truncated ({_short(exc)}); ignoring it, it will be recomputed",
                      stacklevel=3)
        return None


@contextlib.contextmanager
def locked(workdir: str | os.PathLike) -> Iterator[None]:
    """Hold ``workdir/.lock`` exclusively while the block runs; raise ``WorkdirBusy`` at once if another
    process has it."""
    path = os.path.join(os.fspath(workdir), LOCK)
    with open(path, "a+") as f:
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip()
                raise WorkdirBusy(f"workdir {os.fspath(workdir)} is in use by another process"
                                  f"{f' (pid {holder})' if holder.isdigit() else ''}; wait for it to finish "
                                  f"or choose another workdir") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."
