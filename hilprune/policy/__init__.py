"""The layer-wise pruning policy: groups, rounding, JSON format and validation."""

from .format import DEFAULT_MAX_RATIO, POLICY_FORMAT, GroupRatio, Policy
from .groups import ExcludedLayer, PrunableGroup, analyse_groups, build_graph, find_groups, groups_signature, output_layer
from .rounding import achieved_ratio, channels_after
from .validate import validate_policy

__all__ = [
    "DEFAULT_MAX_RATIO",
    "ExcludedLayer",
    "POLICY_FORMAT",
    "GroupRatio",
    "Policy",
    "PrunableGroup",
    "achieved_ratio",
    "analyse_groups",
    "build_graph",
    "channels_after",
    "find_groups",
    "groups_signature",
    "output_layer",
    "validate_policy",
]
