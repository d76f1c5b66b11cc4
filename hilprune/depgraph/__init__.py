"""Dependency-graph analysis: which channel dimensions of a model can be pruned together, and which cannot (and why).

torch-pruning's DependencyGraph does the coupling (residual adds, concats, depthwise convs); this package
adds what it does not do: shapes recorded while tracing, ops whose channel mapping it cannot follow
(channel shuffles, channel reductions) cut out of the graph, a time budget on every group search, grouped
convolutions split into equal units, and a reason for every layer left unpruned.
"""

from .candidates import Candidate, Item, describe
from .search import SearchResult, search_groups
from .trace import Graph, build_graph

__all__ = ["Candidate", "Graph", "Item", "SearchResult", "build_graph", "describe", "search_groups"]
