"""Number formatting shared by the plots and the HTML/Markdown writers."""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from secateurs.search.candidate import Candidate

_PREFIXES = ("", "K", "M", "G", "T")


def scale(value: float) -> tuple[float, str]:
    """The power of 1000 that keeps ``value`` below 1000 (up to T), as (divisor, prefix)."""
    step = 0
    while abs(value) >= 1000 ** (step + 1) and step < len(_PREFIXES) - 1:
        step += 1
    return 1000.0**step, _PREFIXES[step]


def _scaled(value: float, decimals: int) -> str:
    div, prefix = scale(value)
    return (f"{value:.0f}" if div == 1 else f"{value / div:.{decimals}f}") + (" " + prefix if prefix else "")


def count(value: float) -> str:
    """A parameter count: ``11.69 M``."""
    return _scaled(value, 2)


def macs(value: float) -> str:
    """A MAC count with its unit: ``1.82 GMACs``."""
    div, prefix = scale(value)
    return f"{value:.0f} MACs" if div == 1 else f"{value / div:.2f} {prefix}MACs"


def nbytes(value: float) -> str:
    """Bytes in decimal units, as ``secateurs.measure`` prints them: ``46.8 MB``."""
    div, prefix = scale(value)
    return f"{value:.0f} B" if div == 1 else f"{value / div:.1f} {prefix}B"


def ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def quality_decimals(values: Iterable[float]) -> int:
    """Decimals that show quality differences: 4 for values in [-1, 1] (accuracy), fewer for larger."""
    top = max((abs(v) for v in values), default=1.0)
    return 4 if top <= 1 else 3 if top < 10 else 2 if top < 1000 else 1


def signed(value: float, decimals: int) -> str:
    """``+0.0123`` / ``-0.0040`` / ``0`` (a minus sign, not a hyphen)."""
    text = f"{value:+.{decimals}f}"
    if float(text) == 0:
        return f"{0:.{decimals}f}"
    return text.replace("-", "\u2212")


def method(m: dict[str, Any]) -> str:
    """A method dict as ``criterion=l2, ratio=0.5``."""
    parts = []
    for k, v in m.items():
        if isinstance(v, (dict, list)):
            v = json.dumps(v, separators=(",", ":"))
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def plain(value: Any) -> str:
    """A machine/version value as text (nested values as compact JSON)."""
    if value is None:
        return "\u2014"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def latency(c: Candidate) -> dict[str, Any] | None:
    lat = c.measurement.get("latency")
    return lat or None


def times(before: float, after: float, word_less: str, word_more: str) -> str | None:
    """``2.31× faster`` style comparison of a cost against the baseline's (None when undefined)."""
    if before <= 0 or after <= 0:
        return None
    r = before / after
    if abs(r - 1) < 0.005:
        return "same as baseline"
    return f"{r:.2f}\u00d7 {word_less}" if r > 1 else f"{1 / r:.2f}\u00d7 {word_more}"


def fewer(before: float, after: float, noun: str) -> str | None:
    """``58% fewer MACs`` (or ``12% more``) against the baseline (None when undefined)."""
    if before <= 0:
        return None
    d = 1 - after / before
    if abs(d) < 0.0005:
        return f"same {noun}"
    return f"{100 * d:.1f}% fewer {noun}" if d > 0 else f"{-100 * d:.1f}% more {noun}"
