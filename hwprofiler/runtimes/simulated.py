"""A simulated CPU: a deterministic analytic cost model behind the same interface as a real runtime.

It prices a graph from the fused kernels `kernels_from_onnx` finds, the way a CPU spends time:
a fixed cost per kernel and per run, multiply-accumulates over a throughput, bytes moved over a
bandwidth, and onnxruntime-like layout effects (convolutions whose channel counts are off the
SIMD block run on a slower path, and switching layouts between kernels costs a reorder), so odd
channel counts can be slower than the dense model, as on a real CPU. A single-kernel graph pays
the per-run cost and its own layout reorders, as a real one does, so the LUT's kernel sum is
biased in the same ways and the predictor has the same corrections to learn.

Optional seeded noise adds time (never removes it, as on a shared host), and `drift` changes the
simulated machine's speed every `drift_period_s` of simulated time, the way a virtual CPU's speed
modes do; both are functions of the seed and the order of runs only, so a seeded run repeats
exactly. Measurements return at once: the clock is simulated.

INT8 kernels (quantized graphs, `KernelSpec.precision`) have a cost model of their own: MACs at
`int8_gmacs` (S8S8 `s8s8_factor` times slower, as onnxruntime's x86 kernels are), one byte per
activation and weight element, `quant_ns` per element for each quantize, dequantize or requantize,
and no blocked layout (onnxruntime runs QLinearConv channels-last, so moving between a blocked fp32
conv and an INT8 one costs a reorder).

Use it to try hilprune without caring about the machine, and to test code that uses latencies.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from hwprofiler.errors import DeviceError, KernelError
from hwprofiler.kernels import KernelSpec

if TYPE_CHECKING:
    import onnx

    from hwprofiler.devices import DeviceSpec

MODEL_VERSION = 2  # 2: INT8 kernels. Bump when the cost model changes: it is part of the fingerprint
LAYOUT_OPS = ("conv", "maxpool", "avgpool", "globalavgpool", "globalmaxpool")


@dataclass(frozen=True)
class SimParams:
    """The simulated CPU's constants (the `[simulated]` table of a device file)."""

    kernel_us: float = 1.5  # fixed cost of one kernel
    run_us: float = 4.0  # fixed cost of one Run() of a graph
    gmacs: float = 40.0  # multiply-accumulates per ns on the blocked path (GMAC/s)
    plain_factor: float = 2.5  # MAC time multiplier on the plain path (channels off the block)
    gbps: float = 20.0  # bytes moved per ns (GB/s): activations in and out, weights
    block: int = 16  # SIMD channel block
    reorder_ns: float = 0.4  # per element reordered between the blocked and plain layouts
    noise: float = 0.0  # additive noise: each run takes base * (1 + noise * Exp(1))
    drift: float = 0.0  # speed modes: runs take up to (1 + drift) times longer in slow periods
    drift_period_s: float = 0.2  # simulated seconds between speed-mode changes
    seed: int = 0
    # INT8 kernels (see the module docstring)
    int8_gmacs: float = 120.0  # U8S8 multiply-accumulates per ns (GMAC/s)
    s8s8_factor: float = 3.0  # MAC time multiplier of S8S8 kernels over U8S8
    quant_ns: float = 0.25  # per element quantized, dequantized or requantized

    def __post_init__(self) -> None:
        positive = ("kernel_us", "run_us", "gmacs", "plain_factor", "gbps", "drift_period_s", "int8_gmacs", "s8s8_factor")
        for name in positive:
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) > 0):
                raise DeviceError(f"[simulated] {name} must be a positive number, got {getattr(self, name)!r}")
        for name in ("reorder_ns", "noise", "drift", "quant_ns"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) >= 0):
                raise DeviceError(f"[simulated] {name} must be a number >= 0, got {getattr(self, name)!r}")
        if not (isinstance(self.block, int) and self.block >= 1):
            raise DeviceError(f"[simulated] block must be a positive integer, got {self.block!r}")


def blocked(k: KernelSpec, block: int) -> bool:
    """Whether the kernel runs in the blocked layout: every channel count on the block (a dense
    conv may also read fewer input channels than one block, as a network's first layer does).
    INT8 kernels never are: they run channels-last."""
    if k.precision != "fp32":
        return False
    if k.op == "conv" and k.groups == 1:
        return k.cout % block == 0 and (k.cin % block == 0 or k.cin < block)
    if k.op == "conv":  # grouped and depthwise: per-group channels on the block, or depthwise on it
        return k.cin % block == 0 and k.cout % block == 0
    if k.op in LAYOUT_OPS:
        return k.cin % block == 0
    return False


def _elems(k: KernelSpec) -> tuple[int, int]:
    ho, wo = k.out_hw
    if k.op == "linear":
        return k.batch * k.cin, k.batch * k.cout
    if k.op == "node":  # generic: every non-constant input in, every output out
        d = json.loads(k.detail)
        n_in = sum(math.prod(i["shape"]) for i in d["inputs"] if i is not None and "const" not in i)
        return n_in, sum(math.prod(o["shape"]) for o in d["outputs"])
    return k.batch * k.cin * k.h * k.w, k.batch * k.cout * ho * wo


def int8_kernel_us(k: KernelSpec, p: SimParams) -> float:
    """An INT8 kernel's own time in microseconds: one byte per element moved, MACs at the INT8
    throughput, and the (re)quantization of every element it writes."""
    n_in, n_out = _elems(k)
    if k.op in ("quantize", "dequantize"):  # reads 4 bytes and writes 1, or the reverse
        return p.kernel_us + 5.0 * n_in / (p.gbps * 1e3) + n_in * p.quant_ns / 1e3
    moved = n_in + n_out + k.params + (n_in if k.op in ("add", "mul") else 0)
    t = p.kernel_us + moved / (p.gbps * 1e3) + n_out * p.quant_ns / 1e3
    if k.macs:
        t += k.macs / (p.int8_gmacs * 1e3) * (p.s8s8_factor if k.precision == "s8s8" else 1.0)
    return t


def kernel_us(k: KernelSpec, p: SimParams) -> float:
    """One kernel's own time in microseconds (no per-run cost, no layout reorders)."""
    if k.precision != "fp32":
        return int8_kernel_us(k, p)
    n_in, n_out = _elems(k)
    moved = n_in + n_out + k.params
    if k.op == "conv" and k.residual_add:
        moved += n_out
    if k.op in ("add", "mul"):
        moved += n_in
    t = p.kernel_us + 4.0 * moved / (p.gbps * 1e3)
    if k.macs:
        mac_us = k.macs / (p.gmacs * 1e3)
        t += mac_us if (k.op == "linear" or blocked(k, p.block)) else mac_us * p.plain_factor
    return t


def graph_us(kernels: Sequence[KernelSpec], p: SimParams) -> float:
    """A whole graph's time per run in microseconds: its kernels, the run cost, and a reorder
    wherever consecutive layout-bearing kernels (and the graph's ends) change layout."""
    total = p.run_us + sum(kernel_us(k, p) for k in kernels)
    prev_blocked, prev_elems = False, 0  # the graph's input and output are in the plain layout
    for k in kernels:
        if k.op not in LAYOUT_OPS:
            continue
        n_in, n_out = _elems(k)
        b = blocked(k, p.block)
        if b != prev_blocked:
            total += (n_in if b else prev_elems) * p.reorder_ns / 1e3
        prev_blocked, prev_elems = b, n_out
    if prev_blocked:
        total += prev_elems * p.reorder_ns / 1e3
    return total


class _Clock:
    """Simulated time of this process: drift (speed modes) is a function of it."""

    def __init__(self) -> None:
        self.s = 0.0


_CLOCK = _Clock()
_LOADS: dict[str, int] = {}


class SimRunnable:
    def __init__(self, base_ms: float, params: SimParams, stream: Sequence[int]) -> None:
        self.base_ms = base_ms
        self.params = params
        self.rng = np.random.default_rng(list(stream))

    def _drift(self, t_s: float) -> float:
        p = self.params
        if p.drift <= 0:
            return 1.0
        period = int(t_s // p.drift_period_s)
        u = np.random.default_rng([p.seed, 7919, period]).random()
        return 1.0 + p.drift * float(u)

    def time_runs(self, n: int) -> list[float]:
        p = self.params
        out = []
        for _ in range(n):
            t = self.base_ms * self._drift(_CLOCK.s)
            if p.noise > 0:
                t += self.base_ms * p.noise * float(self.rng.exponential())
            _CLOCK.s += t / 1e3
            out.append(t)
        return out

    def close(self) -> None:
        pass


class SimulatedRuntime:
    name = "simulated"

    def check_options(self, options: dict[str, Any], source: str) -> dict[str, Any]:
        known = {f.name for f in fields(SimParams)}
        unknown = set(options) - known
        if unknown:
            raise DeviceError(f"{source} [simulated]: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        try:
            return asdict(SimParams(**options))
        except DeviceError as e:
            raise DeviceError(f"{source} {e}") from None
        except TypeError as e:
            raise DeviceError(f"{source} [simulated]: {e}") from None

    def status(self, spec: DeviceSpec | None = None) -> tuple[bool, str]:
        return True, f"simulated CPU (cost model v{MODEL_VERSION}, no hardware needed)"

    def fingerprint(self, spec: DeviceSpec) -> dict[str, Any]:
        # No host information: the simulated CPU is the same on every machine.
        return {"simulated": dict(params(spec).__dict__), "cost_model": MODEL_VERSION}

    def load(self, data: bytes, spec: DeviceSpec) -> SimRunnable:
        from hwprofiler.onnx_kernels import kernels_from_onnx

        p = params(spec)
        try:
            kernels = kernels_from_onnx(data, batch=spec.batch)
        except KernelError as e:
            raise DeviceError(f"the simulated device cannot price this graph: {e}") from None
        digest = hashlib.sha256(data).digest()
        key = digest.hex()
        _LOADS[key] = _LOADS.get(key, 0) + 1
        stream = [p.seed, int.from_bytes(digest[:8], "little"), _LOADS[key]]
        base = graph_us(kernels, p) / 1e3
        if not (base > 0 and math.isfinite(base)):
            raise DeviceError(f"the simulated device priced the graph at {base} ms")
        return SimRunnable(base, p, stream)

    def kernel_layout(self, data: bytes, spec: DeviceSpec) -> str | None:
        return _layout(data, spec)

    def fused_groups(self, model: onnx.ModelProto, spec: DeviceSpec) -> list[list[int]]:
        # It prices graphs as onnxruntime fuses them (see `load`), so its kernels are those.
        from hwprofiler.onnx_kernels import onnxruntime_groups

        return onnxruntime_groups(model)


def _layout(data: bytes, spec: DeviceSpec) -> str | None:
    from hwprofiler.onnx_kernels import kernels_from_onnx

    layouts = [blocked(k, params(spec).block) for k in kernels_from_onnx(data, batch=spec.batch) if k.op in LAYOUT_OPS]
    if not layouts:
        return None
    return "blocked" if any(layouts) else "plain"


def params(spec: DeviceSpec) -> SimParams:
    """The simulated CPU of a device spec."""
    return SimParams(**spec.runtime_options)


RUNTIME = SimulatedRuntime()
