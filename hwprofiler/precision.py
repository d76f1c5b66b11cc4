"""Which precisions a device runs fast: each INT8 scheme timed against fp32 on a reference conv stack,
or on the model a search will quantize.

Measured once per device fingerprint and kept in `<cache>/precision/<fingerprint_id>.json`. The
reference is four 3x3 convs (64 channels, 16x16, Relu): a residual-network stage at batch 1,
large enough that the kernels, not the quantize/dequantize at its ends, decide. Each scheme's graph
is measured paired with the fp32 graph (`measure_paired`), so the ratios of one table are
comparable. A scheme is worth trying on a network when it beat fp32 here; when none did, the
device keeps fp32.

The reference can mislead: on an Intel Xeon with AMX, QDQ S8S8 ran the reference 3.2x faster than
fp32 and resnet20 (16-64 channels, residual adds) 1.8x *slower*, where U8S8 ran it 1.85x faster. So
a search times the schemes on its own dense model (`precision_table(device, model=...)`), kept in
`<cache>/precision/<fingerprint_id>-<model hash>.json`; `hilprune devices` shows the reference.

The fp32 reference is timed once per scheme, so one table holds several measurements of the same
graph. On a shared vCPU (or a 2-thread device with another process on the second core) they can
disagree several-fold, and a scheme then "wins" because its fp32 partner ran in a slow window. A
table whose fp32 timings spread by more than `SETTLED` is measured again (up to `ATTEMPTS` times);
the least-spread attempt is kept and marked `settled: false` when none agreed, and a cached table
that is not settled is measured afresh on its next use rather than trusted forever. Within the kept
attempt, each scheme's `ratio` is its INT8 time over the fp32 graph's fastest time across every
scheme's pair (`on_fastest_fp32`; the pair's own ratio stays as `pair_ratio`): noise only adds time,
so a slow fp32 partner no longer makes its scheme look faster, as export's scheme choice rules
(`hilprune.quantize.select`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from hwprofiler.cache import atomic_write_json, default_cache_dir, file_lock
from hwprofiler.devices import DeviceSpec, load_device
from hwprofiler.errors import InvalidModelError
from hwprofiler.fingerprint import fingerprint, fingerprint_id
from hwprofiler.measure import measure_paired
from hwprofiler.quantization import Quantizer, Scheme, candidate_schemes, random_reader

log = logging.getLogger(__name__)

FORMAT = 2  # 2: ratios on the fastest fp32 time (on_fastest_fp32)
CHANNELS, HW, DEPTH = 64, 16, 4
REFERENCE = f"{DEPTH} x conv3x3 {CHANNELS}->{CHANNELS} at {HW}x{HW} + Relu, batch 1"
FASTER = 0.95  # a scheme counts as faster than fp32 below this ratio (paired timings spread a few %)
SETTLED = 1.25  # the fp32 timings of one table must lie within this factor of each other
ATTEMPTS = 3  # measurements of the whole table before an unsettled one is kept (flagged)


def reference_model(batch: int = 1) -> bytes:
    """The fp32 reference: DEPTH convs with bias and Relu, seeded weights (same bytes every time)."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(DEPTH):
        w = (rng.standard_normal((CHANNELS, CHANNELS, 3, 3)) / np.sqrt(9 * CHANNELS)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(CHANNELS, np.float32), f"b{i}")]
        nodes += [
            helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        x = f"r{i}"
    shape = [batch, CHANNELS, HW, HW]
    graph = helper.make_graph(
        nodes,
        "precision_reference",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hwprofiler")
    model.ir_version = 8
    return model.SerializeToString()


def model_tag(model: bytes) -> str:
    """A short content hash naming a model's own precision table."""
    return hashlib.sha256(model).hexdigest()[:16]


def fp32_spread(rows: list[dict[str, Any]]) -> float:
    """max / min of the fp32 reference timings in one table's rows (1.0 with fewer than two)."""
    fp32 = [float(r["fp32_ms"]) for r in rows if r.get("fp32_ms")]
    return max(fp32) / min(fp32) if len(fp32) > 1 else 1.0


def _measure_once(spec: DeviceSpec, schemes: list[Scheme], ref: bytes) -> list[dict[str, Any]]:
    rows = []
    with Quantizer(ref, random_reader(ref, n=8, seed=1)) as quantizer:
        for scheme in schemes:
            try:
                pair = measure_paired(quantizer.quantize(scheme), ref, spec, cache=False)
            except InvalidModelError as e:  # a runtime that cannot run this format (OpenVINO and QOperator)
                rows.append(scheme.to_dict() | {"precision": scheme.precision, "faster": False, "error": str(e)})
                continue
            rows.append(
                scheme.to_dict()
                | {
                    "precision": scheme.precision,
                    "int8_ms": pair.model.latency_ms,
                    "fp32_ms": pair.reference.latency_ms,
                    "ratio": pair.ratio,
                    "faster": pair.ratio < FASTER,
                }
            )
    return rows


def on_fastest_fp32(rows: list[dict[str, Any]]) -> None:
    """Each timed row's `ratio` re-taken against the fastest fp32 time of all rows (its pair's own
    ratio kept as `pair_ratio`), and `faster` judged on it."""
    fp32 = [float(r["fp32_ms"]) for r in rows if r.get("fp32_ms")]
    if not fp32:
        return
    fastest = min(fp32)
    for r in rows:
        if r.get("int8_ms"):
            r["pair_ratio"] = r.get("pair_ratio", r["ratio"])
            r["ratio"] = float(r["int8_ms"]) / fastest
            r["faster"] = r["ratio"] < FASTER


def measure_precisions(
    device: DeviceSpec | str,
    schemes: list[Scheme] | None = None,
    *,
    attempts: int = ATTEMPTS,
    model: bytes | None = None,
) -> dict[str, Any]:
    """Time every candidate scheme against fp32 on the reference, or on `model` (an fp32 ONNX graph
    at the device's batch), quantized here and measured on the device, again while the table's own
    fp32 timings disagree (see the module docstring)."""
    spec = load_device(device)
    fp = fingerprint(spec)
    schemes = schemes if schemes is not None else candidate_schemes(fp)
    ref = reference_model(spec.batch) if model is None else model
    rows: list[dict[str, Any]] = []
    spread, tried = math.inf, 0
    while tried < max(1, int(attempts)) and spread > SETTLED:
        tried += 1
        attempt = _measure_once(spec, schemes, ref)
        attempt_spread = fp32_spread(attempt)
        if attempt_spread < spread:  # keep the attempt that agrees with itself best
            rows, spread = attempt, attempt_spread
    if spread > SETTLED:
        log.warning(
            "INT8 schemes on %s: the fp32 %s took times %.2fx apart within one table in each of %d attempts "
            "(a busy machine?), so its ranking may be noise; a table this unsettled is not reused: the next %s "
            "times the schemes again (best on an idle machine)",
            spec.name,
            "reference" if model is None else "model",
            spread,
            tried,
            "`hilprune devices`" if model is None else "search or export of this model",
        )
    on_fastest_fp32(rows)
    faster = sorted((r for r in rows if r["faster"]), key=lambda r: r["ratio"])
    return {
        "format": FORMAT,
        "device": spec.name,
        "fingerprint_id": fingerprint_id(fp),
        "reference": REFERENCE if model is None else f"the model itself ({model_tag(model)})",
        "schemes": rows,
        "best": faster[0]["name"] if faster else "fp32",
        "keeps_fp32": not faster,
        "fp32_spread": spread,
        "settled": spread <= SETTLED,
        "attempts": tried,
        "measured_at": time.time(),
    }


def precision_table(device: DeviceSpec | str, *, refresh: bool = False, model: bytes | None = None) -> dict[str, Any]:
    """The device's precision table on the reference, or on `model`: measured on the first call for
    the device's fingerprint (and the model's bytes) and cached."""
    spec = load_device(device)
    fid = fingerprint_id(spec)
    path = default_cache_dir() / "precision" / (f"{fid}.json" if model is None else f"{fid}-{model_tag(model)}.json")
    with file_lock(path.with_name(path.name + ".lock")):
        if not refresh and path.is_file():
            try:
                data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
                settled = fp32_spread(data.get("schemes", [])) <= SETTLED  # an unsettled table is measured again
                if data.get("format") == FORMAT and data.get("fingerprint_id") == fid and settled:
                    return data | {"cached": True}
            except (OSError, ValueError):
                pass
        data = measure_precisions(spec, model=model)
        atomic_write_json(path, data)
    return data | {"cached": False}
