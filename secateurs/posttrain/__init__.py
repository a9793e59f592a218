"""Post-training pruning: one shot, from calibration data, no retraining (Wanda, SparseGPT, OWL,
BatchNorm recalibration)."""
from .api import METHODS, prune

__all__ = ["METHODS", "prune"]
