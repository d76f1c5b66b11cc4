"""A pruned model's latency on the target device, as the evaluator needs it: priced from the LUT,
measured live, or both.

Built once per (model, device) from the Surgeon: the dense graph exported and checked, its kernels,
the device's LUT and predictor, the kernel map (a policy's kernels without surgery or export, kept
only when it reproduces real exports), and the dense model's live latency. Per policy it then
answers `predict_key(kept)` (LUT, memoized by the kept channels per group) and `measure(onnx)`
(a live run under the device lock), and refits the predictor on each new live measurement.

hwprofiler does the measuring and pricing; this module only ties it to one model's policies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from hilprune.errors import HilpruneError
from hilprune.policy import channels_after
from hwprofiler import device_kernels as price_kernels

from .devlock import device_lock
from .errors import EnvConfigError

log = logging.getLogger(__name__)

LUT_SAVE_EVERY_S = 30.0
# A live ratio this far from the LUT's is measured twice more and the median kept: on a shared vCPU
# one paired measurement in 8-13% lands over 20% from its own median, INT8 against fp32 most often
# (docs/benchmarks.md, paired_precision_icl), and an outlier must not decide a budget.
SETTLE_DISAGREEMENT = 0.2
SETTLE_REPEATS = 2


class PolicyLatency:
    """Latency of one model's pruning policies on one device (LUT, live, predictor).

    :param surgeon: the model's `hilprune.surgery.Surgeon` (groups, dense model, surgery)
    :param input_shape: one sample's shape (C, H, W)
    :param device: hwprofiler device (built-in name, TOML path, ``remote:http://...`` or spec)
    :param latency_source: ``lut`` and ``hybrid`` need a LUT (an error when the graph cannot be
        priced by one); ``live`` does not
    :param name: the model's name, for messages
    :param lut_path: LUT file (default: hwprofiler's per-fingerprint table in its cache dir)
    :param lock: take the per-device lock around live runs and LUT misses
    :param int8_structure: a float graph's all-INT8 form (`envs.precision`), for a second kernel
        map and predictor that price policies as INT8 graphs (`quant=True`); None: fp32 prices only
    :param int8_name: the INT8 scheme's name: the INT8 predictor's observations are filed under the
        model's scope plus this name, apart from the fp32 ones (one-kernel INT8 graphs pay their
        own quantize and dequantize, so their LUT sum needs its own correction)
    """

    def __init__(
        self,
        surgeon: Any,
        input_shape: tuple[int, ...],
        device: Any,
        *,
        max_ratio: float,
        round_to: int,
        latency_source: str = "lut",
        name: str = "model",
        seed: int = 0,
        lut_path: str | None = None,
        lock: bool = True,
        calibrate_progress: bool = True,
        int8_structure: Callable[[bytes], bytes] | None = None,
        int8_name: str = "int8",
        dense_onnx: bytes | None = None,
    ) -> None:
        """`dense_onnx`: the surgeon's dense graph as `export_checked` wrote it, when the caller has it."""
        import hwprofiler

        self.surgeon = surgeon
        self.name = name
        self.groups = surgeon.groups
        self.input_shape = tuple(input_shape)
        self.max_ratio = float(max_ratio)
        self.round_to = int(round_to)
        self.seed = int(seed)
        self.lock = bool(lock)
        try:
            self.device = hwprofiler.load_device(device)
            fp = hwprofiler.fingerprint(self.device)
        except hwprofiler.DeviceError as exc:
            raise EnvConfigError(str(exc)) from None
        self.fingerprint_id = hwprofiler.fingerprint_id(fp)
        self.fingerprint = dict(fp) | {"fingerprint_id": self.fingerprint_id}
        if dense_onnx is None:
            dense_onnx = export_checked(surgeon.dense, self.input_shape, self.device.batch)
        self.dense_onnx = dense_onnx  # the graph the groups index
        # The reference live latencies are paired with and budgets are fractions of: the model as
        # given, which is the dense graph unless the surgeon removed residual blocks first.
        same = surgeon.full is surgeon.dense
        self.reference_onnx = self.dense_onnx if same else export_checked(surgeon.full, self.input_shape, self.device.batch)

        from hilprune.calibrate import model_scope
        from hilprune.policy import groups_signature

        self.lut = hwprofiler.open_lut(self.device, lut_path)
        scope = model_scope(name, self.input_shape, groups_signature(self.groups))
        self.predictor = hwprofiler.Predictor(self.lut, scope=scope)
        # INT8 observations are bridged ratios x the reference's fp32 LUT price (`calibrate`, `observe`),
        # filed apart from the absolute times earlier versions recorded under `{scope}|{int8_name}`
        q_scope = f"{scope}|{int8_name}|bridged"
        self.predictor_q = hwprofiler.Predictor(self.lut, scope=q_scope) if int8_structure else None
        self._entries_at_save = len(self.lut)
        self._last_save = time.monotonic()
        self._memo: dict[tuple[int, ...], float] = {}
        self._memo_q: dict[tuple[int, ...], float] = {}
        self.kmap: Any = None
        self.kmap_ok = False
        self.int8_structure = int8_structure
        self.kmap_q: Any = None  # the all-INT8 graphs' kernel map (int8_structure given)
        self.kmap_q_ok = False
        self._bridge: Any = None  # hwprofiler.bridge.PrecisionBridge, built when an INT8 graph is first measured
        self.lut_error: str | None = None
        self.dense_kernels: list[Any] | None = None
        reference_kernels: list[Any] | None = None
        try:
            self.dense_kernels = price_kernels(self.dense_onnx, self.device, batch=self.device.batch)
            reference_kernels = (
                self.dense_kernels if same else price_kernels(self.reference_onnx, self.device, batch=self.device.batch)
            )
        except hwprofiler.KernelError as exc:
            self.lut_error = str(exc)
            if latency_source != "live":
                raise EnvConfigError(
                    f"latency_source {latency_source!r} needs a LUT, but the model cannot be priced by one "
                    f"({exc}); use latency_source='live'"
                ) from None
        if self.dense_kernels is not None:
            self._build_kernel_map()
            if int8_structure is not None:
                self._build_kernel_map(int8=True)
        self.n_live = 0
        # Measured now, not read from the cache: budgets and speedups are fractions of it. The
        # policies' live times are then only taken from the cache when measured since (`not_before`):
        # a time cached by an earlier run, under another load or speed mode, is not comparable.
        self.measured_since = time.time()
        m = self.measure(self.reference_onnx, refresh=True)
        self.n_live = 0  # the dense reference is not a policy's measurement
        self.n_settled = 0  # live ratios measured again because they disagreed with the LUT
        self.dense_latency_ms = float(m.latency_ms)
        self.dense_measurement = m
        self.max_key = tuple(channels_after(g.channels, self.max_ratio, self.round_to) for g in self.groups)
        self.dense_key = tuple(g.channels for g in self.groups)
        self.reference_kernels = reference_kernels
        if reference_kernels is not None:
            self.observe(reference_kernels, m.latency_ms)
            if latency_source != "live":
                self.calibrate(progress=calibrate_progress)
        self.dense_lut_latency_ms = float("nan")  # the reference's LUT latency: the frame of LUT-judged speedups
        if self.has_lut and reference_kernels is not None:
            self.dense_lut_latency_ms = self._reference_lut_ms()

    # --- construction ---------------------------------------------------------------------------
    def calibrate(self, progress: bool = True) -> int:
        """Live runs of pruned variants until the predictor has `CALIBRATION_RUNS` observations of
        this model on this device (the first use only: they are saved with the LUT)."""
        from hilprune.calibrate import calibrate

        # the fp32 graphs, then (when the search quantizes) the INT8 graphs' own runs
        targets = [(self.predictor, self.kmap if self.kmap_ok else None, None)]
        if self.predictor_q is not None:
            targets.append((self.predictor_q, self.kmap_q if self.kmap_q_ok else None, self.int8_structure))
        n = 0
        for predictor, kmap, transform in targets:
            live = None
            if transform is not None:  # INT8: in the frame a search observes them in (`observe`)
                live = self._int8_in_lut_frame(self._reference_lut_ms())
            n += calibrate(
                self.surgeon,
                self.device,
                predictor,
                kmap=kmap,
                max_ratio=self.max_ratio,
                round_to=self.round_to,
                seed=self.seed,
                progress=progress,
                lock=lambda: device_lock(self.fingerprint_id, self.lock),
                transform=transform,
                live=live,
            )
            self._memo.clear()  # the INT8 frame is read from the fp32 predictor as just calibrated
        if n:
            self._memo.clear()
            self._memo_q.clear()
            self._entries_at_save = len(self.lut)
        return n

    def _reference_lut_ms(self) -> float:
        """The reference's fp32 LUT latency: LUT-judged ratios are fractions of it, and live ratios
        enter the predictors as multiples of it."""
        same = self.surgeon.full is self.surgeon.dense
        return self.predict_key(self.dense_key) if same else self._price(self.reference_kernels or [])

    def _int8_in_lut_frame(self, reference_lut_ms: float) -> Callable[[bytes], float]:
        """How an INT8 calibration graph is measured: its bridged ratio to the fp32 reference
        (`measure_paired(int8=True)`) times the reference's LUT price. Absolute INT8 times would
        mix a vCPU's speed modes into the INT8 predictor (one slowed INT8 1.65x, fp32 1.35x)."""

        def live(data: bytes) -> float:
            return float(self.bridge().measure(data, cache=False).ratio) * reference_lut_ms

        return live

    def _build_kernel_map(self, int8: bool = False) -> None:
        """KernelMap (no-surgery kernels) if it reproduces real exports, else the slow path.
        `int8`: the map of the all-INT8 graphs (`int8_structure` applied to every export)."""
        from hilprune.export import to_onnx_bytes
        from hilprune.kernel_map import KernelMap

        transform = self.int8_structure if int8 else None
        what = "INT8 kernel map" if int8 else "kernel map"
        try:
            kmap = KernelMap(
                self.surgeon, batch=self.device.batch, device=self.device, transform=transform, dense_onnx=self.dense_onnx
            )
        except Exception as exc:  # a graph the map cannot follow: fall back to surgery + export
            log.info("%s unavailable for %s (%s): LUT prices need an export per policy", what, self.name, exc)
            return
        rng = np.random.default_rng(self.seed + 12345)
        ok = True
        for _ in range(2):
            ratios = [float(rng.uniform(0.05, self.max_ratio)) for _ in self.groups]
            policy = self.surgeon.policy(ratios, round_to=self.round_to, max_ratio=self.max_ratio)
            model = self.surgeon.apply(policy, count=False).model
            graph = to_onnx_bytes(model, self.input_shape, self.device.batch)
            real = price_kernels(transform(graph) if transform else graph, self.device, batch=self.device.batch)
            if kmap.kernels(list(policy.key())) != real:
                log.warning(
                    "%s of %s does not match real exports (a concat or reshape it cannot follow); "
                    "LUT prices fall back to surgery + export (slower)",
                    what,
                    self.name,
                )
                ok = False
                break
        if int8:
            self.kmap_q, self.kmap_q_ok = kmap, ok
        else:
            self.kmap, self.kmap_ok = kmap, ok

    # --- prices ------------------------------------------------------------------------------------
    @property
    def has_lut(self) -> bool:
        return self.dense_kernels is not None

    def kernels_for(self, kept: Sequence[int], quant: bool = False) -> list[Any]:
        """The device kernels of the pruned model that keeps `kept` channels per group (`quant`:
        of its all-INT8 graph)."""
        if quant and self.int8_structure is None:
            raise EnvConfigError("this evaluator prices fp32 graphs only (precision fp32)")
        kmap, ok = (self.kmap_q, self.kmap_q_ok) if quant else (self.kmap, self.kmap_ok)
        if ok:
            return kmap.kernels(list(kept))  # type: ignore[no-any-return]
        from hilprune.export import to_onnx_bytes

        ratios = [1.0 - k / g.channels for k, g in zip(kept, self.groups)]
        policy = self.surgeon.policy(ratios, round_to=1, max_ratio=1.0)
        model = self.surgeon.apply(policy, count=False).model
        graph = to_onnx_bytes(model, self.input_shape, self.device.batch)
        if quant:
            assert self.int8_structure is not None
            graph = self.int8_structure(graph)
        return price_kernels(graph, self.device, batch=self.device.batch)

    def predict_key(self, key: tuple[int, ...], kernels: Sequence[Any] | None = None, quant: bool = False) -> float:
        """LUT latency in ms of the policy keeping `key` channels per group (kernels measured on a
        miss). `quant`: of its all-INT8 graph; a mixed graph passes its own `kernels` and a key
        that holds its marks."""
        if not self.has_lut:
            raise EnvConfigError(f"no LUT for this model ({self.lut_error}): only live latency is available")
        memo = self._memo_q if quant else self._memo
        hit = memo.get(key)
        if hit is not None:
            return hit
        kernels = kernels if kernels is not None else self.kernels_for(key, quant)
        self.fill(kernels)
        value = float(self._predictor(quant).predict(kernels))
        memo[key] = value
        return value

    def _price(self, kernels: Sequence[Any]) -> float:
        """LUT latency in ms of a graph's fp32 kernels (measured on a miss), not memoized."""
        self.fill(kernels)
        return float(self.predictor.predict(kernels))

    def priced(self, key: tuple[int, ...], quant: bool = False) -> float | None:
        """The LUT latency `predict_key` already gave this key (None: not priced yet, or refitted since)."""
        return (self._memo_q if quant else self._memo).get(key)

    def group_costs(self, key: tuple[int, ...], quant: bool = False) -> list[float] | None:
        """Each group's share of the predicted latency of the policy keeping `key` channels per
        group (`quant`: of its all-INT8 graph): the predictor's per-kernel costs, each kernel split
        equally between the groups whose pruning changes its shape. None where the kernel map
        cannot follow the model. What lets one group's fp32 and INT8 kernels be compared."""
        kmap, ok = (self.kmap_q, self.kmap_q_ok) if quant else (self.kmap, self.kmap_ok)
        if not ok or not self.has_lut:
            return None
        kernels = kmap.kernels(list(key))
        costs = self._predictor(quant).kernel_costs(kernels)
        owners: list[list[int]] = [[] for _ in kernels]
        for gi, kept in enumerate(key):
            other = list(key)
            other[gi] = kept // 2 if kept > 1 else 2  # any other width reveals the kernels it shapes
            changed = kmap.kernels(other)
            if len(changed) != len(kernels):  # the graph's structure depends on this width: no attribution
                return None
            for j, (a, b) in enumerate(zip(kernels, changed)):
                if a != b:
                    owners[j].append(gi)
        shares = [0.0] * len(key)
        for cost, own in zip(costs, owners):
            for gi in own:
                shares[gi] += cost / len(own)
        return shares

    def min_latency_ms(self, quant: bool = False) -> float:
        """LUT latency with every group pruned at max_ratio: the lowest budget that can be met."""
        return self.predict_key(self.max_key, quant=quant)

    def fill(self, kernels: Sequence[Any]) -> None:
        """Measure the kernels the LUT lacks (under the device lock)."""
        missing = self.lut.missing(kernels)
        if missing:
            with device_lock(self.fingerprint_id, self.lock):
                self.lut.fill(missing, progress=False, save=False)

    def prefill(self, grid_step: float = 0.05, progress: bool = True) -> int:
        """Measure every kernel a policy on the ratio grid can produce; returns how many were measured."""
        if not self.kmap_ok:
            return 0
        from hilprune.kernel_map import ratio_grid

        kernels = self.kmap.reachable(ratio_grid(self.max_ratio, grid_step), self.round_to)
        with device_lock(self.fingerprint_id, self.lock):
            n = self.lut.fill(kernels, progress=progress, save=False)
        self.flush()
        return n

    def group_shares(self) -> list[float]:
        """Each group's share of the dense model's LUT latency (kernels split between the groups
        that set their input and output channels); sums to at most 1."""
        n = len(self.groups)
        if not self.has_lut:
            return [1.0 / n] * n
        if self.kmap_ok:
            # A kernel belongs to the groups whose pruning changes its shape (shared equally).
            self.fill(self.dense_kernels)
            times = [self.lut.get(k) for k in self.dense_kernels]
            total = sum(times) or 1.0
            owners: list[set[int]] = [set() for _ in self.dense_kernels]
            for gi in range(n):
                key = list(self.dense_key)
                key[gi] = max(1, self.dense_key[gi] // 2)
                for j, (k0, k1) in enumerate(zip(self.dense_kernels, self.kmap.kernels(key))):
                    if k0 != k1:
                        owners[j].add(gi)
            shares = [0.0] * n
            for t, own in zip(times, owners):
                for gi in own:
                    shares[gi] += t / total / len(own)
            return shares
        # marginal: what pruning the group alone at max_ratio saves, per pruned fraction
        saved = []
        for i in range(n):
            key = list(self.dense_key)
            key[i] = self.max_key[i]
            saved.append(
                max(0.0, self.predict_key(self.dense_key) - self.predict_key(tuple(key)))
                / max(1e-9, 1 - self.max_key[i] / self.dense_key[i])
            )
        total = sum(saved) or 1.0
        return [s / total for s in saved]

    # --- live ----------------------------------------------------------------------------------------
    def measure(self, onnx_bytes: bytes, *, refresh: bool = False) -> Any:
        """A live measurement (hwprofiler's `Measurement`) of a graph, under the device lock; from
        hwprofiler's cache when the same graph was measured since this search's dense reference,
        unless `refresh`."""
        import hwprofiler

        with device_lock(self.fingerprint_id, self.lock):
            m = hwprofiler.measure_onnx(onnx_bytes, self.device, refresh=refresh, not_before=self.measured_since)
        self.n_live += 1
        return m

    def measure_paired(self, onnx_bytes: bytes, expected_ratio: float | None = None, int8: bool = False) -> Any:
        """A policy's graph timed interleaved with the dense graph, under the device lock; cached
        like `measure`. Returns hwprofiler's `BridgedRatio`: `ratio` is to the fp32 reference.

        `int8`: the graph is all INT8 (`int8_structure`'s scheme). It is then paired with the dense
        graph in that scheme and carried over by the settled INT8/fp32 conversion
        (`hwprofiler.bridge`): on a vCPU whose slow mode slows INT8 more than fp32, a direct INT8
        against fp32 pair reads one mode or the other. With `expected_ratio` (the LUT's), a ratio
        more than `SETTLE_DISAGREEMENT` away from it is measured `SETTLE_REPEATS` times more and
        the measurement with the median ratio is returned."""
        import hwprofiler
        from hwprofiler.bridge import BridgedRatio

        def once(cache: bool) -> Any:
            if int8:
                return self.bridge().measure(onnx_bytes, cache=cache)
            pair = hwprofiler.measure_paired(
                onnx_bytes, self.reference_onnx, self.device, cache=cache, not_before=self.measured_since
            )
            return BridgedRatio(ratio=float(pair.ratio), pair=pair)

        with device_lock(self.fingerprint_id, self.lock):
            pair = once(cache=True)
            self.n_live += 1
            if expected_ratio is not None and expected_ratio > 0 and not pair.cached:
                if abs(pair.ratio / expected_ratio - 1) > SETTLE_DISAGREEMENT:
                    pairs = [pair]
                    for _ in range(SETTLE_REPEATS):
                        pairs.append(once(cache=False))
                        self.n_live += 1
                    pair = sorted(pairs, key=lambda q: q.ratio)[len(pairs) // 2]
                    self.n_settled += 1
        return pair

    def bridge(self) -> Any:
        """The `hwprofiler.bridge.PrecisionBridge` that measures all-INT8 graphs (built at first use:
        the dense reference quantized by `int8_structure`)."""
        if self.int8_structure is None:
            raise EnvConfigError("this latency model measures fp32 graphs only (no INT8 structure)")
        if self._bridge is None:
            from hwprofiler.bridge import PrecisionBridge

            quantized = self.int8_structure(self.reference_onnx)
            self._bridge = PrecisionBridge(self.reference_onnx, quantized, self.device, not_before=self.measured_since)
        return self._bridge

    def bridge_summary(self) -> dict[str, Any]:
        """The INT8/fp32 conversion and its pairs' ratios; empty until an all-INT8 graph was measured."""
        return self._bridge.summary() if self._bridge is not None else {}

    def _predictor(self, quant: bool) -> Any:
        if not quant:
            return self.predictor
        if self.predictor_q is None:
            raise EnvConfigError("this evaluator prices fp32 graphs only (precision fp32)")
        return self.predictor_q

    def observe(self, kernels: Sequence[Any], live_ms: float, quant: bool = False) -> None:
        """Refit the predictor (`quant`: the INT8 one) on a live latency of the graph made of
        `kernels` (once per distinct graph and value)."""
        live = float(live_ms)
        n, macs = len(kernels), sum(k.macs for k in kernels)
        for o in self.lut.observations:
            if o.get("n_kernels") == n and o.get("macs") == macs and abs(float(o.get("live_ms", -1)) - live) <= 1e-9:
                return
        self.fill(kernels)
        self._predictor(quant).observe(kernels, live, save=False)
        (self._memo_q if quant else self._memo).clear()

    # --- persistence -------------------------------------------------------------------------------
    @property
    def unsaved(self) -> bool:
        return len(self.lut) != self._entries_at_save

    def flush(self) -> None:
        """Write new LUT entries and observations to the device's table. Kernels other processes
        measured meanwhile are adopted (no need to time them again); their observations are not,
        so this process's predictor changes only with its own measurements."""
        if not self.has_lut:
            return
        try:
            with device_lock(self.fingerprint_id, self.lock):
                self.lut.save(adopt_entries=True)
        except Exception as exc:  # never lose an evaluation over a cache file
            log.warning("could not save the LUT %s: %s", self.lut.path, exc)
        self._entries_at_save = len(self.lut)
        self._last_save = time.monotonic()

    def maybe_flush(self) -> None:
        """Flush when new kernels were measured and the last save is LUT_SAVE_EVERY_S old."""
        if self.unsaved and time.monotonic() - self._last_save > LUT_SAVE_EVERY_S:
            self.flush()


@torch.no_grad()
def export_checked(model: torch.nn.Module, input_shape: tuple[int, ...], batch: int, rel_tol: float = 1e-4) -> bytes:
    """The dense export, checked against torch with a tolerance relative to the logits' scale
    (deep nets with random weights have large logits, where an absolute 1e-4 is float noise)."""
    from hilprune.export import TOLERANCE, to_onnx_bytes, verify_onnx

    data = to_onnx_bytes(model, input_shape, batch)
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0))
    scale = float(model.eval()(x).abs().max())
    diff = verify_onnx(model, data, tuple(input_shape), batch)
    if diff > max(TOLERANCE, rel_tol * scale):
        raise HilpruneError(
            f"ONNX export does not match torch: max abs difference {diff:.2e} "
            f"(logits up to {scale:.3g}); the model cannot be measured on the device"
        )
    return data
