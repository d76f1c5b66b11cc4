"""Apply a layer-wise policy to a dense model: channels are physically removed, so the
result is a smaller dense model (and a smaller, faster ONNX graph).

The `Surgeon` analyses the dense model once: torch-pruning's dependency graph (with the ops it
cannot follow cut out, see `hilprune.depgraph`), one group search per channel dimension within
a time budget, a trial prune of every group (kept only when pruning equals zeroing those
channels), and a ranking of every group's channels. Layers that cannot be pruned safely are
listed in `excluded` with the reason. A group's channels are its own (pruning one group never
renumbers another's), so a policy is applied by looking up each group's layers and channels on
the dense graph and calling the pruning functions on a copy: no graph rebuild per policy, cheap
enough for one RL episode each.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from ..depgraph import Candidate, build_graph, describe, search_groups
from ..depgraph.progress import Progress, progress_of
from ..depgraph.search import GROUP_SEARCH_S, TOTAL_SEARCH_S
from ..errors import SurgeryError
from ..policy import ExcludedLayer, Policy, PrunableGroup, output_layer, validate_policy
from ..policy.groups import sort_excluded, to_groups
from .blocks import residual_blocks, without_blocks
from .counting import macs_and_params
from .importance import NEEDS_GRADIENTS, make_importance
from .plan import layer_plan, prune_copy
from .scramble import scrambled
from .trial import validate_groups


@dataclass
class SurgeryResult:
    model: nn.Module
    policy: Policy
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int

    def report(self) -> dict[str, Any]:
        return {
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "params_before": self.params_before,
            "params_after": self.params_after,
        }


def _root_and_fn(model: nn.Module, name: str) -> tuple[nn.Module, Any]:
    module = dict(model.named_modules())[name]
    fn = tp.prune_linear_out_channels if isinstance(module, nn.Linear) else tp.prune_conv_out_channels
    return module, fn


class Surgeon:
    """Prunes copies of one dense model by policy.

    `calibration` (inputs, labels) is needed only for gradient-based criteria (taylor).
    `progress` shows the analysis' progress on stderr when it takes more than a second (None: when
    stderr is a terminal); `search_budget_s` bounds the group searches of the whole model (layers past
    it are left unpruned, "analysis timed out"). `ranking[name]` lists a group's root channels least important first,
    interleaved over its units, so `ranking[name][: removed * units]` removes `removed` per unit.

    `removed_blocks` names residual blocks (`blocks.residual_blocks`) removed whole before the
    analysis: `dense` is then the model without them, the one the groups index, while `full`
    stays the model as given (the teacher, the latency reference, the MACs before); every policy
    this surgeon applies must remove the same blocks.
    """

    def __init__(
        self,
        model: nn.Module,
        input_shape: tuple[int, int, int],
        model_identity: dict[str, Any],
        importance: str = "l1",
        calibration: tuple[torch.Tensor, torch.Tensor] | None = None,
        progress: bool | None = None,
        search_budget_s: float | None = None,
        removed_blocks: Sequence[str] = (),
    ) -> None:
        start = time.monotonic()
        make_importance(importance)  # an unknown criterion fails before any analysis
        self.full = copy.deepcopy(model).cpu().eval()
        self.example = torch.randn(1, *input_shape)
        self.removed_blocks = list(removed_blocks)
        self.dense = self.full
        if self.removed_blocks:
            known = residual_blocks(self.full, self.example)
            unknown = [b for b in self.removed_blocks if b not in known]
            if unknown:
                raise SurgeryError(
                    f"{', '.join(unknown)}: not a removable residual block of {model_identity.get('name')} "
                    f"(removable: {', '.join(known) or 'none'})"
                )
            self.dense = without_blocks(self.full, self.removed_blocks).eval()
        self.identity = model_identity
        self.importance = importance
        with progress_of(progress) as bar:
            bar.stage("tracing", 1)
            self.graph = build_graph(self.dense, self.example)
            bar.advance()
            self._names = {m: n for n, m in self.dense.named_modules()}
            self.groups, self.excluded, self._candidates = self._analyse(bar, search_budget_s)
            self.macs_before, self.params_before = macs_and_params(self.full, self.example)
            bar.stage("ranking", len(self.groups))
            self.ranking = self._rank(calibration, bar)
        self.analysis_s = time.monotonic() - start

    def _analyse(
        self, progress: Progress, search_budget_s: float | None
    ) -> tuple[list[PrunableGroup], list[ExcludedLayer], dict[str, Candidate]]:
        ignored = [m for m in [output_layer(self.dense, self.example)] if m is not None]
        total_s = TOTAL_SEARCH_S if search_budget_s is None else search_budget_s
        found = search_groups(self.graph, ignored, group_s=min(GROUP_SEARCH_S, total_s), total_s=total_s, progress=progress)
        cands = [describe(self.graph, self._names, m, g) for m, g in found.groups]
        excluded = [ExcludedLayer(self._names[m], reason) for m, reason in found.failed]
        excluded += [ExcludedLayer(c.root, c.reason, c.members) for c in cands if c.reason]
        valid = [c for c in cands if c.reason is None]
        trial_input = torch.randn(2, *self.example.shape[1:], generator=torch.Generator().manual_seed(0))
        twin = scrambled(self.dense)
        with torch.no_grad():
            if not torch.isfinite(twin(trial_input)).all():  # random weights overflow this model: use its own
                twin = self.dense
        failed = validate_groups(twin, valid, trial_input, self.graph.is_out_channel_pruning_fn, progress=progress)
        excluded += [ExcludedLayer(c.root, failed[c.root], c.members) for c in valid if c.root in failed]
        valid = [c for c in valid if c.root not in failed]
        return to_groups(self.dense, valid), sort_excluded(self.dense, excluded), {c.root: c for c in valid}

    def _rank(self, calibration: tuple[torch.Tensor, torch.Tensor] | None, progress: Progress) -> dict[str, torch.Tensor]:
        """Root channel indices of each group, least important first (interleaved over units)."""
        imp = make_importance(self.importance)
        if self.importance in NEEDS_GRADIENTS:
            if calibration is None:
                raise ValueError(f"importance {self.importance!r} needs a calibration batch")
            self.dense.zero_grad()
            with torch.enable_grad():
                F.cross_entropy(self.dense(calibration[0]), calibration[1]).backward()
        ranking = {}
        for g in self.groups:
            cand = self._candidates[g.name]
            try:
                scores = imp(cand.group)
            except Exception:  # torch-pruning's criterion cannot score one of the layers: keep channel order
                scores = None
            if scores is None or len(scores) != cand.channels:  # criterion not applicable (e.g. bn-scale without BN)
                scores = torch.arange(cand.channels, dtype=torch.float32)
            scores = scores.detach().float().cpu()
            per_unit = [sorted(unit, key=lambda r: (float(scores[r]), r)) for unit in cand.units]
            ranking[g.name] = torch.tensor([unit[j] for j in range(g.channels) for unit in per_unit], dtype=torch.long)
            progress.advance()
        self.dense.zero_grad(set_to_none=True)
        return ranking

    def policy(self, ratios: Mapping[str, float] | list[float], round_to: int = 1, max_ratio: float = 0.9) -> Policy:
        return Policy.from_ratios(
            self.groups, ratios, self.identity, self.importance, round_to, max_ratio, self.excluded, self.removed_blocks
        )

    def check_blocks(self, policy: Policy) -> None:
        """SurgeryError unless `policy` removes the blocks this surgeon's model was analysed without."""
        if sorted(policy.removed_blocks) != sorted(self.removed_blocks):
            said = ", ".join(policy.removed_blocks) or "none"
            mine = ", ".join(self.removed_blocks) or "none"
            raise SurgeryError(
                f"the policy removes blocks {said}, but the model was analysed removing {mine}: "
                "build the surgeon with the policy's removed_blocks"
            )

    def removed_out_channels(self, policy: Policy) -> dict[str, set[int]]:
        """Output channels each layer loses under `policy` (dense indexing): which dense outputs a
        pruned layer still produces, for least-squares reconstruction (`surgery.reconstruct`)."""
        plan = layer_plan(self._candidates, self.selection(validate_policy(policy, self.groups, self.identity)))
        return {name: set(idxs) for (name, handler), idxs in plan.items() if self.graph.is_out_channel_pruning_fn(handler)}

    def refit(
        self, pruned: nn.Module, policy: Policy, images: torch.Tensor, seed: int = 0, ridge: float | None = None
    ) -> list[str]:
        """Refit, in place, the layers of `pruned` (this surgeon's `apply(policy)`) that lost input
        channels to reproduce the dense layers' outputs on `images` (`surgery.reconstruct`; `ridge`
        None: its DEFAULT_RIDGE); returns the names refitted."""
        from .reconstruct import DEFAULT_RIDGE, reconstruct

        ridge = DEFAULT_RIDGE if ridge is None else ridge
        return reconstruct(pruned, self.dense, images, self.removed_out_channels(policy), ridge=ridge, seed=seed)

    def selection(self, policy: Policy) -> dict[str, list[int]]:
        """Root channels each group of a (validated) policy removes, in dense indexing."""
        units = {g.name: g.units for g in self.groups}
        return {
            g.name: self.ranking[g.name][: (g.channels_before - g.channels_after) * units[g.name]].tolist()
            for g in policy.groups
            if g.channels_after < g.channels_before
        }

    def apply(self, policy: Policy, count: bool = True) -> SurgeryResult:
        """A pruned copy of the dense model; the dense model is left untouched."""
        self.check_blocks(policy)
        policy = validate_policy(policy, self.groups, self.identity)
        policy.excluded = list(self.excluded)
        try:
            model = prune_copy(self.dense, layer_plan(self._candidates, self.selection(policy)))
        except Exception as exc:  # the trial prunes let this group through: say which model, not a traceback
            first = (str(exc).strip().splitlines() or [""])[0]
            raise SurgeryError(f"surgery failed on {self.identity.get('name')}: {type(exc).__name__}: {first}") from exc
        macs, params = macs_and_params(model, self.example) if count else (-1, -1)
        policy.metrics.update(
            {"macs_before": self.macs_before, "macs_after": macs, "params_before": self.params_before, "params_after": params}
        )
        return SurgeryResult(model, policy, self.macs_before, macs, self.params_before, params)
