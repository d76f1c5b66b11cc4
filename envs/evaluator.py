"""Policy in, accuracy and device latency out: the one place where a pruning policy is judged.

Everything that does not depend on the policy is done once, at construction: the model and its
checkpoint, the validation subset (from the *val* split, never test), channel ranking (Surgeon),
the dense accuracy, and the device side (`envs.latency.PolicyLatency`: the dense ONNX graph and
its live latency, the kernel map, the device's LUT and predictor). `evaluate(ratios)` then runs,
per new policy:

    surgery -> BN recalibration on K train batches [-> N steps of distillation from the dense model -> BN again]
            -> accuracy on the fixed val subset -> latency from the LUT, the device (live), or both (hybrid)

and caches the result by the rounded policy (`Policy.key()`: the kept channels per group).

How far the accuracy side goes is the *fidelity* (`envs.fidelity`): ``bn:K`` stops after BN
recalibration, ``kd:N`` distills for N steps. The evaluator's `proxy` is a ladder of them (``kd:40``
is ``bn:10,kd:40``); `evaluate(ratios)` scores at its top, `evaluate(ratios, fidelity=...)` at any
rung. The cache keeps each policy's highest fidelity: a cheaper request is answered from it, a
dearer one continues the policy where it stopped (the last policy's model and optimizer are kept,
and the distillation batches are the same for every policy, so ``kd:20`` then ``kd:40`` equals
``kd:40`` directly). Distillation uses train images only; accuracy is always on the val subset.
`predict_latency(ratios)` is the LUT alone through the kernel map: no surgery, well under a
millisecond once the LUT holds the kernels, so environments call it at every step.

Every latency a search compares with a budget is in one frame, the dense reference's: live ones
as paired ratios times the reference, LUT ones as the predicted ratio to the dense model's LUT
price times the reference (`lut_scale`). The reference is one live measurement taken when a job
starts; on a shared VM it landed 6% faster to 11% slower than the predictor's price of the same
graph over 43 searches, and a budget of 0.28 of it in milliseconds, compared with LUT milliseconds,
once let the search believe 4.2x where the device ran 3.5x.
"""

from __future__ import annotations

import atexit
import copy
import logging
import math
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from hilprune.budget import Budget, BudgetError, lowest_budget, resolve_budget, within_budget
from hilprune.data.bundle import Split
from hilprune.errors import HilpruneError, PolicyError
from hilprune.policy import Policy, channels_after, validate_policy
from hilprune.train.bn_recalib import BN_BATCH_SIZE
from hilprune.train.distill import DistillState, KDConfig, SharedBatches, distill
from hwprofiler import device_kernels as price_kernels

from .errors import EnvConfigError
from .fidelity import (
    DEFAULT_BN_BATCHES,
    DEFAULT_PROXY,
    DEFAULT_VAL_SIZE,
    Fidelity,
    canonical_proxy,
    parse_fidelity,
    parse_ladder,
    split_reconstruct,
)
from .latency import PolicyLatency, export_checked
from .precision import MODES as PRECISIONS
from .precision import PROXY_CALIBRATION, SearchPrecision, search_precision

log = logging.getLogger(__name__)

LATENCY_SOURCES = ("lut", "live", "hybrid")
EVAL_BACKENDS = ("auto", "torch", "ort")
EVAL_CHUNK = 250  # images per inference call (both backends)

Ratios = Mapping[str, float] | Sequence[float] | Policy


@dataclass
class EvalResult:
    """One evaluated policy. `latency_ms` is the number the search should use, always in the dense
    reference's milliseconds: when measured live (`latency_kind == "live"`), the policy's latency
    paired with the dense model's, as a ratio (`live_ratio * dense_latency_ms`); else the LUT's
    predicted ratio to the dense model (`lut_latency_ms * lut_scale`). `lut_latency_ms` is the
    predictor's own milliseconds; `live_latency_ms` the policy's own live time, as measured then."""

    policy: Policy
    accuracy: float
    latency_ms: float
    lut_latency_ms: float
    live_latency_ms: float | None
    macs: int
    params: int
    cached: bool = False
    wall_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    latency_kind: str = "lut"
    live_ratio: float | None = None  # live policy / live dense, measured interleaved
    fidelity: str = "bn:10"  # the highest proxy fidelity `accuracy` was measured at (envs.fidelity)
    fidelity_cost_s: float = 0.0  # seconds spent on this policy's accuracy so far, every rung (a cache hit repeats it)
    rungs: list[tuple[str, float]] = field(default_factory=list)  # (fidelity, val accuracy), cheap to dear
    rung_cost_s: dict[str, float] = field(default_factory=dict)  # a rung's cost from scratch: surgery, BN, distillation, its eval

    def key(self) -> tuple[int, ...]:
        return self.policy.key()

    def accuracy_at(self, fidelity: str) -> float | None:
        """The val accuracy measured at `fidelity` (None when this policy was not scored there)."""
        return next((a for f, a in self.rungs if f == fidelity), None)

    def ratios(self) -> dict[str, float]:
        """Requested ratio per group."""
        return self.policy.requested()

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.to_dict(),
            "accuracy": self.accuracy,
            "latency_ms": self.latency_ms,
            "lut_latency_ms": self.lut_latency_ms,
            "live_latency_ms": self.live_latency_ms,
            "macs": self.macs,
            "params": self.params,
            "cached": self.cached,
            "wall_s": self.wall_s,
            "phases": dict(self.phases),
            "latency_kind": self.latency_kind,
            "live_ratio": self.live_ratio,
            "fidelity": self.fidelity,
            "fidelity_cost_s": self.fidelity_cost_s,
            "rungs": [list(r) for r in self.rungs],
            "rung_cost_s": dict(self.rung_cost_s),
        }


@dataclass
class _Partial:
    """The last policy scored: its model where the accuracy side left it, to continue to a dearer rung."""

    key: tuple[int, ...]
    model: torch.nn.Module
    macs: int
    params: int
    kd_steps: int  # distillation steps done (0: BN recalibrated only)
    path_s: float  # seconds of surgery, BN and distillation that produced this state
    state: DistillState | None = None


class PolicyEvaluator:
    """Judge pruning policies of one model on one data set and one device.

    :param model: zoo name, ``file.py:factory``, ``package.module:factory`` or a ``ModelSpec``
    :param dataset: data set name; None only for latency-only use (then accuracy is NaN)
    :param device: hwprofiler device (built-in name, TOML path, ``remote:http://...`` or spec)
    :param latency_source: ``lut`` (predicted), ``live`` (measured every time) or ``hybrid``
        (LUT every time, live for within-budget policies that would enter the best-k or Pareto set)
    :param val_size: images of the val split used for accuracy (the first ones: a fixed subset)
    :param bn_batches, bn_batch_size: BN recalibration on ``bn_batches`` x ``bn_batch_size`` train images
        (a ``bn:N`` rung of `proxy` overrides `bn_batches`)
    :param proxy: the accuracy proxy: a fidelity or a ladder of them (``bn``, ``bn:40``, ``kd:40``,
        ``bn:10,kd:20,kd:80``, with ``ls,`` first to refit the pruned layers by least squares before
        every rung; `envs.fidelity`); `evaluate` scores at its top unless told otherwise
    :param kd: distillation settings of the ``kd`` rungs (`hilprune.train.distill.KDConfig`)
    :param bn_after_kd: recalibrate BN (``bn_batches``) after the distillation steps of a ``kd`` rung,
        before its accuracy is measured
    :param eval_backend: ``torch``, ``ort`` (onnxruntime on the exported pruned graph) or ``auto``
        (onnxruntime where every evaluation exports the graph anyway, else torch; see `_choose_backend`)
    :param budgets: latency budgets (ms, fraction or ``"1.2ms"``) for the hybrid rule; envs add theirs
    :param hybrid_k: size of the best-k set of the hybrid rule
    :param hybrid_margin: the hybrid rule also measures live a policy over a budget by the LUT by at
        most this fraction when it is more accurate than every policy within that budget: a LUT
        error of that size must not hide the best policy (24% on one INT8 policy, cross_device_icl_int8_r20)
    :param lut_path: LUT file (default: hwprofiler's per-fingerprint table in its cache dir)
    :param progress: show a progress bar while the device's predictor is calibrated (first use only)
    :param precision: ``fp32``, ``int8`` or ``mixed``: which graph a policy is judged as (`envs.precision`)
    :param int8_scheme: the INT8 scheme (e.g. ``qdq-u8s8``); None: the device's fastest on its precision table
    :param int8_calibration: train images that calibrate each INT8 graph the proxy scores
    :param remove_blocks: residual blocks removed whole before the widths are searched: their names,
        or a count N (the N whose removal alone costs the least val accuracy after BN
        recalibration, `rank_removable_blocks`). Budgets, the teacher and the dense accuracy stay
        those of the model as given; the groups are those of the model without the blocks.
    """

    def __init__(
        self,
        model: Any,
        dataset: str | None = None,
        device: Any = "ort-cpu-1t",
        checkpoint: str | None = None,
        input_shape: Any = None,
        num_classes: int | None = None,
        latency_source: str = "lut",
        val_size: int | None = DEFAULT_VAL_SIZE,
        max_ratio: float = 0.9,
        round_to: int = 1,
        importance: str = "l1",
        bn_batches: int = DEFAULT_BN_BATCHES,
        data_dir: str | None = None,
        seed: int = 0,
        *,
        proxy: str = DEFAULT_PROXY,
        kd: KDConfig | None = None,
        bn_after_kd: bool = True,
        bn_batch_size: int = BN_BATCH_SIZE,
        eval_backend: str = "auto",
        budgets: Sequence[float | str | Budget] = (),
        hybrid_k: int = 5,
        hybrid_margin: float = 0.3,
        lut_path: str | None = None,
        lock: bool = True,
        progress: bool = False,
        precision: str = "fp32",
        int8_scheme: str | None = None,
        int8_calibration: int = PROXY_CALIBRATION,
        remove_blocks: int | Sequence[str] = (),
    ) -> None:
        torch.set_num_threads(1)
        t_start = time.perf_counter()
        from hilprune.data import load_dataset
        from hilprune.models import ModelSpec, resolve_model
        from hilprune.surgery import Surgeon

        if latency_source not in LATENCY_SOURCES:
            raise EnvConfigError(f"unknown latency_source {latency_source!r}; choose one of {', '.join(LATENCY_SOURCES)}")
        if eval_backend not in EVAL_BACKENDS:
            raise EnvConfigError(f"unknown eval_backend {eval_backend!r}; choose one of {', '.join(EVAL_BACKENDS)}")
        if not (isinstance(max_ratio, (int, float)) and 0.0 < float(max_ratio) < 1.0):
            raise EnvConfigError(f"max_ratio must be in (0, 1), got {max_ratio!r}")
        if not isinstance(round_to, int) or isinstance(round_to, bool) or round_to < 1:
            raise EnvConfigError(f"round_to must be a positive integer, got {round_to!r}")
        if precision not in PRECISIONS:
            raise EnvConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if val_size is not None and int(val_size) < 1:
            raise EnvConfigError(f"val_size must be a positive integer, got {val_size!r}")
        self.latency_source = latency_source
        self.max_ratio = float(max_ratio)
        self.round_to = int(round_to)
        self.importance = importance
        self.ladder, self.bn_batches = parse_ladder(proxy, int(bn_batches))
        self.reconstruct_images = split_reconstruct(proxy)[0]  # `ls:N`: refit by least squares first
        self.reconstruct_ridge: float | None = None  # that refit's ridge; None: the surgery's DEFAULT_RIDGE (benches vary it)
        self.proxy = canonical_proxy(proxy, int(bn_batches))
        self.kd = kd or KDConfig()
        self.bn_after_kd = bool(bn_after_kd)
        self.bn_batch_size = int(bn_batch_size)
        self.seed = int(seed)
        self.hybrid_k = int(hybrid_k)
        if not 0 <= float(hybrid_margin) < 1:
            raise EnvConfigError(f"hybrid_margin must be in [0, 1), got {hybrid_margin!r}")
        self.hybrid_margin = float(hybrid_margin)

        # --- model, data, device ----------------------------------------------------------------
        self.spec = model if isinstance(model, ModelSpec) else resolve_model(model, dataset, input_shape, num_classes, checkpoint)
        self.input_shape: tuple[int, int, int] = self.spec.input_shape
        dense = self.spec.build()
        self.dataset = dataset
        self.train: Split | None = None
        self.val: Split | None = None
        self._augment: dict[str, int | bool] = {"crop_pad": 0, "flip": False}
        if dataset:
            bundle = load_dataset(dataset, data_dir)
            if tuple(bundle.input_shape) != self.input_shape:
                raise EnvConfigError(
                    f"model input shape {self.input_shape} does not match data set {dataset!r} ({tuple(bundle.input_shape)})"
                )
            self.train = bundle.train
            self.val = bundle.val.subset(int(val_size) if val_size is not None else None)
            from hilprune.train import augmentation_for

            self._augment = augmentation_for(bundle)
        self.val_size = len(self.val) if self.val is not None else 0

        # --- channel ranking and the dense graph ----------------------------------------------------
        calibration = None
        if importance == "taylor":
            if self.train is None:
                raise EnvConfigError("importance 'taylor' needs a dataset (gradients on a calibration batch)")
            calibration = (self.train.x[:64], self.train.y[:64])
        self.block_ranking: list[tuple[str, float]] = []  # (block, val accuracy without it), when ranked
        self.removed_blocks = self._blocks_to_remove(dense, remove_blocks, progress)
        self.surgeon = Surgeon(
            dense, self.input_shape, self.spec.identity(), importance=importance, calibration=calibration,
            removed_blocks=self.removed_blocks,
        )  # fmt: skip
        self.groups = self.surgeon.groups
        if not self.groups:
            raise EnvConfigError(f"model {self.spec.name!r} has no prunable layer groups")
        self.dense_macs = int(self.surgeon.macs_before)
        self.dense_params = int(self.surgeon.params_before)

        # --- the device: LUT, kernel map(s), dense live latency -------------------------------------
        self.precision: SearchPrecision = SearchPrecision()
        dense_onnx: bytes | None = None  # exported here only when the precision needs it, then reused below
        if precision != "fp32":
            import hwprofiler

            try:
                spec = hwprofiler.load_device(device)
            except hwprofiler.DeviceError as exc:
                raise EnvConfigError(str(exc)) from None
            # the schemes timed on this model's own dense graph: a reference conv stack can rank them the other way round
            dense_onnx = export_checked(self.surgeon.dense, self.input_shape, spec.batch)
            self.precision = search_precision(precision, spec, int8_scheme, int8_calibration, model=dense_onnx)
        scheme = self.precision.scheme
        self.latency = PolicyLatency(
            self.surgeon,
            self.input_shape,
            device,
            max_ratio=self.max_ratio,
            round_to=self.round_to,
            latency_source=latency_source,
            name=self.spec.name,
            seed=self.seed,
            lut_path=lut_path,
            lock=lock,
            calibrate_progress=progress,
            int8_structure=self.precision.structure if scheme is not None else None,
            int8_name=scheme.name if scheme is not None else "int8",
            dense_onnx=dense_onnx,
        )
        lat = self.latency  # fixed after construction: plain attributes for callers and tests
        self.device, self.fingerprint_id, self.fingerprint = lat.device, lat.fingerprint_id, lat.fingerprint
        self.lut, self.predictor, self.kmap, self.kmap_ok = lat.lut, lat.predictor, lat.kmap, lat.kmap_ok
        self.dense_onnx, self.dense_kernels, self.dense_measurement = lat.dense_onnx, lat.dense_kernels, lat.dense_measurement
        self.dense_latency_ms, self.dense_lut_latency_ms = lat.dense_latency_ms, lat.dense_lut_latency_ms
        self.dense_measured_at = lat.measured_since

        # --- accuracy backend and dense accuracy ----------------------------------------------------
        self.eval_backend = "torch"
        self.dense_accuracy = float("nan")
        if self.val is not None:
            self._choose_backend(eval_backend)

        # --- bookkeeping ------------------------------------------------------------------------------
        self.budgets_ms: list[float] = []
        for b in budgets:
            self.add_budget(self.resolve_budget(b))
        self._cache: dict[tuple[int, ...], EvalResult] = {}
        self._slower_memo: dict[tuple[int, ...], list[str]] = {}  # `int8_slower_groups` per widths and fits
        self._kernel_memo: dict[tuple[int, ...], list[Any]] = {}  # kernels `_faster_precision` priced, for `evaluate`
        self._mixed_map: Any = None  # MixedKernelMap, built on the first mixed policy; False where it cannot be used
        self._points: list[tuple[float, float]] = []  # (accuracy, LUT ms) of every policy scored at the top rung (hybrid rule)
        self._partial: _Partial | None = None
        self._batches: SharedBatches | None = None  # distillation batches with the teacher's logits, shared by every policy
        self._shares: list[float] | None = None  # group_latency_shares, computed on first use
        self.n_evaluations = 0
        self.n_cache_hits = 0
        self.setup_s = time.perf_counter() - t_start
        _LIVE.add(self)

    def __deepcopy__(self, memo: dict) -> PolicyEvaluator:
        # A shared service, not a value: gym.make deep-copies env kwargs (evaluator=...), keep one.
        return self

    # ------------------------------------------------------------------------------------------------
    # construction helpers
    def _blocks_to_remove(self, dense: torch.nn.Module, wanted: int | Sequence[str], progress: bool = False) -> list[str]:
        """The block names `remove_blocks` asks for (a count: the least harmful ones by val accuracy)."""
        if isinstance(wanted, str):
            wanted = [b.strip() for b in wanted.split(",") if b.strip()]
        if not isinstance(wanted, (int, np.integer)) or isinstance(wanted, bool):
            if isinstance(wanted, bool) or not all(isinstance(b, str) for b in wanted):
                raise EnvConfigError(f"remove_blocks must be a count >= 0 or block names, got {wanted!r}")
            return list(wanted)
        n = int(wanted)
        if n < 0:
            raise EnvConfigError(f"remove_blocks must be a count >= 0 or block names, got {n}")
        if n == 0:
            return []
        self.block_ranking = self.rank_removable_blocks(dense, progress)
        if n > len(self.block_ranking):
            raise EnvConfigError(f"{self.spec.name} has {len(self.block_ranking)} removable residual blocks; cannot remove {n}")
        return [name for name, _ in self.block_ranking[:n]]

    def rank_removable_blocks(self, dense: torch.nn.Module, progress: bool = False) -> list[tuple[str, float]]:
        """Every removable residual block of `dense` with the val accuracy of the model without it
        (BN recalibrated on this evaluator's train images), the least harmful first (`progress`: a
        bar with the time left)."""
        from hilprune.surgery import rank_blocks, residual_blocks
        from hilprune.train import evaluate as torch_eval
        from hilprune.train import recalibrate_bn

        if self.val is None or self.train is None:
            raise EnvConfigError("removing the N least harmful blocks ranks them by val accuracy: give a dataset")
        train, val = self.train, self.val

        def score(model: torch.nn.Module) -> float:
            recalibrate_bn(model, train, self.bn_batches, batch_size=self.bn_batch_size, seed=self.seed)
            return float(torch_eval(model, val, batch_size=EVAL_CHUNK))

        blocks = residual_blocks(dense, torch.randn(1, *self.input_shape))
        return rank_blocks(dense, blocks, score, progress=progress)

    def _choose_backend(self, wanted: str) -> None:
        """Pick torch or onnxruntime for accuracy. `auto` takes onnxruntime where every evaluation
        exports the graph anyway (live latency, or no kernel map) and its accuracy agrees with
        torch's on a half-pruned probe, else torch: a rule, not a timing, so a seeded search makes
        the same choice on every run and machine."""
        from hilprune.export import to_onnx_bytes
        from hilprune.train import evaluate as torch_eval

        self.eval_backend = "torch"
        val = self._split("val")
        exports_anyway = self.latency_source == "live" or not self.kmap_ok
        if wanted == "ort" or (wanted == "auto" and exports_anyway):
            probe = self.surgeon.apply(self.policy([self.max_ratio / 2] * len(self.groups)), count=False).model
            acc_torch = torch_eval(probe, val, batch_size=EVAL_CHUNK)
            try:
                acc_ort = self._eval_ort(to_onnx_bytes(probe, self.input_shape, batch=self.device.batch))
            except Exception as exc:  # a graph onnxruntime cannot batch: stay on torch
                if wanted == "ort":
                    raise EnvConfigError(f"eval_backend 'ort' failed: {exc}") from None
                log.info("onnxruntime evaluation unavailable (%s): using torch", exc)
            else:
                if abs(acc_ort - acc_torch) * len(val) > max(1.0, 0.002 * len(val)):
                    log.warning("onnxruntime and torch disagree on accuracy (%.4f vs %.4f): using torch", acc_ort, acc_torch)
                else:
                    self.eval_backend = "ort"
        if self.eval_backend == "ort":  # the model as given (with any removed blocks): what a user compares with
            self.dense_accuracy = float(self._eval_ort(self.latency.reference_onnx))
        else:
            self.dense_accuracy = float(torch_eval(self.surgeon.full, val, batch_size=EVAL_CHUNK))

    # ------------------------------------------------------------------------------------------------
    # public API
    @property
    def has_lut(self) -> bool:
        return self.latency.has_lut

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    def policy(self, ratios: Ratios, precision: str | Mapping[str, str] | None = None) -> Policy:
        """The rounded policy for per-group ratios (dict by group name, list in group order, or a
        Policy), its groups marked fp32 or int8 as this evaluator's precision mode says
        (`envs.precision.SearchPrecision.mark`; `precision` marks them in ``mixed`` mode)."""
        if isinstance(ratios, Policy):
            policy = validate_policy(copy.deepcopy(ratios), self.groups, self.spec.identity())
            return self.precision.mark(policy, precision, given_policy=True)
        if isinstance(ratios, np.ndarray):
            ratios = [float(r) for r in ratios.ravel()]
        values = dict(ratios) if isinstance(ratios, Mapping) else [float(r) for r in ratios]
        policy = self.surgeon.policy(values, round_to=self.round_to, max_ratio=self.max_ratio)
        return self.precision.mark(policy, precision, given_policy=False)

    def cache_key(self, policy: Policy) -> tuple[int, ...]:
        """What identifies a judged policy: its kept channels, and its INT8 marks when the search quantizes."""
        return policy.key() + self.precision.bits(policy)

    def kept(self, ratios: Ratios) -> tuple[int, ...]:
        """Kept channels per group (the policy key) without building a Policy: fast path."""
        if isinstance(ratios, Policy):
            return self.policy(ratios).key()
        if isinstance(ratios, Mapping):
            missing = [g.name for g in self.groups if g.name not in ratios]
            if missing:
                raise PolicyError(f"policy has no ratio for group(s) {', '.join(missing[:5])}")
            values = [ratios[g.name] for g in self.groups]
        else:
            values = list(np.asarray(ratios, dtype=float).ravel()) if not isinstance(ratios, list) else ratios
            if len(values) != len(self.groups):
                raise PolicyError(f"expected {len(self.groups)} ratios (one per group), got {len(values)}")
        out = []
        for g, r in zip(self.groups, values):
            r = float(r)
            if not (0.0 <= r <= self.max_ratio + 1e-9):  # also refuses NaN
                raise PolicyError(f"group {g.name!r}: ratio {r} is outside [0, {self.max_ratio}] (max_ratio)")
            out.append(channels_after(g.channels, r, self.round_to))
        return tuple(out)

    def resolve_budget(self, budget: str | float | Budget) -> Budget:
        """A budget as written (0.5, "50%", "1.2ms") resolved against this evaluator's dense reference."""
        if isinstance(budget, Budget):
            return budget
        if isinstance(budget, (np.floating, np.integer)):
            budget = float(budget)
        return resolve_budget(budget, self.dense_latency_ms)

    def min_latency_ms(self) -> float:
        """LUT latency with every group pruned at max_ratio, in the dense reference's frame: the
        lowest budget that can be met (``int8``, ``mixed``: the lower of the all-fp32 and the
        all-INT8 graph)."""
        floor = self.latency.min_latency_ms()
        if self.precision.quantizes:
            floor = min(floor, self.latency.min_latency_ms(quant=True))
        return floor * self.lut_scale

    def check_budget(self, budget: str | float | Budget) -> Budget:
        """The resolved budget; BudgetError when pruning every group at max_ratio cannot meet it (by
        the LUT). A budget the dense model already meets is accepted with a warning."""
        b = self.resolve_budget(budget)
        if b.ms >= self.dense_latency_ms:
            log.warning(
                "budget %s (%.4g ms) is at or above the dense model's %.4g ms on %s: the dense model already meets it",
                b.label,
                b.ms,
                self.dense_latency_ms,
                self.device.name,
            )
        if self.has_lut:
            floor = self.min_latency_ms()
            if not within_budget(floor, b.ms):
                raise BudgetError(
                    f"budget {b.label} ({b.ms:.4g} ms) cannot be met: pruning every group at max_ratio={self.max_ratio} "
                    f"still takes {floor:.4g} ms on {self.device.name} by the LUT (dense: {self.dense_latency_ms:.4g} ms "
                    f"live); raise the budget to at least {lowest_budget(floor / self.dense_latency_ms)} of the dense latency, "
                    f"or raise --max-ratio{self._blocks_hint()}",
                    floor=floor / self.dense_latency_ms,
                )
        return b

    def _blocks_hint(self) -> str:
        """The budget error's last option: residual blocks this model could still lose whole."""
        from hilprune.surgery import residual_blocks

        left = len(residual_blocks(self.surgeon.dense, self.surgeon.example))
        return f", or remove some of its {left} residual blocks whole (--remove-blocks N)" if left else ""

    def add_budget(self, budget: Budget | float) -> float:
        """Register a budget (resolved, or in milliseconds) for the hybrid rule (idempotent); returns its ms."""
        ms = budget.ms if isinstance(budget, Budget) else float(budget)
        if not (ms > 0 and math.isfinite(ms)):
            raise BudgetError(f"budget must be a positive number of milliseconds, got {ms!r}")
        if not any(abs(ms - b) <= 1e-12 for b in self.budgets_ms):
            self.budgets_ms.append(ms)
        return ms

    def use_reference(self, dense_ms: float) -> None:
        """Take `dense_ms` (a job's recorded dense reference) as the frame paired live latencies
        are expressed in, instead of this process's own measurement of the dense model."""
        if not (dense_ms > 0 and math.isfinite(dense_ms)):
            raise EnvConfigError(f"the dense reference must be a positive number of milliseconds, got {dense_ms!r}")
        self.dense_latency_ms = float(dense_ms)

    def predict_latency(self, ratios: Ratios) -> float:
        """LUT latency of a policy in ms (no surgery when the kernel map works): its fp32 graph,
        or, when the search quantizes, the faster of its all-INT8 and its fp32 graph (what
        `evaluate` judges an all-INT8 policy as; a mixed policy's own marks are priced there)."""
        return self.predict_kept(self.kept(ratios))

    def predict_kept(self, kept: Sequence[int]) -> float:
        """LUT latency for kept channels per group (what `kept()` returns), priced as `predict_latency`."""
        key = tuple(int(k) for k in kept)
        fp32 = self.latency.predict_key(key)
        ms = min(fp32, self.latency.predict_key(key, quant=True)) if self.precision.quantizes else fp32
        return ms * self.lut_scale

    @property
    def lut_scale(self) -> float:
        """What turns the predictor's milliseconds into the dense reference's frame: the reference's
        live latency over its LUT price (1 without a LUT). Budgets are fractions of the live
        reference, so a LUT price is judged by its predicted ratio to the dense model, as a live
        time is judged by its paired ratio."""
        lut = self.dense_lut_latency_ms
        return self.dense_latency_ms / lut if math.isfinite(lut) and lut > 0 else 1.0

    def kernels_for(self, kept: Sequence[int]) -> list[Any]:
        """The device kernels of the pruned model that keeps `kept` channels per group."""
        return self.latency.kernels_for(kept)

    def kernels_of(self, ratios: Ratios, precision: str | Mapping[str, str] | None = None) -> list[Any]:
        """The device kernels `evaluate` prices a policy by: its fp32 graph's, or its INT8 graph's
        (all INT8: the INT8 kernel map; mixed: the mixed kernel map, else the structure of its own
        quantized export)."""
        policy = self.policy(ratios, precision)
        return self._priced_kernels(policy, lambda: self._fp32_graph(policy))

    def _fp32_graph(self, policy: Policy) -> bytes:
        """The pruned model's fp32 ONNX graph, for pricing (surgery only: weights do not matter)."""
        from hilprune.export import to_onnx_bytes

        return to_onnx_bytes(self.surgeon.apply(policy, count=False).model, self.input_shape, batch=self.device.batch)

    def _faster_precision(self, policy: Policy) -> Policy:
        """The policy as marked, less INT8 where the device prices it slower (narrow convs: INT8's
        fixed per-kernel costs outweigh its faster MACs). In a ``mixed`` search each group marked
        int8 whose own kernels the LUT prices slower in INT8 than in fp32 is marked fp32
        (`int8_slower_groups`), unless that mixed graph prices slower than the graph as marked
        (the quantize/dequantize at the new fp32/INT8 borders cost more than the groups save):
        the faster of the two is kept (`int8_slower_groups_kept` records a refusal). Then, in any
        mode, a policy whose INT8 graph prices slower than its fp32 graph is judged all fp32
        (`int8_slower`)."""
        if not self.precision.is_int8(policy) or not self.has_lut:
            return policy
        marked_ms: float | None = None
        if self.precision.mode == "mixed":
            slower = [g for g in self.int8_slower_groups(policy.key()) if g in policy.int8_groups()]
            if slower:
                marked_ms, as_marked = self._marked_ms(policy), policy.precisions()
                policy.set_precision(dict.fromkeys(slower, "fp32"))
                demoted_ms = self._marked_ms(policy) if policy.int8_groups() else self.latency.predict_key(policy.key())
                if demoted_ms <= marked_ms:
                    policy.metrics["int8_slower_groups"] = slower
                    marked_ms = demoted_ms if policy.int8_groups() else None
                else:
                    policy.set_precision(as_marked)
                    policy.metrics["int8_slower_groups_kept"] = {
                        "groups": slower, "marked_lut_ms": marked_ms, "demoted_lut_ms": demoted_ms,
                    }  # fmt: skip
            if not policy.int8_groups():
                return policy
        if marked_ms is None:
            marked_ms = self._marked_ms(policy)
        fp32_ms = self.latency.predict_key(policy.key())
        if marked_ms <= fp32_ms:
            return policy
        policy.set_precision("fp32")
        policy.metrics["int8_slower"] = {"int8_lut_ms": marked_ms, "fp32_lut_ms": fp32_ms}
        return policy

    def _marked_ms(self, policy: Policy) -> float:
        """LUT latency of the policy's (partly) INT8 graph as marked; its kernels are kept for the
        `evaluate` call about to score it (a new pattern of marks costs a quantization of the dense
        graph, or, without the mixed kernel map, an export and a quantization)."""
        key = self.cache_key(policy)
        hit = self.latency.priced(key, quant=True)  # a policy priced before needs no export
        if hit is not None:
            return hit
        kernels = self._priced_kernels(policy, lambda: self._fp32_graph(policy))
        if len(self._kernel_memo) > 64:  # kernels of the policies about to be scored, not a history
            self._kernel_memo.clear()
        self._kernel_memo[key] = kernels
        return self.latency.predict_key(key, kernels, quant=True)

    def int8_slower_groups(self, key: Sequence[int]) -> list[str]:
        """Groups whose own kernels the LUT prices slower in INT8 than in fp32 at these widths
        (`DeviceLatency.group_costs` of the all-INT8 and the fp32 graph); empty where a kernel map
        cannot follow the model."""
        fits = tuple(p.correction.n for p in (self.latency.predictor, self.latency.predictor_q) if p is not None)
        kept = tuple(int(k) for k in key) + fits  # a refitted predictor prices again
        hit = self._slower_memo.get(kept)
        if hit is None:
            widths = kept[: len(self.groups)]
            q = self.latency.group_costs(widths, quant=True) if self.precision.quantizes else None
            f = self.latency.group_costs(widths) if q is not None else None
            hit = [] if q is None or f is None else [g.name for g, a, b in zip(self.groups, q, f) if a > b]
            if len(self._slower_memo) > 256:
                self._slower_memo.clear()
            self._slower_memo[kept] = hit
        return list(hit)

    def _priced_kernels(self, policy: Policy, onnx_bytes: Any) -> list[Any]:
        """`kernels_of` for a marked policy; `onnx_bytes()` exports its fp32 graph when the maps cannot."""
        if self.precision.is_int8(policy):
            if policy.graph_precision() == "int8" and self.latency.kmap_q_ok:
                return list(self.latency.kmap_q.kernels(list(policy.key())))
            mixed = self.mixed_kernel_map()
            if mixed is not None:
                return list(mixed.kernels(list(policy.key()), _fp32_groups(policy)))
            return self._structure_kernels(policy, onnx_bytes())  # a mixed graph: its own INT8 structure
        if self.kmap_ok:
            return list(self.kmap.kernels(list(policy.key())))
        return price_kernels(onnx_bytes(), self.device, batch=self.device.batch)

    def _structure_kernels(self, policy: Policy, fp32_onnx: bytes) -> list[Any]:
        """The device kernels of the policy's own INT8 (or mixed) graph, from its fp32 export."""
        return price_kernels(self.precision.structure(fp32_onnx, policy), self.device, batch=self.device.batch)

    def mixed_kernel_map(self) -> Any:
        """The mixed-precision kernel map (`hilprune.kernel_map.MixedKernelMap`) of a ``mixed``
        search, built on first use and kept only where it reproduces two real mixed exports (as
        the float and INT8 maps are checked); None where it cannot be used (a remote device, no
        float map, a graph it cannot follow): a mixed policy is then priced by its own export."""
        if self._mixed_map is None:
            self._mixed_map = False
            if self.precision.mode == "mixed" and self.kmap_ok and not self.device.is_remote:
                self._mixed_map = self._checked_mixed_map() or False
        return self._mixed_map or None

    def _checked_mixed_map(self) -> Any:
        from hilprune.kernel_map import MixedKernelMap

        names = [g.name for g in self.groups]

        def structure(fp32_groups: frozenset[str]) -> bytes:  # the dense graph, quantized but for fp32_groups
            marks = {n: "fp32" if n in fp32_groups else "int8" for n in names}
            return self.precision.structure(self.kmap.dense_onnx, self.policy([0.0] * len(names), marks))

        try:
            mixed = MixedKernelMap(self.kmap, structure)
            rng = np.random.default_rng(self.seed + 54321)
            for i in range(2):  # two random mixed policies, priced by the map and by their own export
                ratios = [float(rng.uniform(0.05, self.max_ratio)) for _ in names]
                marks = {n: str(rng.choice(["fp32", "int8"])) for n in names} | {names[i % len(names)]: "fp32"}
                marks[names[(i + 1) % len(names)]] = "int8"  # both kinds (a one-group model has no mixed policy)
                policy = self.policy(ratios, marks)
                real = self._structure_kernels(policy, self._fp32_graph(policy))
                if mixed.kernels(list(policy.key()), _fp32_groups(policy)) != real:
                    log.warning(
                        "mixed kernel map of %s does not match real exports: mixed policies are priced by export", self.spec.name
                    )
                    return None
            return mixed
        except Exception as exc:  # a graph it cannot follow: each mixed policy is priced by its own export
            log.info("mixed kernel map unavailable for %s (%s): mixed policies are priced by export", self.spec.name, exc)
            return None

    def prefill(self, grid_step: float = 0.05, progress: bool = True) -> int:
        """Measure every kernel a policy on the ratio grid can produce (a cold LUT otherwise fills
        itself during the first episodes); returns how many were measured."""
        return self.latency.prefill(grid_step, progress)

    def group_latency_shares(self) -> list[float]:
        """Each group's share of the dense model's LUT latency (kernels split between the groups
        that set their input and output channels); sums to at most 1."""
        if self._shares is None:
            self._shares = self.latency.group_shares()
        return list(self._shares)

    # ------------------------------------------------------------------------------------------------
    def evaluate(
        self,
        ratios: Ratios,
        *,
        live: bool | None = None,
        fidelity: str | Fidelity | None = None,
        precision: str | Mapping[str, str] | None = None,
    ) -> EvalResult:
        """Accuracy and latency of a policy (cached by its rounded form and INT8 marks).

        `fidelity` is the proxy rung to score accuracy at (default: the top of `ladder`); a
        policy already scored at that rung or a dearer one is answered from the cache. `live=True`
        forces a live measurement (e.g. to confirm a final policy), `live=False` forbids one; None
        follows `latency_source` at the top rung and takes the LUT below it (a cheap rung decides
        whether a policy is worth more, not whether it meets a budget). `precision` marks groups
        fp32 or int8 in a ``mixed`` search (`policy`). A policy with INT8 groups is judged as its
        INT8 graph: accuracy by onnxruntime, latency live and by the LUT of that graph; where the
        LUT prices that graph slower than the same widths in fp32, as the fp32 graph
        (`_faster_precision`: the search never keeps INT8 where the device measured it slower).
        """
        t0 = time.perf_counter()
        policy = self._faster_precision(self.policy(ratios, precision))
        key = self.cache_key(policy)
        kept = policy.key()
        int8 = self.precision.is_int8(policy)
        want = self.fidelity(fidelity)
        hit = self._cache.get(key)
        has_accuracy = hit is not None and (self.val is None or parse_fidelity(hit.fidelity) >= want)
        if hit is not None and has_accuracy and not (live and hit.live_latency_ms is None):
            self.n_cache_hits += 1
            policy.metrics.update(dict(hit.policy.metrics))
            return replace(
                hit,
                policy=policy,
                cached=True,
                wall_s=time.perf_counter() - t0,
                phases={"cache": time.perf_counter() - t0},
                rungs=list(hit.rungs),
                rung_cost_s=dict(hit.rung_cost_s),
            )
        phases: dict[str, float] = {}
        top = want >= self.ladder[-1]
        scored = self._scored_model(policy, want if not has_accuracy else None, phases)
        model = scored.model
        spent = 0.0 if has_accuracy else sum(phases.values())  # surgery, BN, distillation done for accuracy by this call

        exported: list[bytes] = []

        def onnx_bytes() -> bytes:  # exported once, when first needed (ORT accuracy, live latency, no kernel map)
            if not exported:
                from hilprune.export import to_onnx_bytes

                t_exp = time.perf_counter()
                exported.append(to_onnx_bytes(model, self.input_shape, batch=self.device.batch))
                phases["export"] = time.perf_counter() - t_exp
            return exported[0]

        quantized: list[bytes] = []

        def graph_bytes() -> bytes:  # the graph the device would run: the INT8 one when any group is int8
            if not int8:
                return onnx_bytes()
            if not quantized:
                t_q = time.perf_counter()
                if self.train is not None:
                    quantized.append(self.precision.quantize(onnx_bytes(), policy, self.train.x.numpy(), self.device.batch))
                else:  # latency only: the graph's structure is all that is priced and timed
                    quantized.append(self.precision.structure(onnx_bytes(), policy))
                phases["quantize"] = time.perf_counter() - t_q
            return quantized[0]

        def timed(name: str, fn: Any) -> Any:  # a phase's time, less any export it triggered
            before, t = phases.get("export", 0.0), time.perf_counter()
            out = fn()
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - t - (phases.get("export", 0.0) - before)
            return out

        rungs = list(hit.rungs) if hit is not None else []
        rung_cost = dict(hit.rung_cost_s) if hit is not None else {}
        accuracy = hit.accuracy if hit is not None and has_accuracy else float("nan")
        reached = hit.fidelity if hit is not None and has_accuracy else str(want)
        if self.val is not None and not has_accuracy:
            if int8:
                accuracy = timed("eval", lambda: self._eval_ort(graph_bytes()))
            else:
                accuracy = timed("eval", lambda: self._accuracy(model, onnx_bytes))
            prep = phases.get("export", 0.0) + phases.get("quantize", 0.0)
            spent += phases["eval"] + prep
            rung_cost[str(want)] = scored.path_s + phases["eval"] + prep
            rungs = sorted([r for r in rungs if r[0] != str(want)] + [(str(want), accuracy)], key=lambda r: parse_fidelity(r[0]))
            reached = str(want)

        def kernels() -> list[Any]:  # priced once, when needed (a mixed graph's cost an export and a quantization)
            if not priced:
                priced.append(self._kernel_memo.pop(key, []) or self._priced_kernels(policy, onnx_bytes))
            return priced[0]

        priced: list[list[Any]] = []

        def latency_phase() -> tuple[float, Any]:
            lut, pair = float("nan"), None
            if self.has_lut:
                lut_key = key if int8 else kept
                known = self.latency.priced(lut_key, quant=int8)
                lut = known if known is not None else self.latency.predict_key(lut_key, kernels(), quant=int8)
            if live is True or (
                live is None
                and top
                and (self.latency_source == "live" or (self.latency_source == "hybrid" and self._wants_live(accuracy, lut)))
            ):
                expected = lut / self.dense_lut_latency_ms if self.has_lut and math.isfinite(lut) else None
                bridged = policy.graph_precision() == "int8"  # paired with the dense INT8 graph (hwprofiler.bridge)
                pair = self.latency.measure_paired(graph_bytes(), expected_ratio=expected, int8=bridged)
                if self.has_lut:  # in the predictor's own frame: the ratio times the reference's LUT price
                    self.latency.observe(kernels(), pair.ratio * self.dense_lut_latency_ms, quant=int8)
            return lut, pair

        live_ms: float | None
        live_ratio: float | None
        if hit is not None and hit.live_latency_ms is not None:  # measured live already: keep it
            lut_ms, live_ms, live_ratio = hit.lut_latency_ms, hit.live_latency_ms, hit.live_ratio
        else:
            lut_ms, pair = timed("latency", latency_phase)
            live_ms = None if pair is None else float(pair.model.latency_ms)
            live_ratio = None if pair is None else float(pair.ratio)
        self.latency.maybe_flush()

        # The dense reference's frame, so budgets are judged on ratios: the paired live ratio, or the LUT's.
        latency = live_ratio * self.dense_latency_ms if live_ratio is not None else lut_ms * self.lut_scale
        policy = hit.policy if hit is not None else policy
        policy.metrics.update(
            {
                "macs_before": self.dense_macs,
                "macs_after": scored.macs,
                "params_before": self.dense_params,
                "params_after": scored.params,
                "accuracy": accuracy,
                "latency_ms": latency,
                "lut_latency_ms": lut_ms,
                "live_latency_ms": live_ms,
                "live_ratio": live_ratio,
                "latency_source": self.latency_source,
                "device": self.device.name,
                "device_fingerprint": self.fingerprint_id,
                "dataset": self.dataset,
                "split": "val",
                "val_size": self.val_size,
                "bn_batches": self.bn_batches,
                "fidelity": reached,
                "precision": policy.graph_precision(),
                "int8_scheme": self.precision.scheme.name if int8 and self.precision.scheme else None,
            }
        )
        cost = (hit.fidelity_cost_s if hit is not None else 0.0) + spent
        result = EvalResult(
            policy=policy,
            accuracy=accuracy,
            latency_ms=latency,
            lut_latency_ms=lut_ms,
            live_latency_ms=live_ms,
            live_ratio=live_ratio,
            macs=scored.macs,
            params=scored.params,
            cached=False,
            wall_s=time.perf_counter() - t0,
            phases=phases,
            latency_kind="live" if live_ms is not None else "lut",
            fidelity=reached,
            fidelity_cost_s=cost,
            rungs=rungs,
            rung_cost_s=rung_cost,
        )
        self._cache[key] = result
        if top and not has_accuracy:
            self._points.append((accuracy, lut_ms))
        self.n_evaluations += 1
        return replace(result, policy=copy.deepcopy(policy), phases=dict(phases), rungs=list(rungs), rung_cost_s=dict(rung_cost))

    def fidelity(self, fidelity: str | Fidelity | None = None) -> Fidelity:
        """A fidelity as written (``bn`` means this evaluator's BN batches); None: the top of the ladder."""
        return self.ladder[-1] if fidelity is None else parse_fidelity(fidelity, self.bn_batches)

    def clear_cache(self) -> None:
        """Forget every scored policy (and the one kept to continue): the next evaluations start afresh."""
        self._cache.clear()
        self._points.clear()
        self._partial = None

    # ------------------------------------------------------------------------------------------------
    # the accuracy side: surgery, BN recalibration, distillation
    def _scored_model(self, policy: Policy, want: Fidelity | None, phases: dict[str, float]) -> _Partial:
        """The pruned model brought to fidelity `want` (None: surgery only, for latency), with its
        MACs, parameters and the seconds that produced it (`path_s`). Continues the kept policy
        when it is the same one at a cheaper compatible state; keeps the result to continue later."""
        key = policy.key()
        part = self._partial if self._partial is not None and self._partial.key == key else None
        if want is None or self.val is None:
            t = time.perf_counter()
            res = self.surgeon.apply(policy)
            phases["surgery"] = time.perf_counter() - t
            return _Partial(key, res.model, int(res.macs_after), int(res.params_after), 0, phases["surgery"])
        bn_n = want.n if want.kind == "bn" else self.bn_batches
        steps = want.n if want.kind == "kd" else 0
        if part is None or part.kd_steps > steps or (want.kind == "bn" and (bn_n != self.bn_batches or part.kd_steps)):
            from hilprune.train import recalibrate_bn

            t = time.perf_counter()
            res = self.surgeon.apply(policy)
            phases["surgery"] = time.perf_counter() - t
            if self.reconstruct_images:
                t = time.perf_counter()
                self.surgeon.refit(
                    res.model, policy, self._split("train").x[: self.reconstruct_images], seed=self.seed,
                    ridge=self.reconstruct_ridge,
                )  # fmt: skip
                phases["ls"] = time.perf_counter() - t
            t = time.perf_counter()
            recalibrate_bn(res.model, self._split("train"), bn_n, batch_size=self.bn_batch_size, seed=self.seed)
            phases["bn"] = time.perf_counter() - t
            path_s = phases["surgery"] + phases.get("ls", 0.0) + phases["bn"]
            part = _Partial(key, res.model, int(res.macs_after), int(res.params_after), 0, path_s)
            if bn_n != self.bn_batches:  # a bn rung off the ladder's BN size: not a start for distillation
                self._partial = None
                return part
        if steps > part.kd_steps:
            t = time.perf_counter()
            part.state = distill(part.model, self._distill_batches(), steps, self.kd, state=part.state, seed=self.seed)
            part.kd_steps = steps
            phases["kd"] = time.perf_counter() - t
            part.path_s += phases["kd"]
            if self.bn_after_kd:
                # The running statistics lag weights that just moved fast; training itself uses batch
                # statistics, so this changes nothing a later continuation learns.
                from hilprune.train import recalibrate_bn

                t = time.perf_counter()
                recalibrate_bn(part.model, self._split("train"), self.bn_batches, batch_size=self.bn_batch_size, seed=self.seed)
                phases["bn_after_kd"] = time.perf_counter() - t
                part.path_s += phases["bn_after_kd"]
        self._partial = part
        return part

    def _distill_batches(self) -> SharedBatches:
        if self._batches is None:
            self._batches = SharedBatches(
                self.surgeon.full,  # the teacher: the model as given
                self._split("train"),
                self.kd.batch_size,
                seed=self.seed,
                crop_pad=int(self._augment["crop_pad"]),
                flip=bool(self._augment["flip"]),
            )
        return self._batches

    def dense_latency_for(self, result: EvalResult) -> float:
        """The dense latency in the frame of the result's `latency_ms`: the live reference, for
        live and LUT results alike (`lut_scale`)."""
        return self.dense_latency_ms

    def stats(self) -> dict[str, Any]:
        return {
            "evaluations": self.n_evaluations,
            "cache_hits": self.n_cache_hits,
            "live_measurements": self.n_live,
            "live_settled": self.latency.n_settled,  # live ratios measured again: they disagreed with the LUT by > 20%
            # all-INT8 graphs' ratios: to the dense INT8 graph, times this conversion (hwprofiler.bridge)
            **self.latency.bridge_summary(),
            "lut_entries": len(self.lut),
            "lut_measured": self.lut.measured,
            "eval_backend": self.eval_backend,
            "proxy": self.proxy,
            "kernel_map": self.kmap_ok,
            "mixed_kernel_map": bool(self._mixed_map),
            "setup_s": self.setup_s,
            "predictor": self.predictor.coefficients,
        }

    def describe(self) -> dict[str, Any]:
        """The dense reference and settings, JSON-able."""
        return {
            "model": self.spec.identity(),
            "dataset": self.dataset,
            "val_size": self.val_size,
            "device": self.device.name,
            "fingerprint_id": self.fingerprint_id,
            "latency_source": self.latency_source,
            "max_ratio": self.max_ratio,
            "round_to": self.round_to,
            "importance": self.importance,
            "bn_batches": self.bn_batches,
            "bn_batch_size": self.bn_batch_size,
            "proxy": self.proxy,
            "kd": asdict(self.kd),
            "bn_after_kd": self.bn_after_kd,
            "eval_backend": self.eval_backend,
            "precision": self.precision.describe(),
            "groups": [g.name for g in self.groups],
            "removed_blocks": list(self.removed_blocks),
            "dense_accuracy": self.dense_accuracy,
            "dense_latency_ms": self.dense_latency_ms,
            "dense_lut_latency_ms": self.dense_lut_latency_ms,
            "dense_macs": self.dense_macs,
            "dense_params": self.dense_params,
        }

    @property
    def n_live(self) -> int:
        """Live measurements of policies (the dense reference not counted)."""
        return self.latency.n_live

    def flush(self) -> None:
        """Write new LUT entries and observations (other processes' entries are kept in the file)."""
        self.latency.flush()

    close = flush

    # ------------------------------------------------------------------------------------------------
    # internals
    def _split(self, name: str) -> Split:
        """The train or val split; an error for an evaluator built without a data set."""
        split = self.train if name == "train" else self.val
        if split is None:
            raise EnvConfigError(f"this evaluator has no data set (no {name} split): build it with dataset=...")
        return split

    def _accuracy(self, model: torch.nn.Module, onnx_bytes: Any) -> float:
        """Top-1 accuracy on the val subset; `onnx_bytes()` exports the model when onnxruntime needs it."""
        if self.eval_backend == "ort":
            try:
                return self._eval_ort(onnx_bytes())
            except Exception as exc:  # e.g. a reshape with a fixed batch: torch from now on
                log.warning("onnxruntime evaluation failed (%s): switching to torch", exc)
                self.eval_backend = "torch"
        from hilprune.train import evaluate as torch_eval

        return float(torch_eval(model, self._split("val"), batch_size=EVAL_CHUNK))

    def _eval_ort(self, onnx_bytes: bytes) -> float:
        from hilprune.export import ort_session

        sess = ort_session(_dynamic_batch(onnx_bytes), threads=1)
        name = sess.get_inputs()[0].name
        val = self._split("val")
        x, y = val.x.numpy(), val.y.numpy()
        correct = 0
        for i in range(0, len(y), EVAL_CHUNK):
            out = sess.run(None, {name: x[i : i + EVAL_CHUNK]})[0]
            correct += int((out.argmax(1) == y[i : i + EVAL_CHUNK]).sum())
        return correct / max(1, len(y))

    def _wants_live(self, accuracy: float, lut_ms: float) -> bool:
        """Hybrid rule: within a budget by the LUT, and would enter the best-k or the Pareto set; or
        a near miss: over a budget by at most `hybrid_margin` by the LUT, and more accurate than every
        policy within it (live then says which side of the budget it is on).

        Every point is compared by its LUT latency (one currency: a biased predictor must not
        make every new policy look faster than the live-measured ones), the budgets brought into
        the predictor's frame (`lut_scale`)."""
        if not math.isfinite(lut_ms):
            return True
        budgets = [b / self.lut_scale for b in self.budgets_ms] or [math.inf]
        acc = accuracy if math.isfinite(accuracy) else 0.0
        if within_budget(lut_ms, max(budgets)):
            if not any(a >= acc and lat <= lut_ms for a, lat in self._points):
                return True  # not dominated: enters the Pareto set
            for b in budgets:
                if within_budget(lut_ms, b):
                    accs = sorted((a for a, lat in self._points if lat <= b), reverse=True)
                    if len(accs) < self.hybrid_k or acc > accs[self.hybrid_k - 1]:
                        return True
        for b in budgets:
            if not within_budget(lut_ms, b) and lut_ms <= b * (1 + self.hybrid_margin):
                if all(acc > a for a, lat in self._points if lat <= b):
                    return True
        return False


def _fp32_groups(policy: Policy) -> list[str]:
    return [g.name for g in policy.groups if g.precision == "fp32"]


def _dynamic_batch(onnx_bytes: bytes) -> bytes:
    """The same graph with a free batch dimension, to evaluate many images per run."""
    import onnx

    m = onnx.load_from_string(onnx_bytes)
    for t in list(m.graph.input) + list(m.graph.output):
        dims = t.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = "N"
    del m.graph.value_info[:]
    return m.SerializeToString()


# LUT entries measured by evaluators that are never closed are still written at exit.
_LIVE: weakref.WeakSet[PolicyEvaluator] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for ev in list(_LIVE):
        if ev.latency.unsaved:
            ev.flush()


__all__ = ["EVAL_BACKENDS", "LATENCY_SOURCES", "BudgetError", "EvalResult", "HilpruneError", "PolicyEvaluator"]
