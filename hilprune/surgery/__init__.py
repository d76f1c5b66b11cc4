"""Structured channel surgery: policy in, smaller dense model out (torch-pruning underneath), after
removing any whole residual blocks the policy names (`blocks`)."""

from .blocks import rank_blocks, residual_blocks, without_blocks
from .counting import macs_and_params
from .importance import IMPORTANCE, make_importance
from .persist import load_pruned, save_pruned
from .surgeon import Surgeon, SurgeryResult

__all__ = [
    "IMPORTANCE",
    "Surgeon",
    "SurgeryResult",
    "load_pruned",
    "macs_and_params",
    "make_importance",
    "rank_blocks",
    "residual_blocks",
    "save_pruned",
    "without_blocks",
]
