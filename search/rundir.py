"""A search run directory's files, read and written in one place.

    job.toml        the resolved job (search.job)
    dense.json      the dense model's accuracy and latency, and each budget resolved (fixed at the first run)
    study.journal   the trials (default storage, search.store)
    best/<budget>.json, pareto.png, report.md, summary.json   (search.report)

Runner, report, export and dashboard read these through this module, so none of them needs another.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from envs.interface import Evaluator
from hilprune.budget import Budget, resolve_budget
from hilprune.errors import HilpruneError

from .job import Job

log = logging.getLogger(__name__)

DENSE_FILE = "dense.json"
CREATED_FORMAT = "%Y-%m-%dT%H:%M:%S"  # dense.json's "created" (local time)


def write_json(path: Path, obj: Any) -> Path:
    """Write JSON next to `path` and rename it into place (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def read_dense(out_dir: str | Path) -> dict[str, Any] | None:
    """The run's dense.json, or None when it has none (or an unreadable one)."""
    path = Path(out_dir) / DENSE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def job_budgets(dense: dict[str, Any]) -> dict[str, Budget]:
    """The budgets a run resolved, by label (runs from before `budgets` read `budgets_ms`)."""
    if isinstance(dense.get("budgets"), dict):
        return {label: Budget.from_dict(b) for label, b in dense["budgets"].items()}
    out = {}
    for label, ms in (dense.get("budgets_ms") or {}).items():
        fraction = None if str(label).endswith("ms") else float(label)
        out[str(label)] = Budget(str(label), float(ms), fraction)
    return out


def weights_id(checkpoint: str | None) -> str:
    """What the dense weights were: 'sha256:<first 16>' of the checkpoint file, or the seeded random init."""
    if not checkpoint:
        return "random-init"
    return "sha256:" + hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()[:16]


def dense_reference(job: Job, evaluator: Evaluator) -> dict[str, Any]:
    """dense.json: the dense model's numbers and each budget resolved, fixed at the job's first run.

    Budgets given as fractions are turned into milliseconds once, from the dense latency measured
    then, so resumed runs and worker processes judge trials by the same budgets; those runs also
    express their paired live latencies in that reference (`Evaluator.use_reference`).
    """
    out_dir = Path(job.out)
    dense = read_dense(out_dir) or {}
    weights = weights_id(evaluator.spec.checkpoint)
    if dense and dense.get("weights", weights) != weights:
        raise HilpruneError(
            f"{out_dir} was searched with other weights ({dense['weights']}, now {weights}: a shipped "
            "checkpoint appeared or changed); use another --out to search these weights"
        )
    fp_id = evaluator.fingerprint_id
    if dense and dense.get("fingerprint_id") and dense["fingerprint_id"] != fp_id:
        log.warning(
            "the device fingerprint changed since this job started (%s -> %s); budgets keep their first values",
            dense["fingerprint_id"],
            fp_id,
        )
    if not dense:
        lut_dense = evaluator.dense_lut_latency_ms
        dense = {
            "model": job.model,
            "dataset": job.dataset,
            "device": job.device,
            "accuracy": float(evaluator.dense_accuracy),
            "latency_ms": float(evaluator.dense_latency_ms),
            "lut_latency_ms": float(lut_dense) if math.isfinite(lut_dense) else None,
            "macs": int(evaluator.dense_macs),
            "latency_source": job.latency_source,
            "groups": [g.name for g in evaluator.groups],
            "removed_blocks": list(evaluator.removed_blocks),
            "block_ranking": [list(r) for r in evaluator.block_ranking],
            "fingerprint": dict(evaluator.fingerprint),
            "fingerprint_id": fp_id,
            "budgets": {},
            "budgets_ms": {},
            "split": "val",
            "val_size": job.val_size,
            "weights": weights,
            "created": time.strftime(CREATED_FORMAT),
            "measured_at": evaluator.dense_measured_at,
        }
    else:
        evaluator.use_reference(float(dense["latency_ms"]))  # one frame for every run of the job
    budgets = job_budgets(dense)
    for label in job.budgets:
        if label not in budgets:  # a budget the LUT says no policy can meet is refused here, with the lowest that can be
            budgets[label] = evaluator.check_budget(resolve_budget(label, float(dense["latency_ms"])))
    dense["budgets"] = {label: b.to_dict() for label, b in budgets.items()}
    dense["budgets_ms"] = {label: b.ms for label, b in budgets.items()}
    write_json(out_dir / DENSE_FILE, dense)
    return dense


def dense_measured_at(dense: dict[str, Any]) -> float | None:
    """When the job's dense reference was measured (`time.time()`): live times of its policies are
    only comparable with the budgets when taken since. Runs from before `measured_at` was recorded
    give their creation time."""
    if dense.get("measured_at") is not None:
        return float(dense["measured_at"])
    try:
        return time.mktime(time.strptime(str(dense["created"]), CREATED_FORMAT))
    except (KeyError, ValueError):
        return None
