"""A kernel's time net of the per-inference fixed cost, taken by running it in a chain.

A one-kernel graph costs the kernel plus what every inference costs: the call itself and, on a
runtime with its own tensor layout (OpenVINO's blocked channels), reordering the graph's input and
output. Inside a network only the first and last kernels pay the reorders, so a table of
one-kernel times overprices every kernel, small ones most: on OpenVINO the bare kernel sum was
2.6x (resnet20) and 3.5x (mobilenetv2) the live network time (docs/benchmarks.md,
lut_fidelity_ov_zen5), and the predictor's calibration had to scale that away.

`n` copies of a kernel run back to back, timed interleaved with the kernel alone (so both see the
same machine speed), give the kernel's in-network time as their difference over n - 1; what is
left of the kernel alone is the fixed cost. A kernel whose output cannot feed its own input (a
stride, a change of channels, a pool) is charged instead the fixed cost of depthwise-conv probes
on its input and output tensors, whose reorders are the same size.

A device turns this on with `chain = n` in its `[kernel_policy]` (the OpenVINO devices do).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import replace

import onnx
from onnx import helper

from hwprofiler.devices import DeviceSpec, MeasurePolicy
from hwprofiler.kernels import KernelSpec, build_kernel_model
from hwprofiler.measure import measure_local, measure_pair_local, model_bytes
from hwprofiler.measurement import Measurement

MIN_SHARE = 0.05  # a kernel keeps at least this share of its time alone
_PROBES: OrderedDict[str, float] = OrderedDict()  # fixed cost per (device, policy, tensor shape), this process
_PROBES_SIZE = 512

Shape = tuple[int, int, int, int]


def _shape(vi: onnx.ValueInfoProto) -> tuple[int, tuple[int, ...]]:
    t = vi.type.tensor_type
    return t.elem_type, tuple(d.dim_value for d in t.shape.dim)


def chain_model(model: onnx.ModelProto, n: int) -> onnx.ModelProto | None:
    """`n` copies of a one-kernel graph (`build_kernel_model`), each copy's output `y` feeding the
    next copy's input `x`; other inputs (a residual, an operand) are shared by all copies. None
    where the output cannot feed the input (another shape or type, or a graph without x and y)."""
    g = model.graph
    x = next((i for i in g.input if i.name == "x"), None)
    if x is None or len(g.output) != 1 or g.output[0].name != "y" or _shape(x) != _shape(g.output[0]):
        return None
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    prev = "x"
    for c in range(n):
        names = {"x": prev}
        for init in g.initializer:
            copy = onnx.TensorProto()
            copy.CopyFrom(init)
            copy.name = names[init.name] = f"{init.name}__{c}"
            inits.append(copy)
        for node in g.node:
            for out in node.output:
                names[out] = f"{out}__{c}"
        for node in g.node:
            copy_node = onnx.NodeProto()
            copy_node.CopyFrom(node)
            copy_node.input[:] = [names.get(i, i) for i in node.input]
            copy_node.output[:] = [names[o] for o in node.output]
            copy_node.name = f"{node.name or node.op_type}__{c}"
            nodes.append(copy_node)
        prev = names["y"]
    out = onnx.ValueInfoProto()
    out.CopyFrom(g.output[0])
    out.name = prev
    graph = helper.make_graph(nodes, f"{g.name}_x{n}", list(g.input), [out], inits)
    chained = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="hwprofiler")
    chained.ir_version = model.ir_version
    return chained


def _bounded(net_ms: float, alone_ms: float) -> float:
    """A kernel keeps between MIN_SHARE and all of its time alone, whatever the noise in a difference."""
    return min(max(net_ms, MIN_SHARE * alone_ms), alone_ms)


def _net(pair_chain_ms: float, alone_ms: float, n: int) -> tuple[float, float]:
    """(kernel time in a chain, fixed cost) from the chain of `n` and the kernel alone."""
    net = _bounded((pair_chain_ms - alone_ms) / (n - 1), alone_ms)
    return net, alone_ms - net


def _chained(model: onnx.ModelProto, device: DeviceSpec, policy: MeasurePolicy) -> tuple[Measurement, float] | None:
    """The kernel alone (its Measurement) and its in-chain time, or None where it cannot chain."""
    chained = chain_model(model, policy.chain)
    if chained is None:
        return None
    pair = measure_pair_local(model_bytes(chained), model_bytes(model), device, policy)
    net, _ = _net(pair.model.latency_ms, pair.reference.latency_ms, policy.chain)
    return pair.reference, net


def probe_spec(shape: Shape) -> KernelSpec:
    """The cheapest kernel a blocked-layout runtime runs on a (batch, c, h, w) tensor and that
    chains: a 3x3 depthwise convolution."""
    b, c, h, w = shape
    return KernelSpec("conv", batch=b, cin=c, cout=c, kernel=3, stride=1, padding=1, groups=c, h=h, w=w)


def probe_fixed_cost(shape: Shape, device: DeviceSpec, policy: MeasurePolicy) -> float:
    """The fixed cost of a one-kernel graph on a tensor of `shape`: half of it is the input's
    share, half the output's. Memoised per device, policy and shape in this process."""
    key = json.dumps([device.to_dict(), policy.to_dict(), shape], sort_keys=True)
    if key not in _PROBES:
        model = build_kernel_model(probe_spec(shape), device.dtype)
        timed = _chained(model, device, policy)
        assert timed is not None, "a depthwise conv keeps its shape"
        alone, net = timed
        _PROBES[key] = alone.latency_ms - net
        if len(_PROBES) > _PROBES_SIZE:
            _PROBES.popitem(last=False)
    _PROBES.move_to_end(key)
    return _PROBES[key]


def _nchw(vi: onnx.ValueInfoProto) -> Shape | None:
    """A tensor's shape as (batch, c, h, w): rank 4 as it is, rank 2 (features) as (b, c, 1, 1)."""
    _, dims = _shape(vi)
    if len(dims) == 4:
        return (dims[0], dims[1], dims[2], dims[3])
    if len(dims) == 2:
        return (dims[0], dims[1], 1, 1)
    return None


def measure_kernel_chained(model: onnx.ModelProto, device: DeviceSpec, policy: MeasurePolicy) -> Measurement:
    """A one-kernel graph's (`build_kernel_model`) time net of the fixed cost: its `latency_ms` is
    the in-chain (or probe-corrected) time; its other statistics are the kernel alone's."""
    if policy.chain < 2:
        raise ValueError("measure_kernel_chained needs a policy with chain >= 2")
    timed = _chained(model, device, policy)
    if timed is not None:
        alone, net = timed
        return replace(alone, latency_ms=net)
    alone = measure_local(model_bytes(model), device, policy)
    ends = [_nchw(vi) for vi in (*model.graph.input[:1], model.graph.output[0])]  # a graph may take only constants
    costs = [probe_fixed_cost(s, device, policy) for s in ends if s is not None]
    if not costs:  # a tensor of another rank: no probe fits, the kernel keeps its time alone
        return alone
    fixed = sum(costs) / len(costs)
    return replace(alone, latency_ms=_bounded(alone.latency_ms - fixed, alone.latency_ms))
