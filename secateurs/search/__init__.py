"""The balance: sweep candidates, measure them, keep the Pareto front, pick under a constraint."""
from .allocate import allocate, uniform_ratio
from .candidate import COSTS, Candidate, choose, pareto
from .executors import Executor, Job, LocalExecutor, RayExecutor
from .explore import DEFAULT_METHODS, explore, fidelity, read_workdir
from .fastest import latency_sensitivity
from .front import Front, Pick
from .sensitivity import GroupSensitivity, Sensitivity, sensitivity
from .workdir import WorkdirBusy

__all__ = ["COSTS", "Candidate", "DEFAULT_METHODS", "Executor", "Front", "GroupSensitivity", "Job", "LocalExecutor",
           "Pick", "RayExecutor", "Sensitivity", "allocate", "choose", "explore", "fidelity", "latency_sensitivity",
           "pareto", "read_workdir", "sensitivity", "uniform_ratio", "WorkdirBusy"]
