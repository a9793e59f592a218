"""Tracing: which channels, neurons and heads of a model are coupled and must be pruned together."""
from .graph import Graph, Group, Unsupported, check_graph, set_mode, trace

__all__ = ["Graph", "Group", "Unsupported", "check_graph", "set_mode", "trace"]
