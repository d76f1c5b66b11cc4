"""INT8 export chosen by the device: quantize with every candidate scheme, time each on the target
device paired with the fp32 graph, keep the fastest whose validation accuracy holds.

Quantization runs here (the client); only the graphs travel to the device, through hwprofiler's
`measure_paired`, so a `remote:` device is measured the same way as a local one. Calibration reads
the train split only; the choice is made on the validation split; the test split is only reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwprofiler.quantization import Quantizer, Scheme, candidate_schemes

from ..data import DatasetBundle
from ..errors import HilpruneError
from . import onnx_eval
from .calibration import DEFAULT_CALIBRATION_SIZE, TrainCalibration
from .select import DEFAULT_MIN_SPEEDUP, DEFAULT_TOLERANCE, Selection, Timing, select_scheme


@dataclass
class QuantizeOptions:
    calibration_size: int = DEFAULT_CALIBRATION_SIZE
    tolerance: float = DEFAULT_TOLERANCE  # validation accuracy, as a fraction (0.005 = 0.5 points)
    min_speedup: float = DEFAULT_MIN_SPEEDUP
    schemes: Sequence[Scheme] | None = None  # None: every candidate for the device (candidate_schemes)
    exclude_nodes: Sequence[str] = ()  # layers left in fp32 (a policy's per-group precision)


@dataclass
class QuantizeOutcome:
    """What was tried, what was kept and what it measures."""

    selection: Selection
    device: str
    fp32_bytes: bytes
    int8_bytes: bytes | None
    calibration: dict[str, Any]
    fp32_val_accuracy: float
    fp32_test_accuracy: float
    int8_test_accuracy: float | None = None
    int8_val_accuracy: float | None = None
    agreement: onnx_eval.Agreement | None = None  # on the validation images
    excluded_nodes: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def precision(self) -> str:
        return self.selection.precision

    @property
    def scheme(self) -> Scheme | None:
        return self.selection.chosen.scheme if self.selection.chosen else None

    @property
    def shipped(self) -> bytes:
        """The graph to ship: INT8 when a scheme was kept, else the fp32 one."""
        return self.int8_bytes if self.int8_bytes is not None else self.fp32_bytes

    def live_ms(self) -> tuple[float | None, float | None]:
        """(fp32, int8) live latency of the chosen scheme's paired measurement."""
        chosen = self.selection.chosen
        if chosen is None or chosen.timing is None:
            return None, None
        return chosen.timing.fp32_ms, chosen.timing.int8_ms

    def to_dict(self) -> dict[str, Any]:
        fp32_ms, int8_ms = self.live_ms()
        chosen = self.selection.chosen
        return {
            "precision": self.precision,
            "scheme": self.scheme.to_dict() if self.scheme else None,
            "reason": self.selection.reason,
            "device": self.device,
            "candidates": [t.to_dict() for t in self.selection.trials],
            "accuracy_tolerance": self.selection.tolerance,
            "min_speedup": self.selection.min_speedup,
            "calibration": self.calibration,
            "accuracy": {
                "fp32": {"val": self.fp32_val_accuracy, "test": self.fp32_test_accuracy},
                "int8": {"val": self.int8_val_accuracy, "test": self.int8_test_accuracy} if chosen else None,
            },
            "agreement_val": self.agreement.to_dict() if self.agreement else None,
            "live_latency_ms": {"fp32": fp32_ms, "int8": int8_ms},
            "speedup": (fp32_ms / int8_ms) if fp32_ms and int8_ms else None,
            "excluded_nodes": self.excluded_nodes,
            "wall_s": round(self.wall_s, 1),
        }


def _input(onnx_bytes: bytes) -> tuple[str, int]:
    import onnx

    inp = onnx.load_from_string(onnx_bytes).graph.input[0]
    dim0 = inp.type.tensor_type.shape.dim[0]
    return inp.name, dim0.dim_value if dim0.HasField("dim_value") and dim0.dim_value > 0 else 1


def quantize_for_device(
    fp32_onnx: bytes,
    bundle: DatasetBundle,
    device: Any,
    options: QuantizeOptions | None = None,
    *,
    status: Callable[[str], None] | None = None,
) -> QuantizeOutcome:
    """Quantize `fp32_onnx` with each candidate scheme and keep the one the device runs fastest
    whose validation accuracy holds (see `select_scheme`)."""
    import hwprofiler

    opts = options or QuantizeOptions()
    say = status or (lambda _msg: None)
    t_start = time.time()
    try:
        spec = hwprofiler.load_device(device)
        schemes = list(opts.schemes) if opts.schemes else candidate_schemes(hwprofiler.fingerprint(spec))
    except hwprofiler.DeviceError as e:
        raise HilpruneError(str(e)) from None
    input_name, batch = _input(fp32_onnx)
    reader = TrainCalibration(bundle, opts.calibration_size, batch, input_name)
    graphs: dict[str, bytes] = {}
    calibration: dict[str, Any] = {"split": "train", "images": reader.size, "wall_s": None}

    with Quantizer(fp32_onnx, reader, exclude=opts.exclude_nodes) as quantizer:

        def graph(scheme: Scheme) -> bytes:
            if scheme.name not in graphs:
                first = not quantizer.calibrated
                t0 = time.perf_counter()
                graphs[scheme.name] = quantizer.quantize(scheme)
                if first:  # the first scheme also ran the calibration
                    calibration["wall_s"] = round(time.perf_counter() - t0, 2)
            return graphs[scheme.name]

        def time_scheme(scheme: Scheme) -> Timing:
            say(f"quantizing ({scheme.name}) and timing it on {spec.name}")
            pair = hwprofiler.measure_paired(graph(scheme), fp32_onnx, spec, not_before=t_start)
            return Timing(pair.model.latency_ms, pair.reference.latency_ms, pair.ratio)

        say("fp32 accuracy on the validation split")
        fp32_val = onnx_eval.logits(fp32_onnx, bundle.val)
        val_logits: dict[str, np.ndarray] = {}

        def val_accuracy(scheme: Scheme) -> float:
            say(f"validation accuracy of {scheme.name}")
            val_logits[scheme.name] = onnx_eval.logits(graph(scheme), bundle.val)
            return onnx_eval.accuracy(val_logits[scheme.name], bundle.val)

        def compare(a: Scheme, b: Scheme) -> float:
            say(f"timing {a.name} against {b.name} on {spec.name}")
            return float(hwprofiler.measure_paired(graph(a), graph(b), spec, not_before=t_start).ratio)

        selection = select_scheme(
            schemes,
            time_scheme,
            val_accuracy,
            onnx_eval.accuracy(fp32_val, bundle.val),
            opts.tolerance,
            opts.min_speedup,
            compare=compare,
        )
    say("test accuracy")
    outcome = QuantizeOutcome(
        selection=selection,
        device=spec.name,
        fp32_bytes=fp32_onnx,
        int8_bytes=None,
        calibration=calibration,
        fp32_val_accuracy=selection.fp32_val_accuracy,
        fp32_test_accuracy=onnx_eval.accuracy(onnx_eval.logits(fp32_onnx, bundle.test), bundle.test),
        excluded_nodes=list(opts.exclude_nodes),
    )
    chosen = selection.chosen
    if chosen is not None:
        name = chosen.scheme.name
        outcome.int8_bytes = graphs[name]
        outcome.int8_val_accuracy = chosen.val_accuracy
        outcome.int8_test_accuracy = onnx_eval.accuracy(onnx_eval.logits(graphs[name], bundle.test), bundle.test)
        outcome.agreement = onnx_eval.agreement(fp32_val, val_logits[name])
    outcome.wall_s = time.time() - t_start
    return outcome
