"""The balance: sweep candidates, measure them, keep the Pareto front, pick under a constraint."""
from .candidate import COSTS, Candidate, pareto
from .explore import DEFAULT_METHODS, explore, fidelity
from .front import Front, Pick

__all__ = ["COSTS", "Candidate", "DEFAULT_METHODS", "Front", "Pick", "explore", "fidelity", "pareto"]
