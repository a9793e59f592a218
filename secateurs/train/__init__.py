"""Training-time tools: ``recover`` fine-tunes a pruned model, optionally distilled from the dense one."""
from .recovery import recover

__all__ = ["recover"]
