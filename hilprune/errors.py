"""User-facing errors.

A `HilpruneError` is a mistake the user can fix (bad path, bad policy, unknown model).
The CLI prints its message on one line and exits non-zero, without a traceback.
"""

from __future__ import annotations


class HilpruneError(Exception):
    """An error caused by user input; its message says what is wrong and how to fix it."""


class PolicyError(HilpruneError):
    """A policy file or object that cannot be applied to the model at hand."""


class DataError(HilpruneError):
    """A data set that cannot be found or read."""


class ModelError(HilpruneError):
    """A model name, factory or checkpoint that cannot be resolved."""


class SurgeryError(HilpruneError):
    """Surgery that failed on a model (a layer the analysis let through but pruning could not follow)."""
