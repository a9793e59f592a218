"""Plans and their application: decide what goes, then remove it (or mask it)."""
from ..measure.measurement import register_preview
from .plan import Plan
from .planner import GRANULARITIES, SCOPES, plan, prune
from .surgery import MODES, apply, finalize, preview

register_preview(preview)

__all__ = ["GRANULARITIES", "MODES", "Plan", "SCOPES", "apply", "finalize", "plan", "prune"]
