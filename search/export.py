"""Export a search's best policy for a budget as a fine-tuned, pruned ONNX model.

The trial is chosen by search.pick: one (any agent) that meets the budget by *live* latency on the
job's device, the most accurate or, among the trials tied with it within the proxy's standard
error, the one keeping the most MACs. Trials recorded with a predicted latency only are measured
live first (in accuracy order, and only those whose recorded latency is near the budget); a live latency within
`SETTLE_BAND` of the budget, either side, is measured again and judged by the median of
`SETTLE_MEASUREMENTS` paired measurements, because one paired measurement of a graph moves by
10-15% here (docs/benchmarks.md, "speedup_again"), enough to flip a pick at the budget. Then: surgery,
BN recalibration, fine-tuning on the train split with distillation from the dense model
(cosine schedule, on a GPU when present), accuracy on the TEST split (the search only
ever saw the validation split), ONNX export verified against torch, live latency of the
exported model. Written to the output folder:

    model.onnx      the pruned model (opset 17, fixed input shape), max |ORT - torch| <= 1e-4
    pruned.pt       pruned weights (hilprune.surgery.save_pruned; reload with load_pruned)
    policy.json     the policy with accuracy before/after fine-tuning, predicted and live latency,
                    speedup and the device fingerprint
    MODEL_CARD.md   how it was made and what it measures

With `precision="int8"` the fine-tuned model is then quantized (hilprune.quantize): every candidate
scheme is timed on the job's device paired with the fp32 graph and the fastest whose validation
accuracy holds is kept. `model.onnx` is then the INT8 graph and `model.fp32.onnx` the float one;
latency, speedup and the budget check refer to the shipped graph, timed paired with the dense model.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from envs.fidelity import DEFAULT_LS_IMAGES, DEFAULT_VAL_SIZE, LEGACY_PROXY, parse_ladder, split_reconstruct
from hilprune.budget import Budget, resolve_budget, within_budget
from hilprune.errors import HilpruneError
from hilprune.quantize.defaults import CALIBRATION_SIZE, TOLERANCE

from . import store
from .job import load_run_job
from .pick import DEFAULT_TIE_BREAK, check_tie_break, pick_trial
from .rundir import dense_measured_at, job_budgets, read_dense
from .store import TrialRecord

log = logging.getLogger(__name__)

LIVE_CACHE = "live_latency.json"
SETTLE_BAND = 0.10  # a live latency this close to the budget (relative, either side) is measured again
SETTLE_MEASUREMENTS = 3  # ... until it has this many paired measurements, and judged by their median


def near_budget(ratio: float, budget_ratio: float | None) -> bool:
    """Whether one paired measurement lies too close to the budget to decide alone (both are
    fractions of the dense reference; no budget: never)."""
    return budget_ratio is not None and abs(ratio / budget_ratio - 1) <= SETTLE_BAND


def settle(first_ratio: float, budget_ratio: float | None, again: Any) -> list[float]:
    """The paired ratios that judge a graph against a budget: `first_ratio` alone when it lies
    clearly on one side of `budget_ratio`, else it and fresh ones from `again()` until there are
    `SETTLE_MEASUREMENTS`; the median of them decides."""
    ratios = [float(first_ratio)]
    if near_budget(first_ratio, budget_ratio):
        while len(ratios) < SETTLE_MEASUREMENTS:
            ratios.append(float(again()))
    return ratios


def job_budget(budget: str, dense: dict[str, Any]) -> Budget:
    """The budget as the job resolved it, or resolved now against the job's dense reference."""
    resolved = resolve_budget(budget, float(dense["latency_ms"]))
    return job_budgets(dense).get(resolved.label, resolved)


def _find_trial(records: dict[str, list[TrialRecord]], ref: str) -> TrialRecord:
    agent, _, num = ref.rpartition(":") if ":" in ref else ("", "", ref)
    try:
        number = int(num)
    except ValueError:
        raise HilpruneError(f"--trial must be N or AGENT:N (e.g. ppo:12), got {ref!r}") from None
    hits = [r for a, recs in records.items() if not agent or a == agent for r in recs if r.number == number]
    if not hits:
        raise HilpruneError(f"no finished trial {ref!r} in this run (agents: {', '.join(sorted(records)) or 'none'})")
    if len(hits) > 1:
        raise HilpruneError(
            f"trial {number} exists for several agents ({', '.join(r.agent for r in hits)}); write AGENT:{number}"
        )
    return hits[0]


class LiveLatency:
    """Live latency of pruned models on the job's device, in the job's dense reference frame, cached
    in the run directory by policy key.

    Each model is timed interleaved with the dense model (hwprofiler.measure_paired; an all-INT8
    graph through the dense graph in its scheme, hwprofiler.bridge) and reported as ratio x the
    job's dense reference, as the search recorded its live trials, so the budget is
    judged the same way; given `budget_ms`, a latency near it is settled by the median of several
    fresh measurements (`settle`). `dense` is the job's dense.json: its fingerprint keys the cache,
    and hwprofiler's cached pairs from before its dense reference was measured are measured again."""

    FRAME = "paired+int8-bridge"  # cache files of other frames (older versions) are not reused

    def __init__(
        self,
        run_dir: Path,
        surgeon: Any,
        input_shape: tuple[int, int, int],
        device: str,
        dense: dict[str, Any],
        budget_ms: float | None = None,
    ) -> None:
        from hilprune.export import to_onnx_bytes

        self.path = run_dir / LIVE_CACHE
        self.surgeon, self.input_shape, self.device = surgeon, input_shape, device
        self.reference_ms = float(dense["latency_ms"])
        self.budget_ratio = None if budget_ms is None else float(budget_ms) / self.reference_ms
        self.dense_onnx = to_onnx_bytes(surgeon.full, input_shape)  # the model as given, before any block is removed
        self.fp_id: str | None = dense.get("fingerprint_id")
        self.not_before = dense_measured_at(dense)
        try:
            data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except json.JSONDecodeError:
            data = {}
        usable = data.get("fingerprint_id") == self.fp_id and data.get("frame") == self.FRAME
        self.cache: dict[str, float] = data.get("latency_ms", {}) if usable else {}
        self.measurements: dict[str, int] = data.get("measurements", {}) if usable else {}
        self.bridges: dict[str, Any] = {}  # scheme -> hwprofiler.bridge.PrecisionBridge

    def measure_bytes(self, onnx_bytes: bytes, *, fresh: bool = False, scheme: str | None = None) -> Any:
        """The paired measurement of a graph against the dense one (hwprofiler's PairedMeasurement,
        or BridgedRatio); `fresh`: measured now, not read from hwprofiler's cache. `scheme`: the
        graph is all INT8 in that scheme, timed against the dense graph in it and carried over by
        the INT8/fp32 conversion (hwprofiler.bridge), as the search timed it."""
        from hwprofiler import measure_paired

        if scheme is not None:
            return self.bridge(scheme).measure(onnx_bytes, cache=not fresh)
        return measure_paired(onnx_bytes, self.dense_onnx, self.device, cache=not fresh, not_before=self.not_before)

    def bridge(self, scheme: str) -> Any:
        """The `hwprofiler.bridge.PrecisionBridge` for all-INT8 graphs in `scheme` (one per scheme)."""
        if scheme not in self.bridges:
            from hwprofiler.bridge import PrecisionBridge

            self.bridges[scheme] = PrecisionBridge.in_scheme(self.dense_onnx, scheme, self.device, not_before=self.not_before)
        return self.bridges[scheme]

    def settled(self, onnx_bytes: bytes, first_ratio: float | None = None, scheme: str | None = None) -> tuple[list[float], Any]:
        """A graph's paired ratios to the dense model (`settle`: one, or several when it lands near
        the budget), starting from `first_ratio` when one was measured already, and the first
        measurement taken here (None when none was). `scheme`: as in `measure_bytes`."""
        pair = None
        if first_ratio is None:
            pair = self.measure_bytes(onnx_bytes, scheme=scheme)
            first_ratio = float(pair.ratio)

        def again() -> float:
            return float(self.measure_bytes(onnx_bytes, fresh=True, scheme=scheme).ratio)

        return settle(first_ratio, self.budget_ratio, again), pair

    def in_frame(self, onnx_bytes: bytes, scheme: str | None = None) -> float:
        """A graph's live latency in the job's dense reference frame (median ratio x reference ms);
        `scheme`: the graph is all INT8 in it (`measure_bytes`)."""
        return statistics.median(self.settled(onnx_bytes, scheme=scheme)[0]) * self.reference_ms

    def __call__(self, policy: Any, recorded_ms: float | None = None) -> float:
        """A policy's live latency in the job's frame: of its INT8 graph when it marks groups int8
        (a search run with --precision int8 or mixed), in the scheme its search judged it with.
        `recorded_ms`: a paired live latency the search already measured (in the frame): kept as
        it is unless it lies near the budget, where it is settled with fresh measurements."""
        from hilprune.export import to_onnx_bytes

        key = self.key(policy)
        if key in self.cache:  # settled already, or clearly on one side of this budget
            if self.measurements.get(key, 1) >= SETTLE_MEASUREMENTS or not near_budget(
                self.cache[key] / self.reference_ms, self.budget_ratio
            ):
                return self.cache[key]
            recorded_ms = self.cache[key]  # measured once for another budget, and near this one
        first = None if recorded_ms is None else float(recorded_ms) / self.reference_ms
        if first is not None and not near_budget(first, self.budget_ratio):
            return first * self.reference_ms  # clearly on one side: the search's own measurement stands
        int8, scheme = policy.int8_groups(), self.scheme(policy)
        model = self.surgeon.apply(policy, count=False).model
        graph = to_onnx_bytes(model, self.input_shape)
        if int8:  # the INT8 graph as the search priced it (envs.precision)
            from envs.precision import SearchPrecision
            from hwprofiler.quantization import Scheme

            graph = SearchPrecision("mixed", Scheme.parse(scheme)).structure(graph, policy)
        bridged = scheme if policy.graph_precision() == "int8" else None
        ratios, _ = self.settled(graph, first, scheme=bridged)
        self.cache[key] = statistics.median(ratios) * self.reference_ms
        self.measurements[key] = len(ratios)
        self._save()
        return self.cache[key]

    @staticmethod
    def scheme(policy: Any) -> str:
        return str(policy.metrics.get("int8_scheme") or "qdq-u8s8")

    def key(self, policy: Any) -> str:
        """The cache key: the kept widths, and the INT8 groups and scheme when it marks any."""
        key = ",".join(str(k) for k in policy.key())
        int8 = policy.int8_groups()
        return key + ("|int8:" + ",".join(int8) + "|" + self.scheme(policy) if int8 else "")

    def measurements_of(self, policy: Any) -> int:
        """How many paired measurements judged a policy here (older cache entries: 1; 0 where the
        search's own measurement stood)."""
        key = self.key(policy)
        return self.measurements.get(key, 1) if key in self.cache else 0

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        payload = {
            "fingerprint_id": self.fp_id,
            "device": self.device,
            "frame": self.FRAME,
            "latency_ms": self.cache,
            "measurements": self.measurements,
        }
        tmp.write_text(json.dumps(payload, indent=1))
        tmp.replace(self.path)


def export_run(
    run_dir: str | Path,
    budget: str,
    out: str | Path,
    *,
    trial: str | None = None,
    finetune_epochs: float = 1.0,
    lr: float = 0.01,
    seed: int | None = None,
    bn_batches: int | None = None,
    progress: bool = True,
    precision: str = "fp32",
    calibration_size: int = CALIBRATION_SIZE,
    accuracy_tolerance: float = TOLERANCE,
    schemes: list[Any] | None = None,
    reconstruct: int | None = None,
    tie_break: str = DEFAULT_TIE_BREAK,
    ridge: float | None = None,
) -> dict[str, Any]:
    """Export the best policy of `run_dir` for `budget` to `out`; returns what `--json` prints.

    `reconstruct`: train images on which the pruned layers are refitted by least squares before
    BN recalibration and fine-tuning (`hilprune.surgery.reconstruct`; 0: none, as for a pick that
    removes no channel, where no layer lost inputs and no ridge is probed); None: the search
    proxy's ``ls:N``, else `DEFAULT_LS_IMAGES` (on the same pick and a half-epoch fine-tune it added
    0.7 and 1.5 points of test accuracy on resnet20 and resnet56; after 6 epochs, none:
    docs/benchmarks.md, "reconstruct_export", "finetune_longer_ls"). `ridge`: the refit's ridge; None
    chooses it among search.ridge.RIDGES by a short distillation probe on the validation split.

    `precision="int8"` quantizes it for the job's device (`accuracy_tolerance` is a fraction of
    validation accuracy, `schemes` a list of hwprofiler.quantization.Scheme or None for all);
    ``"auto"`` does when the picked policy marks any group int8 (a search with --precision int8
    or mixed), its groups marked fp32 left in float.

    `tie_break` (search.pick): ``macs`` exports, among the trials whose proxy accuracy is within one
    standard error of the most accurate one meeting the budget, the one keeping the most MACs;
    ``accuracy`` the most accurate one. `trial` overrides both."""
    import torch

    from hilprune.data import load_dataset
    from hilprune.export import export_onnx
    from hilprune.models import resolve_model
    from hilprune.policy import Policy
    from hilprune.surgery import Surgeon, save_pruned
    from hilprune.train import evaluate, recalibrate_bn
    from hilprune.train.bn_recalib import BN_BATCH_SIZE

    from .ridge import probes, settle_ridge

    torch.set_num_threads(1)
    run_dir = Path(run_dir)
    out = Path(out)
    if finetune_epochs < 0:
        raise HilpruneError("--finetune-epochs must be >= 0")
    if precision not in ("fp32", "int8", "auto"):
        raise HilpruneError(f"--precision must be fp32, int8 or auto, got {precision!r}")
    check_tie_break(tie_break)
    if reconstruct is not None and reconstruct < 0:
        raise HilpruneError(f"--reconstruct must be >= 0 train images, got {reconstruct}")
    if ridge is not None and not ridge > 0:
        raise HilpruneError(f"--ridge must be 'auto' or a number > 0, got {ridge}")
    job = load_run_job(run_dir)
    if reconstruct is None:
        reconstruct = split_reconstruct(job.proxy or LEGACY_PROXY)[0] or DEFAULT_LS_IMAGES
    if len(job.devices) > 1:
        subs = ", ".join(str(Path(j.out)) for j in job.per_device())
        raise HilpruneError(f"{run_dir} searched several devices; export from one of them: {subs}")
    dense = read_dense(run_dir)
    if dense is None:
        raise HilpruneError(f"{run_dir}: no dense.json; run 'hilprune search' first")
    if not job.dataset:
        raise HilpruneError("export fine-tunes and tests on the job's data set, but this job has none (--dataset)")
    the_budget = job_budget(budget, dense)
    label, budget_ms = the_budget.label, the_budget.ms
    records = store.load_records(store.open_storage(job.storage_url), job.name)
    if not any(records.values()):
        raise HilpruneError(f"{run_dir}: no finished trials yet")

    spec = resolve_model(job.model, job.dataset, job.input_shape, job.num_classes, job.checkpoint)
    data = load_dataset(job.dataset, job.data_dir)  # the search's splits: job.val_size is a subset of its val split
    dense_model = spec.build()
    surgeon = Surgeon(
        dense_model, spec.input_shape, spec.identity(), importance=job.importance,
        removed_blocks=dense.get("removed_blocks", []),
    )  # fmt: skip
    live = LiveLatency(run_dir, surgeon, spec.input_shape, job.device, dense, budget_ms)

    def policy_of(r: TrialRecord) -> Policy:
        if not r.policy:
            raise HilpruneError(f"trial {r.ref} has no policy attr")
        return Policy.from_dict(r.policy, source=f"trial {r.ref}")

    t0 = time.perf_counter()
    probing = probes(bool(reconstruct), ridge, finetune_epochs)  # the ridge chosen by a probe
    steps = ExportSteps(progress, total=6 + (precision == "int8") + probing)
    steps.next("picking the trial (live latency of the candidates, paired with the dense model)")
    pick_info: dict[str, Any] = {"tie_break": None, "trial_option": trial}
    if trial is not None:
        rec = _find_trial(records, trial)
        live_before = live(policy_of(rec), recorded_ms=rec.latency_ms if rec.live_ratio is not None else None)
        if not within_budget(live_before, budget_ms):
            log.warning("trial %s runs in %.4g ms live, over the %s budget (%.4g ms)", rec.ref, live_before, label, budget_ms)
    else:
        val_images = min(job.val_size or DEFAULT_VAL_SIZE, len(data.val))  # what the search's proxy scored on
        picked = pick_trial(records, budget_ms, live, policy_of, val_images=val_images, tie_break=tie_break)
        rec, live_before, pick_info = picked.record, picked.live_ms, picked.to_dict()

    policy = policy_of(rec)
    if reconstruct and not any(surgeon.removed_out_channels(policy).values()):
        reconstruct = 0  # no layer loses input channels: nothing to refit, and no ridge to probe for
        probing = False
    if precision == "auto":
        precision = "int8" if policy.int8_groups() else "fp32"
    steps.total = 6 + (precision == "int8") + probing
    if bn_batches is None:  # as the search's first rung did, so 'val before fine-tune' matches it
        bn_batches = parse_ladder(job.proxy or LEGACY_PROXY)[1]
    ft_seed = job.seed if seed is None else seed

    def prepared(ridge: float | None) -> Any:
        """The pruned model, refitted with `ridge` (when the export refits) and BN-recalibrated."""
        model = surgeon.apply(policy).model
        if reconstruct:
            surgeon.refit(model, policy, data.train.x[:reconstruct], seed=job.seed, ridge=ridge)
        recalibrate_bn(model, data.train, batches=bn_batches, batch_size=BN_BATCH_SIZE, seed=job.seed)
        return model

    if probing:
        steps.next(f"choosing the least-squares ridge for {rec.ref} (a short distillation from each)")
    ridge, choice = settle_ridge(
        prepared, dense_model, data, ridge=ridge, refits=bool(reconstruct), finetune_epochs=finetune_epochs, lr=lr, seed=ft_seed
    )
    steps.next(f"pruning {rec.ref}{f', refitting by least squares (ridge {ridge:g})' if ridge else ''} and recalibrating BN")
    model = prepared(ridge)
    val_before, test_before = evaluate(model, data.val), evaluate(model, data.test)
    ft, distillation = None, None
    steps.next(
        f"fine-tuning {finetune_epochs:g} epoch(s) with distillation from the dense model"
        if finetune_epochs > 0
        else "no fine-tuning"
    )
    if finetune_epochs > 0:
        ft, distillation = finetune_distilled(
            model,
            data,
            spec.input_shape,
            job.dataset,
            finetune_epochs,
            lr,
            ft_seed,
            progress,
            teacher=dense_model,
        )
        model.cpu().eval()
    steps.next("test accuracy before and after, and of the dense model")
    val_after, test_after = evaluate(model, data.val), evaluate(model, data.test)
    dense_test = evaluate(dense_model, data.test)

    out.mkdir(parents=True, exist_ok=True)
    steps.next("exporting to ONNX and verifying it against torch")
    exp = export_onnx(model, spec.input_shape, out / "model.onnx")
    steps.next(f"measuring it live on {job.device}, paired with the dense model")
    ratios, pair = live.settled(exp.onnx_bytes)
    fp32_ratio = statistics.median(ratios)
    fp32_pair = pair
    quant = None
    bridged: str | None = None  # the scheme an all-INT8 shipped graph was timed through (hwprofiler.bridge)
    if precision == "int8":
        steps.next(f"choosing the INT8 scheme on {job.device} (each timed against fp32)")
        quant = _quantize(exp.onnx_bytes, policy, data, job.device, calibration_size, accuracy_tolerance, schemes)
        if quant.int8_bytes is not None:
            (out / "model.fp32.onnx").write_bytes(exp.onnx_bytes)
            (out / "model.onnx").write_bytes(quant.int8_bytes)
            # The shipped graph against the dense model. Every layer INT8 (the policy marks none or
            # all, `fp32_nodes`): through the dense graph in its scheme, as the search timed it.
            whole_int8 = policy.graph_precision() != "mixed" and quant.scheme is not None
            bridged = quant.scheme.name if whole_int8 else None
            ratios, pair = live.settled(quant.int8_bytes, scheme=bridged)
    ratio = statistics.median(ratios)  # one paired measurement, or the median of several near the budget
    live_ms = ratio * live.reference_ms  # in the job's dense frame, as the budget is judged
    dense_live = float(fp32_pair.reference.latency_ms)  # the fp32 dense model's (a bridged pair's reference is INT8)
    speedup = 1.0 / ratio
    shipped_test = quant.int8_test_accuracy if quant is not None and quant.int8_bytes is not None else test_after
    save_pruned(out / "pruned.pt", model, policy)
    steps.done()

    policy.metrics = dict(policy.metrics) | {
        "source": {
            "run_dir": str(run_dir.resolve()),
            "job": job.name,
            "agent": rec.agent,
            "trial": rec.number,
            "study": store.study_name(job.name, rec.agent),
        },
        "budget": label,
        "budget_ms": budget_ms,
        "pick": pick_info,
        "accuracy_before_finetune": {
            "val": val_before,
            "test": test_before,
            "search_val": rec.accuracy,
            "val_images": len(data.val),
        },
        "least_squares_images": reconstruct,
        "least_squares_ridge": ridge,
        "least_squares_ridge_probe": choice.to_dict() if choice else None,
        "accuracy_after_finetune": {"val": val_after, "test": test_after},
        "dense_accuracy": {"test": dense_test, "val": dense.get("accuracy")},
        "finetune": {
            "epochs": finetune_epochs,
            "distillation": distillation,
            "schedule": "cosine",
            "lr": lr,
            "steps": ft.steps if ft else 0,
            "wall_s": round(ft.wall_s, 1) if ft else 0.0,
        },
        "predicted_latency_ms": rec.lut_latency_ms,
        "search_latency_ms": rec.latency_ms,
        "search_latency_source": rec.latency_source,
        "latency_ms": live_ms,
        "live_latency_ms": float(pair.model.latency_ms),
        "live_ratio": ratio,
        "live_ratios": ratios,
        "pick_live_measurements": live.measurements_of(policy),
        "dense_live_latency_ms": dense_live,
        "speedup": speedup,
        "device": job.device,
        "device_fingerprint": dense.get("fingerprint"),
        "device_fingerprint_id": dense.get("fingerprint_id"),
        "onnx_max_abs_diff": exp.max_abs_diff,
        "precision": quant.precision if quant is not None else "fp32",
    }
    if quant is not None:
        policy.metrics["fp32_live"] = {
            "latency_ms": fp32_ratio * live.reference_ms,
            "live_latency_ms": float(fp32_pair.model.latency_ms),
            "speedup": 1.0 / fp32_ratio,
        }
        policy.metrics["quantization"] = quant.to_dict()
        if bridged is not None:  # the live ratio is to the dense INT8 graph times this conversion
            policy.metrics["live_int8_conversion"] = live.bridge(bridged).summary()
    policy_path = policy.save(out / "policy.json")
    card = model_card(job, rec, policy, spec, exp.max_abs_diff, time.perf_counter() - t0)
    (out / "MODEL_CARD.md").write_text(card)
    int8_extra: dict[str, Any] = {}
    if quant is not None:
        report = quant.to_dict()
        int8_extra = {
            "scheme": report["scheme"]["name"] if report["scheme"] else None,
            "quantization": report,
            "fp32_test_accuracy": test_after,
            "fp32_latency_ms": policy.metrics["fp32_live"]["latency_ms"],
            "fp32_onnx": str(out / "model.fp32.onnx") if quant.int8_bytes is not None else str(out / "model.onnx"),
        }
    return int8_extra | {
        "precision": quant.precision if quant is not None else "fp32",
        "onnx": str(out / "model.onnx"),
        "test_accuracy": shipped_test,
        "latency_ms": live_ms,
        "speedup": speedup,
        "policy": str(policy_path),
        "pruned": str(out / "pruned.pt"),
        "model_card": str(out / "MODEL_CARD.md"),
        "val_accuracy": val_after,
        "test_accuracy_before_finetune": test_before,
        "least_squares_images": reconstruct,
        "least_squares_ridge": ridge,
        "least_squares_ridge_probe": choice.to_dict() if choice else None,
        "dense_test_accuracy": dense_test,
        "dense_latency_ms": dense_live,
        "budget": label,
        "budget_ms": budget_ms,
        "agent": rec.agent,
        "trial": rec.number,
        "pick": pick_info,
        "max_abs_diff": exp.max_abs_diff,
        "live_ratio": ratio,
        "live_measurements": len(ratios),
        "meets_budget": within_budget(live_ms, budget_ms),
    }


def _quantize(
    fp32_onnx: bytes, policy: Any, data: Any, device: str, calibration_size: int, tolerance: float, schemes: list[Any] | None
) -> Any:
    """hilprune.quantize for the job's device; the policy's per-group precision leaves layers in fp32."""
    from hilprune.quantize import QuantizeOptions, fp32_nodes, quantize_for_device

    opts = QuantizeOptions(
        calibration_size=calibration_size, tolerance=tolerance, schemes=schemes, exclude_nodes=fp32_nodes(fp32_onnx, policy)
    )
    outcome = quantize_for_device(fp32_onnx, data, device, opts, status=lambda msg: log.info("INT8: %s", msg))
    log.info("INT8: %s", outcome.selection.reason)
    return outcome


class ExportSteps:
    """What `hilprune export` is doing, one line per step on stderr with the time the last one took
    (the fine-tune shows its own progress bar with the time left)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total, self.n = enabled, total, 0
        self.t = time.perf_counter()
        self.what = ""

    def _close(self) -> None:
        if self.enabled and self.what:
            print(f"      {self.what}: {time.perf_counter() - self.t:.1f} s", file=sys.stderr, flush=True)

    def next(self, what: str) -> None:
        self._close()
        self.n += 1
        self.what, self.t = what, time.perf_counter()
        if self.enabled:
            print(f"[{self.n}/{self.total}] {what} ...", file=sys.stderr, flush=True)

    def done(self) -> None:
        self._close()
        self.what = ""


def finetune_distilled(
    model: Any,
    data: Any,
    input_shape: tuple[int, int, int],
    dataset: str,
    epochs: float,
    lr: float,
    seed: int,
    progress: bool,
    teacher: Any = None,
) -> tuple[Any, dict[str, Any] | None]:
    """Fine-tune on the train split with distillation from `teacher` (the dense model; soft targets
    at temperature 4 plus labels, `hilprune.train.distill`), a cosine schedule from `lr`, the data
    set's augmentation, on a GPU when present; without a teacher, plain `hilprune.train.finetune`.
    Both models are back on the CPU afterwards. Returns the training result and what distillation
    was used (None without a teacher)."""
    import warnings

    from hilprune.train import KDConfig, finetune, finetune_kd, pick_device

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if teacher is None:
            return finetune(model, data, epochs=epochs, lr=lr, seed=seed, progress=progress), None
        cfg = KDConfig(lr=lr, batch_size=128)
        try:
            ft = finetune_kd(model, teacher, data, epochs=epochs, lr=lr, seed=seed, progress=progress, cfg=cfg)
        finally:
            model.cpu()
            teacher.cpu().eval()
    return ft, {"teacher": "dense", "temperature": cfg.temperature, "alpha": cfg.alpha, "device": str(pick_device())}


def _kd_note(kd: Any) -> str:
    if not kd:
        return ""
    return f", distilled from the dense model (T={kd['temperature']}, alpha={kd['alpha']}) on {kd['device']}"


def _live_line(m: dict[str, Any]) -> str:
    dense, ratios = m["dense_live_latency_ms"], m.get("live_ratios") or []
    line = f"{m['live_ratio'] * dense:.4g} ms (dense {dense:.4g} ms, paired): **{(m['speedup'] or 0):.2f}x** faster"
    if len(ratios) > 1:
        speedups = sorted(1 / r for r in ratios)
        line += f" (median of {len(ratios)} paired measurements near the budget, {speedups[0]:.2f}x-{speedups[-1]:.2f}x)"
    return line


def _ls_note(images: int | None, ridge: float | None, probe: dict[str, Any] | None = None) -> str:
    if not images:
        return ""
    how = ""
    if ridge and probe:
        scores = ", ".join(f"{r}: {100 * a:.1f}%" for r, a in probe["scores"].items())
        how = f", chosen by val accuracy after {probe['steps']} distillation steps from each ({scores})"
    return f"layers refitted by least squares on {images} train images{f' (ridge {ridge:g}{how})' if ridge else ''}, then "


def model_card(job: Any, rec: TrialRecord, policy: Any, spec: Any, diff: float | None, wall_s: float) -> str:
    m = policy.metrics
    rows = "\n".join(f"| {g.name} | {g.kind} | {g.channels_before} | {g.channels_after} | {g.ratio:.3f} |" for g in policy.groups)
    fp = m.get("device_fingerprint") or {}
    fp_line = ", ".join(f"{k}={v}" for k, v in fp.items() if not isinstance(v, (dict, list))) if isinstance(fp, dict) else str(fp)
    macs_b, macs_a = m.get("macs_before"), m.get("macs_after")
    macs = f"{macs_a:,} (dense {macs_b:,})" if isinstance(macs_a, int) and isinstance(macs_b, int) and macs_a >= 0 else "-"
    acc_b, acc_a = m["accuracy_before_finetune"], m["accuracy_after_finetune"]
    ft = m["finetune"]
    ft_line = f"{ft['epochs']} epoch(s), lr {ft['lr']} (cosine), {ft['steps']} steps, {ft['wall_s']} s{_kd_note(ft.get('distillation'))}"
    pred = m.get("predicted_latency_ms")
    quant = m.get("quantization")
    int8 = quant is not None and quant["precision"] == "int8"
    shipped = f"INT8 ({quant['scheme']['name']})" if int8 else "fp32"
    test_int8 = f"INT8 **{quant['accuracy']['int8']['test']:.4f}**; fp32 " if int8 else ""
    return f"""# Pruned {job.model}{" on " + job.dataset if job.dataset else ""} for budget {m["budget"]} on {job.device}

Found by agent `{rec.agent}` (trial {rec.number} of study `{m["source"]["study"]}`) in the search run
`{m["source"]["run_dir"]}`, then fine-tuned and exported by `hilprune export`.
{_pick_line(m.get("pick") or {}, rec)}

| | |
|---|---|
| budget | {m["budget"]} = {m["budget_ms"]:.4g} ms |
| precision | {shipped}{" (see Precision below)" if quant is not None else ""} |
| live latency | {_live_line(m)} |
| predicted latency (LUT, fp32) | {f"{pred:.4g} ms" if pred is not None else "-"} |
| test accuracy | {test_int8}**{acc_a["test"]:.4f}** after fine-tuning, {acc_b["test"]:.4f} before (dense {m["dense_accuracy"]["test"]:.4f}) |
| validation accuracy | {acc_a["val"]:.4f} after, {acc_b["val"]:.4f} before (the search saw {acc_b["search_val"]:.4f}) |
| fine-tuning | {_ls_note(m.get("least_squares_images"), m.get("least_squares_ridge"), m.get("least_squares_ridge_probe"))}{ft_line} |
| MACs | {macs} |
| input shape | {list(spec.input_shape)} (batch 1, fixed), {spec.num_classes} classes |
| ONNX | opset 17, max abs difference to torch {diff if diff is not None else float("nan"):.2e} |
| device | `{job.device}`; {fp_line} |
| host | {platform.node()} ({platform.machine()}), {time.strftime("%Y-%m-%d %H:%M")} |

Latency is measured live on the device above (hwprofiler: the fastest of several short windows
of runs, interleaved with the dense model; near the budget, the median of several such paired
measurements); it is only meaningful on that device with those settings.

{_precision_section(quant)}## Layer-wise policy
{_blocks_line(policy.removed_blocks)}
| group | kind | channels before | channels after | pruned ratio |
|---|---|---|---|---|
{rows}

## Files

- `model.onnx`: the pruned model{" (INT8); `model.fp32.onnx`: the same model in fp32" if int8 else ""}
- `pruned.pt`: its weights (`hilprune.surgery.load_pruned(spec, path)` rebuilds it from the dense model)
- `policy.json`: the policy and every number above (`hilprune.policy/v1`)
"""


def _pick_line(pick: dict[str, Any], rec: TrialRecord) -> str:
    """How the trial was chosen (search.pick), for the model card."""
    if pick.get("trial_option"):
        return f"Chosen by hand (`--trial {pick['trial_option']}`).\n"
    if pick.get("tie_break") == "macs" and pick.get("most_accurate") != rec.ref:
        return (
            f"Chosen among {pick['ties']} trials whose validation accuracy lies within one standard error "
            f"({100 * pick['tie_margin']:.1f} points) of the most accurate one that meets the budget live "
            f"(`{pick['most_accurate']}`, {pick['most_accurate_val']:.4f}): the one keeping the most MACs.\n"
        )
    return "The most accurate trial (by the search's validation proxy) that meets the budget live.\n"


def _blocks_line(blocks: list[str]) -> str:
    if not blocks:
        return ""
    return f"\nResidual blocks removed whole ({len(blocks)}), before the channels were pruned: {', '.join(blocks)}.\n"


def _precision_section(quant: dict[str, Any] | None) -> str:
    if quant is None:
        return ""
    from hilprune.quantize.card import markdown

    return markdown(quant) + "\n"
