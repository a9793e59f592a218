"""Hooks for the training loops people use: a plain loop (``fit``), PyTorch Lightning
(``callbacks.lightning.PrunerCallback``) and the Hugging Face ``Trainer``
(``callbacks.hf.PrunerCallback``). The framework modules import their framework, so they are
imported only when asked for."""
from .loop import fit

__all__ = ["fit"]
