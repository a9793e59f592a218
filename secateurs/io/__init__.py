"""Safe save/load: weights as safetensors, the plan as JSON; nothing is unpickled or executed."""
from .saving import load, save

__all__ = ["load", "save"]
