"""Split an (unoptimised, exported) ONNX model into the fused kernels onnxruntime executes.

Grouping follows what onnxruntime's CPU provider does at ORT_ENABLE_ALL (checked by saving
its optimised graph): BatchNormalization folds into the Conv before it; a Conv fuses the
activation that alone consumes it (Relu, Clip, Sigmoid, Tanh, LeakyRelu, HardSigmoid); a
Conv whose only consumer is a same-shape Add takes that Add (and the activation after it) as
a residual sum, the Add's first input winning when both come from convs; Gemm fuses a
following activation (FusedGemm); MatMul + bias Add becomes Gemm.  Flatten, Reshape, Dropout,
Identity, (Un)Squeeze and int64 shape arithmetic cost nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from hwprofiler.errors import KernelError
from hwprofiler.kernels import KernelSpec
from hwprofiler.quantized_graph import QDQ_OPS, Int8Roles, as_qdq

FREE_OPS = frozenset(
    {"Flatten", "Reshape", "Identity", "Dropout", "Squeeze", "Unsqueeze", "Constant", "Shape", "ConstantOfShape"}
)
SHAPE_ARITH_OPS = frozenset({"Gather", "Concat", "Slice", "Cast", "Mul", "Add", "Sub", "Div", "Range", "Expand"})
ACT_OPS = {
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "LeakyRelu": "leakyrelu",
    "HardSigmoid": "hardsigmoid",
    "Clip": "clip",
}


class _Graph:
    """Index of a shape-inferred graph: producers, consumers, static shapes and constants."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.nodes = list(g.node)
        self.outputs = {o.name for o in g.output}
        self.shapes: dict[str, tuple[int, ...] | None] = {}
        self.types: dict[str, int] = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            t = vi.type.tensor_type
            self.types[vi.name] = t.elem_type
            dims = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim]
            self.shapes[vi.name] = tuple(dims) if t.HasField("shape") and all(d > 0 for d in dims) else None
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        for node in self.nodes:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for a in node.attribute:
                    if a.name == "value":
                        self.consts[node.output[0]] = numpy_helper.to_array(a.t)
        for name, arr in self.consts.items():
            self.shapes[name] = tuple(int(d) for d in arr.shape)
            self.types.setdefault(name, onnx.helper.np_dtype_to_tensor_dtype(arr.dtype))
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for o in node.output:
                self.producer[o] = i
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(i)

    def shape(self, name: str, node: onnx.NodeProto) -> tuple[int, ...]:
        s = self.shapes.get(name)
        if s is None:
            raise KernelError(
                f"shape of {name!r} (input of {node.name or node.op_type}) is unknown; export with fixed input shapes"
            )
        return s

    def shape4(self, name: str, node: onnx.NodeProto) -> tuple[int, int, int, int]:
        s = self.shape(name, node)
        if len(s) != 4:
            raise KernelError(f"{node.name or node.op_type}: only NCHW (2-D spatial) tensors are supported, got shape {s}")
        return s

    def lone_consumer(self, name: str) -> int | None:
        """The node that alone reads `name`, or None (several readers, or a graph output)."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.outputs:
            return None
        return users[0]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _square(values: Sequence[int] | None, default: int, what: str, node: onnx.NodeProto) -> int:
    if not values:
        return default
    if len(set(values)) != 1:
        raise KernelError(f"{node.name or node.op_type}: non-square or asymmetric {what} {list(values)} is not supported")
    return int(values[0])


def _activation(g: _Graph, node: onnx.NodeProto) -> str:
    if node.op_type != "Clip":
        return ACT_OPS[node.op_type]
    attrs = _attrs(node)
    lo = attrs.get("min")
    hi = attrs.get("max")
    if len(node.input) > 1 and node.input[1] in g.consts:
        lo = float(g.consts[node.input[1]])
    if len(node.input) > 2 and node.input[2] in g.consts:
        hi = float(g.consts[node.input[2]])
    return "relu6" if (lo, hi) == (0.0, 6.0) else "clip"


def _take_activation(g: _Graph, out: str, used: set[int], group: list[int]) -> tuple[str | None, str]:
    j = g.lone_consumer(out)
    if j is None or j in used or g.nodes[j].op_type not in ACT_OPS:
        return None, out
    group.append(j)
    return _activation(g, g.nodes[j]), g.nodes[j].output[0]


def _conv_chain_end(g: _Graph, name: str, used: set[int]) -> bool:
    """Whether `name` is the output of an unfused Conv[+BN] that could take an Add."""
    p = g.producer.get(name)
    if p is None or p in used:
        return False
    if g.nodes[p].op_type == "BatchNormalization":
        q = g.producer.get(g.nodes[p].input[0])
        if q is None or q in used or g.lone_consumer(g.nodes[p].input[0]) != p:
            return False
        p = q
    return g.nodes[p].op_type == "Conv" and g.lone_consumer(name) is not None


def _takes_add(g: _Graph, add: onnx.NodeProto, out: str, used: set[int]) -> bool:
    if len(add.input) != 2 or add.input[0] == add.input[1]:
        return False
    other = add.input[1] if add.input[0] == out else add.input[0]
    s_out, s_other = g.shapes.get(out), g.shapes.get(other)
    if s_out is None or s_out != s_other or len(s_out) != 4:
        return False
    if add.input[1] == out and _conv_chain_end(g, add.input[0], used):
        return False  # the conv feeding input 0 takes this Add
    return True


def _conv(g: _Graph, i: int, used: set[int]) -> tuple[KernelSpec, list[int]]:
    node = g.nodes[i]
    group = [i]
    n, cin, h, w = g.shape4(node.input[0], node)
    wshape = g.shape(node.input[1], node)
    a = _attrs(node)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise KernelError(f"{node.name or 'Conv'}: auto_pad is not supported; export with explicit pads")
    kernel = _square(a.get("kernel_shape") or list(wshape[2:]), 1, "kernel", node)
    out = node.output[0]
    j = g.lone_consumer(out)
    if j is not None and j not in used and g.nodes[j].op_type == "BatchNormalization":
        group.append(j)
        out = g.nodes[j].output[0]
        j = g.lone_consumer(out)
    residual = False
    if j is not None and j not in used and g.nodes[j].op_type == "Add" and _takes_add(g, g.nodes[j], out, used):
        group.append(j)
        residual = True
        out = g.nodes[j].output[0]
    act, _ = _take_activation(g, out, used, group)
    spec = KernelSpec(
        op="conv",
        batch=n,
        cin=cin,
        cout=int(wshape[0]),
        kernel=kernel,
        stride=_square(a.get("strides"), 1, "strides", node),
        groups=int(a.get("group", 1)),
        padding=_square(a.get("pads"), 0, "pads", node),
        h=h,
        w=w,
        activation=act,
        residual_add=residual,
        dilation=_square(a.get("dilations"), 1, "dilations", node),
    )
    return spec, group


def _linear(g: _Graph, i: int, used: set[int]) -> tuple[KernelSpec, list[int]]:
    node = g.nodes[i]
    group = [i]
    xs = g.shape(node.input[0], node)
    ws = g.shape(node.input[1], node)
    if len(xs) != 2 or len(ws) != 2:
        raise KernelError(f"{node.name or node.op_type}: only 2-D {node.op_type} (a Linear layer) is supported")
    a = _attrs(node)
    if node.op_type == "Gemm":
        n, cin = (xs[1], xs[0]) if a.get("transA", 0) else xs
        cout = ws[0] if a.get("transB", 0) else ws[1]
        out = node.output[0]
    else:  # MatMul (+ bias Add)
        n, cin = xs
        cout = ws[1]
        out = node.output[0]
        j = g.lone_consumer(out)
        if j is not None and j not in used and g.nodes[j].op_type == "Add":
            other = [x for x in g.nodes[j].input if x != out]
            if other and other[0] in g.consts:
                group.append(j)
                out = g.nodes[j].output[0]
    act, _ = _take_activation(g, out, used, group)
    return KernelSpec(op="linear", batch=n, cin=cin, cout=cout, activation=act), group


def _pool(g: _Graph, i: int) -> KernelSpec:
    node = g.nodes[i]
    n, c, h, w = g.shape4(node.input[0], node)
    a = _attrs(node)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise KernelError(f"{node.name or node.op_type}: auto_pad is not supported; export with explicit pads")
    kernel = _square(a.get("kernel_shape"), 1, "kernel", node)
    return KernelSpec(
        op="maxpool" if node.op_type == "MaxPool" else "avgpool",
        batch=n,
        cin=c,
        cout=c,
        kernel=kernel,
        stride=_square(a.get("strides"), 1, "strides", node),
        padding=_square(a.get("pads"), 0, "pads", node),
        h=h,
        w=w,
        dilation=_square(a.get("dilations"), 1, "dilations", node),
    )


def _reduce_mean_axes(g: _Graph, node: onnx.NodeProto) -> list[int] | None:
    axes = _attrs(node).get("axes")
    if axes is None and len(node.input) > 1 and node.input[1] in g.consts:
        axes = [int(v) for v in g.consts[node.input[1]].ravel()]
    return None if axes is None else sorted(int(x) % 4 for x in axes)


def _eltwise_shape(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    if len(shape) == 4:
        return shape
    if len(shape) == 2:
        return shape[0], shape[1], 1, 1
    raise KernelError(f"element-wise op on a {len(shape)}-D tensor is not supported")


def _is_shape_arith(g: _Graph, node: onnx.NodeProto) -> bool:
    return node.op_type in SHAPE_ARITH_OPS and all(g.types.get(o) == onnx.TensorProto.INT64 for o in node.output)


def _fix_free_dims(model: onnx.ModelProto, batch: int | None) -> None:
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        for axis, dim in enumerate(inp.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                if axis != 0:
                    raise KernelError(f"input {inp.name!r} has a free dimension at axis {axis}; export with fixed shapes")
                dim.dim_value = batch or 1


def load_model(model: onnx.ModelProto | bytes | str | os.PathLike[str]) -> onnx.ModelProto:
    """A private copy of the model, whatever form it was given in."""
    copy = onnx.ModelProto()
    if isinstance(model, onnx.ModelProto):
        copy.CopyFrom(model)
    elif isinstance(model, (bytes, bytearray)):
        copy.ParseFromString(bytes(model))
    else:
        copy.ParseFromString(Path(model).read_bytes())
    return copy


def kernels_from_onnx(model: onnx.ModelProto | bytes | str | os.PathLike[str], *, batch: int | None = None) -> list[KernelSpec]:
    """The fused kernels of a model, in execution order.

    A free leading input dimension is set to `batch` (default 1).  Raises `KernelError` naming
    the node when an op cannot be priced by the lookup table.
    """
    m = load_model(model)
    _fix_free_dims(m, batch)
    m = as_qdq(m)  # INT8: QOperator nodes as DequantizeLinear -> float op -> QuantizeLinear (quantized_graph)
    m = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    g = _Graph(m)
    int8 = Int8Roles(g)  # INT8: which nodes run as INT8 kernels, which Q/DQ nodes run on their own
    used: set[int] = set()
    kernels: list[KernelSpec] = []
    for i, node in enumerate(g.nodes):
        if i in used:
            continue
        op = node.op_type
        group = [i]
        if node.domain not in ("", "ai.onnx"):
            raise KernelError(f"node {node.name or op!r} is in domain {node.domain!r}; export plain ONNX")
        if op in FREE_OPS or _is_shape_arith(g, node):
            used.add(i)
            continue
        if op in QDQ_OPS:  # INT8: a Q/DQ node is a kernel only where float and integer tensors meet
            used.add(i)
            q_kernel = int8.kernel(i, g.shape(node.input[0], node))
            if q_kernel is not None:
                kernels.append(q_kernel)
            continue
        if op == "Conv":
            spec, group = _conv(g, i, used)
        elif op in ("Gemm", "MatMul"):
            spec, group = _linear(g, i, used)
        elif op in ("MaxPool", "AveragePool"):
            spec = _pool(g, i)
        elif op in ("GlobalAveragePool", "GlobalMaxPool") or (op == "ReduceMean" and _reduce_mean_axes(g, node) == [2, 3]):
            n, c, h, w = g.shape4(node.input[0], node)
            kind = "globalmaxpool" if op == "GlobalMaxPool" else "globalavgpool"
            spec = KernelSpec(op=kind, batch=n, cin=c, cout=c, h=h, w=w)
        elif op in ("Add", "Mul"):
            n, c, h, w = _eltwise_shape(g.shape(node.output[0], node))
            act, _ = _take_activation(g, node.output[0], used, group)
            spec = KernelSpec(op=op.lower(), batch=n, cin=c, cout=c, h=h, w=w, activation=act)
        elif op == "Concat" and len(node.input) > 1 and len(g.shape(node.output[0], node)) == 4:
            # Priced as the copy of the first input's channels next to the rest (axis 1 only).
            n, c_out, h, w = g.shape4(node.output[0], node)
            if _attrs(node).get("axis", 0) not in (1, -3):
                raise KernelError(f"{node.name or op}: only channel-axis Concat is supported")
            spec = KernelSpec(op="concat", batch=n, cin=g.shape4(node.input[0], node)[1], cout=c_out, h=h, w=w)
        elif op in ACT_OPS:
            n, c, h, w = _eltwise_shape(g.shape(node.input[0], node))
            spec = KernelSpec(op="act", batch=n, cin=c, cout=c, h=h, w=w, activation=_activation(g, node))
        else:
            raise KernelError(
                f"cannot price node {node.name or op!r} ({op}): supported are Conv, BatchNormalization after Conv, "
                "Gemm, MatMul, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, ReduceMean over H and W, "
                f"Add, Mul, channel Concat, {', '.join(ACT_OPS)} and shape-only ops"
            )
        used.update(group)
        kernels.append(int8.label(spec, group))  # INT8: the precision the group runs in
    return kernels
