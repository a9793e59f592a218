"""Post-training pruning: one shot, from calibration data, no retraining (Wanda, SparseGPT, OWL,
BatchNorm recalibration)."""
from .api import METHODS, prune
from .recalibrate import recalibrate
from .structured import prune_structured

__all__ = ["METHODS", "prune", "prune_structured", "recalibrate"]
