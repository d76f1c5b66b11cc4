"""Precision as a searched dimension: which graph a policy is judged as, fp32 or (partly) INT8.

A search runs in one of three modes (`--precision`):

- ``fp32``: every policy is the float graph (the default, as before);
- ``int8``: every group of every policy is INT8: widths are searched under INT8 prices and INT8
  accuracy;
- ``mixed``: each group is fp32 or INT8 as the agent marks it (`Policy` groups' `precision`); a
  policy given as plain ratios is all INT8, one given as a `Policy` keeps its marks (all fp32 is
  the float graph).

The INT8 form is onnxruntime static quantization with one scheme for the whole search, the one
the device's own precision table (`hwprofiler.precision`, each scheme timed against fp32 on a
reference conv stack) found fastest; a device where no scheme beat fp32 keeps fp32 and the search
says so. `hilprune export` chooses the scheme again on the exported model itself.

A policy's INT8 graph is judged as the device would run it: its accuracy by onnxruntime on the
val subset after calibration on `calibration_size` *train* images, its live latency by the
quantized graph paired with the dense fp32 model, its LUT price by the kernels of that graph
(`quantize_structure`: the same graph, calibrated on one random input, since pricing needs the
structure, not the scales), read from the INT8 kernel map (all INT8) or the mixed kernel map
(`hilprune.kernel_map.MixedKernelMap`: one structure of the dense graph per pattern of marks).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hilprune.errors import PolicyError
from hilprune.policy import Policy
from hwprofiler.quantization import ArrayReader, Quantizer, Scheme, quantize_structure

from .errors import EnvConfigError

log = logging.getLogger(__name__)

MODES = ("fp32", "int8", "mixed")
# Calibration images per proxy evaluation: the export's calibration bench moved test accuracy by
# at most 0.1 point between 50 and 400 images (docs/benchmarks.md, "int8_calibration").
PROXY_CALIBRATION = 50


@dataclass(frozen=True)
class SearchPrecision:
    """The search's precision mode and the INT8 scheme it judges INT8 groups with.

    `mode` is what the search does after the device had its say: a device that keeps fp32
    turns ``int8``/``mixed`` into ``fp32`` (`asked` keeps what was asked, `why` says why)."""

    mode: str = "fp32"
    scheme: Scheme | None = None
    asked: str = "fp32"
    why: str = ""
    calibration_size: int = PROXY_CALIBRATION

    @property
    def quantizes(self) -> bool:
        return self.mode != "fp32"

    def bits(self, policy: Policy) -> tuple[int, ...]:
        """The policy's INT8 marks, one per group (empty in fp32 mode: keys stay the kept channels)."""
        return tuple(int(g.precision == "int8") for g in policy.groups) if self.quantizes else ()

    def mark(self, policy: Policy, precision: str | Mapping[str, str] | None, given_policy: bool) -> Policy:
        """`policy` with the marks this mode gives it (see the module docstring); returns it."""
        if self.mode == "fp32":
            if precision not in (None, "fp32") and (isinstance(precision, str) or "int8" in precision.values()):
                raise PolicyError("this search is fp32 (--precision fp32): a policy cannot mark a group int8")
            return policy.set_precision("fp32")
        if self.mode == "int8":
            return policy.set_precision("int8")
        if precision is not None:
            return policy.set_precision(precision)
        return policy if given_policy else policy.set_precision("int8")

    def is_int8(self, policy: Policy) -> bool:
        """Whether the policy's graph is quantized at all."""
        return self.quantizes and bool(policy.int8_groups())

    def structure(self, fp32_onnx: bytes, policy: Policy | None = None) -> bytes:
        """The policy's INT8 graph for pricing (its structure; scales from one random input);
        without a policy, every layer INT8."""
        assert self.scheme is not None
        exclude = self._fp32_nodes(fp32_onnx, policy) if policy is not None else []
        return quantize_structure(fp32_onnx, self.scheme, exclude)

    def quantize(self, fp32_onnx: bytes, policy: Policy, train_x: np.ndarray, batch: int) -> bytes:
        """The policy's INT8 graph, calibrated on the first `calibration_size` train images."""
        import onnx

        assert self.scheme is not None
        x = np.asarray(train_x[: max(batch, self.calibration_size - self.calibration_size % batch)], dtype=np.float32)
        name = onnx.load_from_string(fp32_onnx).graph.input[0].name
        reader = ArrayReader(name, (x[i : i + batch] for i in range(0, len(x) - batch + 1, batch)))
        with Quantizer(fp32_onnx, reader, exclude=self._fp32_nodes(fp32_onnx, policy)) as quantizer:
            return quantizer.quantize(self.scheme)

    @staticmethod
    def _fp32_nodes(fp32_onnx: bytes, policy: Policy) -> list[str]:
        from hilprune.quantize.mixed import fp32_nodes

        return fp32_nodes(fp32_onnx, policy)

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "asked": self.asked,
            "scheme": self.scheme.name if self.scheme else None,
            "why": self.why,
            "calibration_images": self.calibration_size if self.quantizes else 0,
        }


def search_precision(
    mode: str,
    device: Any,
    scheme: str | None = None,
    calibration_size: int = PROXY_CALIBRATION,
    model: bytes | None = None,
) -> SearchPrecision:
    """The precision a search runs at on `device`: `mode` as asked, with the scheme the device's
    precision table found fastest (or `scheme` when named); fp32 where the device keeps it. With
    `model` (the search's dense fp32 ONNX graph), the table times the schemes on that model: a
    reference conv stack can rank them the other way round (hwprofiler.precision)."""
    if mode not in MODES:
        raise EnvConfigError(f"unknown precision {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "fp32":
        return SearchPrecision()
    if int(calibration_size) < 1:
        raise EnvConfigError(f"calibration_size must be at least 1, got {calibration_size!r}")
    if scheme is not None:
        try:
            chosen = Scheme.parse(scheme)
        except Exception as exc:
            raise EnvConfigError(str(exc)) from None
        return SearchPrecision(mode, chosen, mode, f"{chosen.name} as asked", int(calibration_size))
    from hwprofiler.precision import REFERENCE, precision_table

    try:
        table = precision_table(device, model=model)
    except Exception as exc:  # a device that cannot time the reference (its runtime failed): onnxruntime's usual scheme
        log.warning("could not time INT8 schemes on %s (%s): using qdq-u8s8", getattr(device, "name", device), exc)
        return SearchPrecision(mode, Scheme(), mode, f"qdq-u8s8 (schemes not timed: {exc})", int(calibration_size))
    reference = table.get("reference", REFERENCE)
    if table.get("keeps_fp32"):
        why = f"no INT8 scheme ran faster than fp32 on {table.get('device')} ({reference}): the device keeps fp32"
        log.warning("--precision %s: %s", mode, why)
        return SearchPrecision("fp32", None, mode, why)
    best = next(r for r in table["schemes"] if r["name"] == table["best"])
    chosen = Scheme(best["format"], best["activations"], bool(best["per_channel"]), bool(best["reduce_range"]))
    why = f"{chosen.name}: the fastest scheme on {table.get('device')} ({reference}: {1 / float(best['ratio']):.2f}x fp32)"
    if table.get("settled") is False:
        why += f"; an unsettled table, its fp32 timings {float(table['fp32_spread']):.2f}x apart"
    return SearchPrecision(mode, chosen, mode, why, int(calibration_size))


__all__ = ["MODES", "PROXY_CALIBRATION", "SearchPrecision", "search_precision"]
