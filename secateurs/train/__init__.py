"""Training-time tools: ``Pruner`` prunes during training along a schedule; regularisers push
weights and channel groups to zero; ``shrink`` removes channels mid-run and carries the optimizer
state along; ``recover`` fine-tunes a pruned model, optionally distilled from the dense one."""
from .pruner import Pruner
from .recovery import recover
from .schedules import SCHEDULES, Constant, Iterative, LotteryTicket, OneShot, Polynomial, Schedule

__all__ = ["Constant", "Iterative", "LotteryTicket", "OneShot", "Polynomial", "Pruner", "SCHEDULES", "Schedule",
           "recover"]
