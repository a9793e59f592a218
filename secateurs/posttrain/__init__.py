"""Post-training pruning: one shot, from calibration data, no retraining (Wanda, SparseGPT, OWL,
BatchNorm recalibration)."""
from .api import METHODS, prune
from .recalibrate import recalibrate

__all__ = ["METHODS", "prune", "recalibrate"]
