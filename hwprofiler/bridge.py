"""An INT8 graph's latency as a fraction of the fp32 dense model, measured across the precision gap
in two steps that each hold while the vCPU changes speed.

Paired windows cancel a slowdown that hits both graphs alike. On an Ice Lake Xeon vCPU a slow mode
that came and went for minutes slowed INT8 graphs by about 1.65x and the fp32 dense graph by 1.35x
(docs/benchmarks.md, paired_precision_icl): a pruned INT8 graph's ratio to the fp32 dense model
read 0.49 in the fast mode and 0.61-0.81 in the slow one, while its ratio to the dense INT8 graph
stayed within 0.92-0.98 in both. OpenVINO on the same vCPU showed the same two speeds (INT8 0.25 or
0.39-0.41 ms, fp32 0.61 or 0.80-0.86 ms for resnet20), and three back-to-back pairs of the two
dense graphs read 0.28, 0.48 and 0.70. The slow speed can hold for one session of a graph and not
for the other session timed beside it, so even a graph paired with itself read 0.6 at times.

So an INT8 graph is paired with the dense graph in its own scheme, and that ratio is multiplied by
the *conversion*: the dense INT8 graph's fastest time over the dense fp32 graph's fastest time,
each the minimum over every conversion pair (noise only adds time, and each graph's fast speed
shows in some pair even when no pair caught both at it). Conversion pairs are taken at first use
and then one more at most every `SPACING_S` while graphs are measured, up to `MAX_PAIRS`, so the
fast speed is found even when a measurement starts in a slow spell. A graph's own pair whose dense
INT8 side ran `REFERENCE_SLOW` over that graph's fastest time is measured again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hwprofiler.devices import DeviceSpec, load_device
from hwprofiler.measure import ModelLike, measure_paired, model_bytes
from hwprofiler.measurement import PairedMeasurement

FIRST_PAIRS = 3  # conversion pairs taken at first use
SPACING_S = 30.0  # then one more per measured graph, at most this often ...
MAX_PAIRS = 12  # ... until there are this many
# A graph's pair whose dense INT8 side ran this much over that graph's fastest time so far caught
# the slow speed on the reference's side only (1.6x on the Ice Lake vCPU; the ratio then reads
# 0.6 of the truth), so it is measured again, at most `RETRIES` times.
REFERENCE_SLOW = 1.3
RETRIES = 2


@dataclass(frozen=True)
class BridgedRatio:
    """A graph's latency over the fp32 reference's: `pair.ratio` (the graph against the dense INT8
    graph) times `conversion` (dense INT8 over dense fp32) when `conversion` is not None, else the
    pair's own ratio (the graph was paired with the fp32 reference directly)."""

    ratio: float
    pair: PairedMeasurement
    conversion: float | None = None

    @property
    def model(self) -> Any:
        """The graph's own `Measurement`."""
        return self.pair.model

    @property
    def cached(self) -> bool:
        return self.pair.cached


@dataclass
class PrecisionBridge:
    """Measures INT8 graphs against `reference` (fp32) through `reference_int8` (the same model
    quantized in the scheme the graphs use) on one device.

    :param not_before: graph pairs cached before this time are measured again (`measure_paired`)
    """

    reference: bytes
    reference_int8: bytes
    device: DeviceSpec
    not_before: float | None = None
    conversions: list[PairedMeasurement] = field(default_factory=list)
    retries: int = 0  # graph pairs measured again because their reference ran slow
    _last: float = field(default=-float("inf"), repr=False)
    _int8_floor: float = field(default=float("inf"), repr=False)  # the dense INT8 graph's fastest time

    @classmethod
    def of(cls, reference: ModelLike, reference_int8: ModelLike, device: DeviceSpec | str, **kw: Any) -> PrecisionBridge:
        return cls(model_bytes(reference), model_bytes(reference_int8), load_device(device), **kw)

    @classmethod
    def in_scheme(cls, reference: ModelLike, scheme: str, device: DeviceSpec | str, **kw: Any) -> PrecisionBridge:
        """The bridge for all-INT8 graphs in `scheme` (a name, e.g. ``qdq-u8s8``): the reference
        quantized in it by `quantize_structure` (timing does not depend on the scales)."""
        from hwprofiler.quantization import Scheme, quantize_structure

        data = model_bytes(reference)
        return cls.of(data, quantize_structure(data, Scheme.parse(scheme)), device, **kw)

    def _convert_once(self) -> None:
        pair = measure_paired(self.reference_int8, self.reference, self.device, cache=False)
        self.conversions.append(pair)
        self._int8_floor = min(self._int8_floor, pair.model.latency_ms)
        self._last = time.monotonic()

    def conversion(self) -> float:
        """Dense INT8 over dense fp32: each graph's fastest time over the conversion pairs; takes
        the first pairs when there are none yet."""
        while len(self.conversions) < FIRST_PAIRS:
            self._convert_once()
        int8 = min(p.model.latency_ms for p in self.conversions)
        fp32 = min(p.reference.latency_ms for p in self.conversions)
        return float(int8 / fp32)

    def measure(self, model: ModelLike, *, cache: bool = True) -> BridgedRatio:
        """`model` (an INT8 graph in the reference's scheme) paired with the dense INT8 graph, and
        its ratio carried over to the fp32 reference by the conversion."""
        if self.conversions and len(self.conversions) < MAX_PAIRS and time.monotonic() - self._last >= SPACING_S:
            self._convert_once()
        conversion = self.conversion()
        pair = measure_paired(model, self.reference_int8, self.device, cache=cache, not_before=self.not_before)
        for _ in range(RETRIES):
            if pair.cached or pair.reference.latency_ms <= REFERENCE_SLOW * self._int8_floor:
                break
            self.retries += 1  # measured now, and replacing the slow pair in the cache when one is kept
            pair = measure_paired(model, self.reference_int8, self.device, cache=cache, not_before=time.time())
        self._int8_floor = min(self._int8_floor, pair.reference.latency_ms)
        return BridgedRatio(ratio=float(pair.ratio) * conversion, pair=pair, conversion=conversion)

    def summary(self) -> dict[str, Any]:
        """The conversion and every conversion pair's own ratio, for a run's record."""
        return {
            "int8_conversion": self.conversion() if self.conversions else None,
            "int8_conversion_ratios": [round(float(p.ratio), 4) for p in self.conversions],
            "int8_reference_retries": self.retries,
        }


__all__ = ["FIRST_PAIRS", "MAX_PAIRS", "REFERENCE_SLOW", "RETRIES", "SPACING_S", "BridgedRatio", "PrecisionBridge"]
