"""The evaluator as environments, agents and search jobs see it: a typed Protocol.

`envs.evaluator.PolicyEvaluator` implements it; a test or another backend may implement it too.
Everything here always exists on an evaluator, so callers never probe for attributes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from hilprune.budget import Budget
    from hilprune.data.bundle import Split
    from hilprune.models import ModelSpec
    from hilprune.policy import Policy, PrunableGroup
    from hwprofiler import DeviceSpec

    from .evaluator import EvalResult
    from .fidelity import Fidelity

    Ratios = Mapping[str, float] | Sequence[float] | Policy


class Evaluator(Protocol):
    """Judges pruning policies of one model on one data set and one device."""

    spec: ModelSpec
    groups: list[PrunableGroup]
    input_shape: tuple[int, int, int]
    max_ratio: float
    round_to: int
    latency_source: str
    proxy: str  # the accuracy proxy's ladder, cheap to dear (envs.fidelity): "bn:10,kd:40"
    ladder: list[Fidelity]
    device: DeviceSpec
    fingerprint: dict[str, Any]
    fingerprint_id: str
    train: Split | None
    val: Split | None
    dense_accuracy: float
    dense_latency_ms: float
    dense_lut_latency_ms: float
    dense_macs: int
    dense_measured_at: float  # time.time() when this process measured the dense model
    removed_blocks: list[str]  # residual blocks removed whole before the widths (the groups are the rest's)
    block_ranking: list[tuple[str, float]]  # each removable block and the val accuracy without it, when ranked

    def policy(self, ratios: Ratios, precision: str | Mapping[str, str] | None = None) -> Policy: ...

    def kept(self, ratios: Ratios) -> tuple[int, ...]: ...

    def evaluate(
        self,
        ratios: Ratios,
        *,
        live: bool | None = None,
        fidelity: str | Fidelity | None = None,
        precision: str | Mapping[str, str] | None = None,
    ) -> EvalResult: ...

    def predict_latency(self, ratios: Ratios) -> float: ...

    def predict_kept(self, kept: Sequence[int]) -> float: ...

    def resolve_budget(self, budget: str | float | Budget) -> Budget: ...

    def check_budget(self, budget: str | float | Budget) -> Budget: ...

    def add_budget(self, budget: Budget | float) -> float: ...

    def use_reference(self, dense_ms: float) -> None: ...

    def dense_latency_for(self, result: EvalResult) -> float: ...

    def flush(self) -> None: ...
