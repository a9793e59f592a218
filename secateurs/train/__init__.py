"""Training-time tools: ``Pruner`` prunes during training along a schedule; regularisers push
weights and channel groups to zero; ``shrink`` removes channels mid-run and carries the optimizer
state along; ``callbacks`` step a Pruner from a plain loop, Lightning or the Hugging Face Trainer;
``recover`` fine-tunes a pruned model, optionally distilled from the dense one."""
from .optim_state import shrink
from .pruner import Pruner
from .recovery import recover
from .regularizers import L1, L2, BNGammaL1, GroupLasso, group_norms, remove_groups_below
from .schedules import SCHEDULES, Constant, Iterative, LotteryTicket, OneShot, Polynomial, Schedule

__all__ = ["BNGammaL1", "Constant", "GroupLasso", "Iterative", "L1", "L2", "LotteryTicket", "OneShot", "Polynomial",
           "Pruner", "SCHEDULES", "Schedule", "group_norms", "recover", "remove_groups_below", "shrink"]
