"""README's tour runs as written and prints what README shows beside it (lines with this machine's timings aside)."""
import contextlib
import io
import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
# Blocks not run: they read the user's files, take placeholders, train for minutes or start Ray, or print what
# this machine's latency table decides (each is exercised by its own tests and examples).
SKIP = ('load_file("cnn.safetensors")', "finetune=fn", "RayExecutor(", "fit_cached(", 'round_to="auto"',
        "fit(model, batches")
# Shown lines that depend on timing or the machine, and README's own elisions.
VOLATILE = re.compile(r"latency|\bms\b|thread|seconds|^\s*\.\.\.\s*$")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


def tour() -> list[tuple[int, str, str | None]]:
    """(line, code, output shown right after it or None) for every python block of README, in order."""
    text = README.read_text()
    fences = list(FENCE.finditer(text))
    out = []
    for i, f in enumerate(fences):
        if f.group(1) != "python":
            continue
        nxt = fences[i + 1] if i + 1 < len(fences) else None
        shown = nxt.group(2) if nxt is not None and nxt.group(1) == "" and nxt.start() == f.end() else None
        out.append((text.count("\n", 0, f.start()) + 1, f.group(2), shown))
    return out


def _columns(line: str) -> list[str]:
    """README sets two outputs side by side (dense | pruned): each column is a line of its own."""
    return [c.strip() for c in re.split(r"\s{8,}", line) if c.strip()]


def test_the_tour_is_found():
    blocks = tour()
    assert len(blocks) >= 10 and sum(shown is not None for _, _, shown in blocks) >= 6


def test_readme_tour_runs_and_prints_what_readme_shows(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)  # blocks that save write here
    namespace: dict = {"T": transformers}  # the Hugging Face blocks name it so
    exec("import torch, secateurs as sc", namespace)
    checked = 0
    for line, code, shown in tour():
        if any(s in code for s in SKIP):
            continue
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
        if shown is None:
            continue
        text = printed.getvalue() + "".join(f"{w.category.__name__}: {w.message}\n" for w in caught)
        got = " ".join(text.split())
        for row in shown.splitlines():
            if VOLATILE.search(row):
                continue
            for piece in (p for cell in _columns(row) for p in cell.split("...") if p.strip(" .;()")):
                assert " ".join(piece.split()) in got, f"README.md:{line}: shows {piece!r}, the code printed:\n{text}"
                checked += 1
    assert checked >= 20
