"""Pruning schedules: how much sparsity at each training step, as small JSON-serialisable data.

A schedule answers two questions for a step ``t`` (the number of optimizer steps done so far):
``sparsity_at(t)``, the fraction of prunable elements that are pruned from step ``t`` on, and
``prunes_at(t)``, whether the mask is (re)computed at ``t``. Sparsity changes only at pruning
events, so it is constant between them, and a step past the end keeps the final sparsity.

    OneShot(step=100, sparsity=0.8)                     # all at once at step 100
    Iterative(ratio_per_prune=0.2, every=200, final_sparsity=0.9)   # 20% of what is left, every 200 steps
    Polynomial(0.0, 0.9, begin_step=0, end_step=1000, frequency=100)  # Zhu & Gupta 2017, cubic
    Constant(sparsity=0.5, begin_step=0, frequency=100)  # re-selected at a fixed sparsity
    LotteryTicket(Polynomial(...), rewind_step=50)       # Frankle & Carbin 2019, with rewinding
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from .._inputs import check_int, check_real


class Schedule:
    """Base class: ``sparsity_at``, ``prunes_at``, ``end_step``; ``to_dict``/``from_dict`` for JSON."""

    kind: ClassVar[str] = ""
    monotone: ClassVar[bool] = True  # elements pruned once stay pruned (masks only grow)

    def sparsity_at(self, step: int) -> float:
        """The sparsity in effect after ``step`` optimizer steps."""
        raise NotImplementedError

    def prunes_at(self, step: int) -> bool:
        """True when the mask is computed at ``step``."""
        raise NotImplementedError

    end_step: int  # the last pruning event; from then on the sparsity stays ``final`` (a field or a property)

    @property
    def final(self) -> float:
        """The sparsity reached at the end of the schedule."""
        return self.sparsity_at(self.end_step)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-serialisable) with a ``kind`` key that ``from_dict`` dispatches on."""
        return {"kind": self.kind, **asdict(self)}  # type: ignore[call-overload]

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Schedule:
        """Rebuild a schedule written by ``to_dict`` (validated like a direct construction)."""
        if not isinstance(data, dict) or data.get("kind") not in SCHEDULES:
            raise ValueError(f"schedule data must be a dict with 'kind' in {sorted(SCHEDULES)}, got {data!r}")
        cls = SCHEDULES[data["kind"]]
        args = {k: v for k, v in data.items() if k != "kind"}
        names = {f.name for f in fields(cls)}
        if set(args) - names:
            raise ValueError(f"unknown fields for schedule {data['kind']!r}: {sorted(set(args) - names)}")
        if cls is LotteryTicket and isinstance(args.get("schedule"), dict):
            args["schedule"] = Schedule.from_dict(args["schedule"])
        return cls(**args)

    def _check_step(self, step: int) -> int:
        return check_int(step, "step", 0)

    def _checked(self, name: str, check: Callable[..., Any], *limits: Any) -> None:
        """Check field ``name`` with ``check`` (``check_int`` or ``check_real``) and keep what it returns: a
        numpy scalar becomes a Python number, so ``to_dict`` stays JSON."""
        object.__setattr__(self, name, check(getattr(self, name), f"{type(self).__name__}.{name}", *limits))


@dataclass(frozen=True)
class OneShot(Schedule):
    """Prune to ``sparsity`` once, at ``step``."""

    step: int
    sparsity: float
    kind: ClassVar[str] = "one_shot"

    def __post_init__(self) -> None:
        self._checked("step", check_int, 0)
        self._checked("sparsity", check_real, "[0, 1)")

    def sparsity_at(self, step: int) -> float:
        return self.sparsity if self._check_step(step) >= self.step else 0.0

    def prunes_at(self, step: int) -> bool:
        return self._check_step(step) == self.step

    @property
    def end_step(self) -> int:
        return self.step


@dataclass(frozen=True)
class Iterative(Schedule):
    """Remove ``ratio_per_prune`` of the remaining elements every ``every`` steps (first at
    ``begin_step + every``) until ``final_sparsity``: after n events ``min(final, 1 - (1 - r)^n)``
    (Han et al. 2015; the rounds of Frankle & Carbin 2019)."""

    ratio_per_prune: float
    every: int
    final_sparsity: float
    begin_step: int = 0
    kind: ClassVar[str] = "iterative"

    def __post_init__(self) -> None:
        self._checked("ratio_per_prune", check_real, "(0, 1)")
        self._checked("every", check_int, 1)
        self._checked("final_sparsity", check_real, "[0, 1)")
        self._checked("begin_step", check_int, 0)

    @property
    def events(self) -> int:
        """How many pruning events it takes to reach ``final_sparsity``."""
        if self.final_sparsity == 0:
            return 0
        n = math.log(1 - self.final_sparsity) / math.log(1 - self.ratio_per_prune)
        return max(1, math.ceil(n - 1e-9))

    def _index(self, step: int) -> int:
        return min(self.events, max(0, (step - self.begin_step) // self.every))

    def sparsity_at(self, step: int) -> float:
        n = self._index(self._check_step(step))
        return min(self.final_sparsity, 1 - (1 - self.ratio_per_prune) ** n) if n else 0.0

    def prunes_at(self, step: int) -> bool:
        d = self._check_step(step) - self.begin_step
        return d > 0 and d % self.every == 0 and d // self.every <= self.events

    @property
    def end_step(self) -> int:
        return self.begin_step + self.events * self.every


@dataclass(frozen=True)
class Polynomial(Schedule):
    """Gradual pruning (Zhu & Gupta 2017; TensorFlow's ``PolynomialDecay``): at the events
    ``begin_step, begin_step + frequency, ...`` and ``end_step``,
    ``s_t = s_f + (s_i - s_f) * (1 - (t - begin) / (end - begin)) ** power``; 0 before ``begin_step``."""

    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    frequency: int = 100
    power: float = 3.0
    kind: ClassVar[str] = "polynomial"

    def __post_init__(self) -> None:
        self._checked("initial_sparsity", check_real, "[0, 1)")
        self._checked("final_sparsity", check_real, "[0, 1)")
        self._checked("begin_step", check_int, 0)
        self._checked("end_step", check_int, 0)
        if self.end_step < self.begin_step:
            raise ValueError(f"Polynomial.end_step ({self.end_step}) must be >= begin_step ({self.begin_step})")
        self._checked("frequency", check_int, 1)
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(f"Polynomial.initial_sparsity ({self.initial_sparsity}) must be <= final_sparsity "
                             f"({self.final_sparsity})")
        self._checked("power", check_real, "(0, inf)")

    def _last_event(self, step: int) -> int | None:
        if step < self.begin_step:
            return None
        if step >= self.end_step:
            return self.end_step
        return self.begin_step + (step - self.begin_step) // self.frequency * self.frequency

    def sparsity_at(self, step: int) -> float:
        t = self._last_event(self._check_step(step))
        if t is None:
            return 0.0
        span = self.end_step - self.begin_step
        frac = 1.0 if span == 0 else (t - self.begin_step) / span
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1 - frac) ** self.power

    def prunes_at(self, step: int) -> bool:
        step = self._check_step(step)
        return step == self._last_event(step) and self.begin_step <= step <= self.end_step


@dataclass(frozen=True)
class Constant(Schedule):
    """Keep ``sparsity`` from ``begin_step`` on, choosing the mask afresh every ``frequency`` steps
    (pruned weights may come back with their stored values: TensorFlow's ``ConstantSparsity``)."""

    sparsity: float
    begin_step: int = 0
    frequency: int = 100
    kind: ClassVar[str] = "constant"
    monotone: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self._checked("sparsity", check_real, "[0, 1)")
        self._checked("begin_step", check_int, 0)
        self._checked("frequency", check_int, 1)

    def sparsity_at(self, step: int) -> float:
        return self.sparsity if self._check_step(step) >= self.begin_step else 0.0

    def prunes_at(self, step: int) -> bool:
        d = self._check_step(step) - self.begin_step
        return d >= 0 and d % self.frequency == 0

    @property
    def end_step(self) -> int:
        return self.begin_step


@dataclass(frozen=True)
class LotteryTicket(Schedule):
    """Another schedule plus rewinding (Frankle & Carbin 2019; Frankle et al. 2020): the weights
    of step ``rewind_step`` are kept, and when ``schedule`` ends the surviving weights are reset to
    them; training then continues with the final mask."""

    schedule: Schedule
    rewind_step: int = 0
    kind: ClassVar[str] = "lottery_ticket"

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, Schedule) or isinstance(self.schedule, LotteryTicket):
            raise TypeError(f"LotteryTicket.schedule must be a OneShot, Iterative, Polynomial or Constant "
                            f"schedule, got {type(self.schedule).__name__}")
        if isinstance(self.schedule, Constant):
            raise ValueError("LotteryTicket.schedule cannot be Constant: "
                             "it never ends, so there is no point to rewind at")
        self._checked("rewind_step", check_int, 0)
        if self.rewind_step >= self.schedule.end_step:
            raise ValueError(f"LotteryTicket.rewind_step ({self.rewind_step}) must be < the end of its schedule "
                             f"({self.schedule.end_step})")

    @property
    def monotone(self) -> bool:  # type: ignore[override]
        return self.schedule.monotone

    def sparsity_at(self, step: int) -> float:
        return self.schedule.sparsity_at(step)

    def prunes_at(self, step: int) -> bool:
        return self.schedule.prunes_at(step)

    @property
    def end_step(self) -> int:
        return self.schedule.end_step

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "schedule": self.schedule.to_dict(), "rewind_step": self.rewind_step}


SCHEDULES: dict[str, type[Schedule]] = {c.kind: c for c in (OneShot, Iterative, Polynomial, Constant, LotteryTicket)}
