"""INT8 schemes of onnxruntime static quantization, and which of them to try on a device.

Which scheme pays depends on the CPU, not on the documentation: on AVX-512 VNNI hosts (an Intel
Xeon, an AMD EPYC Zen 4) QDQ U8S8 ran resnet20 about 2x faster than fp32 while QDQ S8S8, the docs'
first choice, ran it 0.6-0.75x as fast (docs/benchmarks.md). So every scheme a device may run is a
candidate, and the device's own measurements choose. The only rule applied before measuring is
onnxruntime's: without VNNI, x86's U8S8 dot product (VPMADDUBSW) can saturate, so weights are
quantized with 7 bits (`reduce_range`) there.

`quantize` is a thin wrapper of `onnxruntime.quantization.quantize_static` (bytes in, bytes out).
It runs on the client: a remote device only ever measures the quantized graph.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwprofiler.cpu import cpu_info
from hwprofiler.errors import DeviceError

FORMATS = ("qdq", "qoperator")
ACTIVATIONS = ("u8", "s8")
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
X86 = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


@dataclass(frozen=True)
class Scheme:
    """One way to quantize: graph format, activation type (weights are always int8), per-channel
    weight scales, and 7-bit weights (`reduce_range`)."""

    format: str = "qdq"
    activations: str = "u8"
    per_channel: bool = True
    reduce_range: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise DeviceError(f"unknown quantization format {self.format!r}; known: {', '.join(FORMATS)}")
        if self.activations not in ACTIVATIONS:
            raise DeviceError(f"unknown activation type {self.activations!r}; known: {', '.join(ACTIVATIONS)}")

    @property
    def precision(self) -> str:
        """The kernels' precision name (KernelSpec.precision): u8s8 or s8s8."""
        return f"{self.activations}s8"

    @property
    def name(self) -> str:
        """e.g. qdq-u8s8, qop-s8s8-rr (reduce_range), qdq-u8s8-pt (per-tensor weights)."""
        fmt = "qdq" if self.format == "qdq" else "qop"
        return f"{fmt}-{self.precision}" + ("" if self.per_channel else "-pt") + ("-rr" if self.reduce_range else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "activations": self.activations,
            "weights": "s8",
            "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
        }

    @classmethod
    def parse(cls, name: str) -> Scheme:
        """The scheme called `name` (as `.name` writes it)."""
        parts = name.strip().lower().split("-")
        fmt = {"qdq": "qdq", "qop": "qoperator", "qoperator": "qoperator"}.get(parts[0])
        if fmt is None or len(parts) < 2 or parts[1] not in ("u8s8", "s8s8") or not set(parts[2:]) <= {"pt", "rr"}:
            raise DeviceError(f"bad quantization scheme {name!r}: write FORMAT-TYPES[-pt][-rr], e.g. qdq-u8s8 or qop-s8s8-rr")
        return cls(fmt, parts[1][:2], per_channel="pt" not in parts[2:], reduce_range="rr" in parts[2:])


def needs_reduce_range(fingerprint: dict[str, Any]) -> bool:
    """x86 without VNNI: onnxruntime's U8S8 kernels can saturate there, so weights get 7 bits.

    A device that names no hardware (no `arch` in its fingerprint: the simulated device) follows
    this host's CPU, since its INT8 graphs are run here, by onnxruntime, to check their accuracy.
    On a non-VNNI AMD EPYC (Zen 1) U8S8 without 7-bit weights cost digits-cnn 5 points there."""
    if not fingerprint.get("arch"):
        fingerprint = cpu_info()
    arch = str(fingerprint.get("arch", "")).lower()
    isa = set(fingerprint.get("isa") or [])
    return arch in X86 and not (isa & VNNI_FLAGS)


def candidate_schemes(fingerprint: dict[str, Any]) -> list[Scheme]:
    """Every format x activation type, per-channel, with reduce_range where the CPU needs it."""
    rr = needs_reduce_range(fingerprint)
    return [Scheme(fmt, act, True, rr) for fmt in FORMATS for act in ACTIVATIONS]


class ArrayReader:
    """A `CalibrationDataReader` over arrays (one feed dict per array), for onnxruntime's calibrator."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self.input_name = input_name
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        while (item := self.get_next()) is not None:
            yield item


def random_reader(model: bytes, n: int = 1, seed: int = 0) -> ArrayReader:
    """`n` seeded random inputs for `model`'s first input at its static shape (a free dimension
    counts 1): ranges that fix a quantized graph's structure and timing, not its accuracy."""
    import onnx

    inp = onnx.load_from_string(model).graph.input[0]
    dims = [max(1, int(d.dim_value)) for d in inp.type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    return ArrayReader(inp.name, [rng.standard_normal(dims).astype(np.float32) for _ in range(n)])


def _reader_class() -> type:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def get_next(self) -> dict[str, np.ndarray] | None:
            item: dict[str, np.ndarray] | None = self.inner.get_next()
            return item

    return Reader


def _drop_format_advice(record: logging.LogRecord) -> bool:
    """onnxruntime logs that QOperator S8S8 is slow on x64; the device's timing says so (or not)."""
    return not str(record.msg).startswith("Please use QuantFormat.QDQ")


class Quantizer:
    """Quantizes one float ONNX model with any scheme, calibrating it once.

    The first `quantize` runs the calibration (onnxruntime's MinMax calibrator over `reader`);
    the tensor ranges are kept in a temporary file and reused by every later scheme, so trying
    four schemes costs one calibration. `exclude` names nodes left in float.
    """

    def __init__(self, model: bytes, reader: Any, exclude: Sequence[str] = ()) -> None:
        from onnxruntime.quantization import quant_pre_process

        self._tmp = tempfile.TemporaryDirectory(prefix="hwprofiler-quant-")
        self.dir = Path(self._tmp.name)
        (self.dir / "float.onnx").write_bytes(model)
        # shape inference + onnxruntime's basic graph optimizations, as the quantization docs advise
        try:
            quant_pre_process(str(self.dir / "float.onnx"), str(self.dir / "pre.onnx"), skip_symbolic_shape=True)
        except Exception as e:  # onnxruntime raises its own types
            self._tmp.cleanup()
            raise DeviceError(f"onnxruntime could not prepare the model for quantization: {e}") from None
        self.reader = reader
        self.exclude = list(exclude)
        self.ranges = self.dir / "ranges.json"
        self.calibrated = False

    def quantize(self, scheme: Scheme) -> bytes:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        out = self.dir / f"{scheme.name}.onnx"
        act = QuantType.QUInt8 if scheme.activations == "u8" else QuantType.QInt8
        if not self.calibrated and hasattr(self.reader, "rewind"):
            self.reader.rewind()  # a calibration that failed may have read part of it
        reader = None if self.calibrated else _reader_class()(self.reader)
        root = logging.getLogger()
        root.addFilter(_drop_format_advice)
        try:
            quantize_static(
                str(self.dir / "pre.onnx"),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ if scheme.format == "qdq" else QuantFormat.QOperator,
                per_channel=scheme.per_channel,
                reduce_range=scheme.reduce_range,
                activation_type=act,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=self.exclude or None,
                calibration_cache_path=str(self.ranges),
            )
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise DeviceError(f"onnxruntime could not quantize the model with {scheme.name}: {e}") from None
        finally:
            root.removeFilter(_drop_format_advice)
        self.calibrated = True
        return out.read_bytes()

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> Quantizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def quantize_structure(model: bytes, scheme: Scheme, exclude: Sequence[str] = ()) -> bytes:
    """`model` quantized with `scheme` for its *graph* only: calibrated on one seeded random input.

    Pricing needs which nodes become INT8 kernels and which quantize/dequantize nodes stay, not
    the tensor ranges, so a search prices a policy's INT8 graph without reading any data set (the
    graph is the same one quantize_static writes with real calibration; its scales are not).
    """
    with Quantizer(model, random_reader(model), exclude=exclude) as quantizer:
        return quantizer.quantize(scheme)
