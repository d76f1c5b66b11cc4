"""Split an (unoptimised, exported) ONNX model into the fused kernels a runtime executes.

Two steps: a *grouping* says which nodes run as one kernel, then each group becomes a
`KernelSpec`. The grouping is the runtime's: `onnxruntime_groups` are fixed rules for
onnxruntime's CPU provider at ORT_ENABLE_ALL (checked by saving its optimised graph):
BatchNormalization folds into the Conv before it; a Conv fuses the activation that alone
consumes it (Relu, Clip, Sigmoid, Tanh, LeakyRelu, HardSigmoid); a Conv whose only consumer is
a same-shape Add takes that Add (and the activation after it) as a residual sum, the Add's first
input winning when both come from convs; Gemm fuses a following activation (FusedGemm); MatMul +
bias Add becomes Gemm. Other runtimes read theirs from the compiled model
(`hwprofiler.device_kernels`). Flatten, Reshape, Dropout, Identity, (Un)Squeeze and int64 shape
arithmetic cost nothing.

A group a KernelSpec cannot express becomes the closest sequence of KernelSpecs (`_segments`).

Every other op the runtime executes as its own kernel is priced too: a BatchNormalization no conv
absorbs is a `bn` kernel, and anything else (Transpose, Softmax, Resize, Pad, Slice, Split, ...) a
generic `node` kernel, timed alone at its shapes. An op that cannot be described that way (a
subgraph, an unknown shape) is one `KernelError` naming the node.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
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
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
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


def _conv_group(g: _Graph, i: int, used: set[int]) -> list[int]:
    """onnxruntime: Conv [+ BatchNormalization] [+ residual Add] [+ activation]."""
    group = [i]
    out = g.nodes[i].output[0]
    j = g.lone_consumer(out)
    if j is not None and j not in used and g.nodes[j].op_type == "BatchNormalization":
        group.append(j)
        out = g.nodes[j].output[0]
        j = g.lone_consumer(out)
    if j is not None and j not in used and g.nodes[j].op_type == "Add" and _takes_add(g, g.nodes[j], out, used):
        group.append(j)
        out = g.nodes[j].output[0]
    _take_activation(g, out, used, group)
    return group


def _linear_group(g: _Graph, i: int, used: set[int]) -> list[int]:
    """onnxruntime: Gemm [+ activation]; MatMul [+ constant bias Add] [+ activation]."""
    group = [i]
    out = g.nodes[i].output[0]
    if g.nodes[i].op_type == "MatMul":
        j = g.lone_consumer(out)
        if j is not None and j not in used and g.nodes[j].op_type == "Add" and _const_operand(g, j):
            group.append(j)
            out = g.nodes[j].output[0]
    _take_activation(g, out, used, group)
    return group


def _const_operand(g: _Graph, i: int) -> bool:
    """Whether a binary node has a constant operand (a bias or a scale, not a second tensor)."""
    return any(name in g.consts for name in g.nodes[i].input)


def _ort_groups(g: _Graph) -> list[list[int]]:
    used: set[int] = set()
    groups: list[list[int]] = []
    for i, node in enumerate(g.nodes):
        if i in used:
            continue
        if _is_free(g, node):
            used.add(i)
            continue
        group = [i]
        if node.op_type == "Conv":
            group = _conv_group(g, i, used)
        elif node.op_type in ("Gemm", "MatMul"):
            group = _linear_group(g, i, used)
        elif node.op_type in ("Add", "Mul"):
            _take_activation(g, node.output[0], used, group)
        used.update(group)
        groups.append(group)
    return groups


def onnxruntime_groups(model: onnx.ModelProto) -> list[list[int]]:
    """The node indices of each kernel onnxruntime's CPU provider runs at ORT_ENABLE_ALL, in order.

    `model` is shape-inferred (as `kernels_from_onnx` prepares it); these are fixed rules, checked
    against the optimised graphs onnxruntime saves (see the module docstring).
    """
    return _ort_groups(_Graph(model))


# A kernel's lead node, and the nodes a runtime may fuse after it that a KernelSpec can express.
def _accepts(g: _Graph, segment: list[int], i: int) -> bool:
    """Whether node `i` can join the kernel `segment` (lead node first) as one KernelSpec."""
    lead = g.nodes[segment[0]].op_type
    op = g.nodes[i].op_type
    after = [g.nodes[j].op_type for j in segment[1:]]
    if op in ACT_OPS:
        return lead in ("Conv", "Gemm", "MatMul", "Add", "Mul") and lead not in ACT_OPS
    if lead == "Conv":
        if op == "BatchNormalization" or (op in ("Add", "Mul") and _const_operand(g, i)):
            return not any(a in ACT_OPS or a == "Add" for a in after)  # folded into the weights and bias
        return op == "Add" and not any(g.nodes[j].op_type == "Add" and not _const_operand(g, j) for j in segment[1:])
    if lead in ("Gemm", "MatMul"):
        return op == "Add" and _const_operand(g, i) and not after
    return False


def _segments(g: _Graph, group: Sequence[int]) -> list[list[int]]:
    """Split one executed kernel's nodes into KernelSpec-shaped parts (usually just one).

    Shape-only nodes are dropped. A kernel a KernelSpec cannot express (say two convolutions fused
    into one, as OpenVINO does on some CPUs) becomes the closest sequence of KernelSpecs: a new
    part starts at every node the current part cannot take.
    """
    parts: list[list[int]] = []
    for i in sorted(group):
        if _is_free(g, g.nodes[i]):
            continue
        if parts and _accepts(g, parts[-1], i):
            parts[-1].append(i)
        else:
            parts.append([i])
    return parts


def _conv(g: _Graph, part: list[int]) -> KernelSpec:
    node = g.nodes[part[0]]
    n, cin, h, w = g.shape4(node.input[0], node)
    wshape = g.shape(node.input[1], node)
    a = _attrs(node)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise KernelError(f"{node.name or 'Conv'}: auto_pad is not supported; export with explicit pads")
    kernel = _square(a.get("kernel_shape") or list(wshape[2:]), 1, "kernel", node)
    residual = any(g.nodes[j].op_type == "Add" and not _const_operand(g, j) for j in part[1:])
    return KernelSpec(
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
        activation=_fused_activation(g, part),
        residual_add=residual,
        dilation=_square(a.get("dilations"), 1, "dilations", node),
    )


def _fused_activation(g: _Graph, part: list[int]) -> str | None:
    """The activation fused at the end of a kernel (the last one, if a runtime fused several)."""
    acts = [j for j in part[1:] if g.nodes[j].op_type in ACT_OPS]
    return _activation(g, g.nodes[acts[-1]]) if acts else None


def _linear(g: _Graph, part: list[int]) -> KernelSpec:
    node = g.nodes[part[0]]
    xs = g.shape(node.input[0], node)
    ws = g.shape(node.input[1], node)
    if len(xs) != 2 or len(ws) != 2:
        raise KernelError(f"{node.name or node.op_type}: only 2-D {node.op_type} (a Linear layer) is supported")
    a = _attrs(node)
    if node.op_type == "Gemm":
        n, cin = (xs[1], xs[0]) if a.get("transA", 0) else xs
        cout = ws[0] if a.get("transB", 0) else ws[1]
    else:  # MatMul (+ bias Add)
        n, cin = xs
        cout = ws[1]
    return KernelSpec(op="linear", batch=n, cin=cin, cout=cout, activation=_fused_activation(g, part))


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


def _json_attr(value: Any, node: onnx.NodeProto, name: str) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, str, bytes)) for v in value):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    raise KernelError(
        f"cannot price node {node.name or node.op_type!r} ({node.op_type}): its attribute {name!r} is a graph or tensor"
    )


def _generic(g: _Graph, node: onnx.NodeProto) -> KernelSpec:
    """Any other op as a one-node kernel, priced by timing it alone at its shapes (KernelSpec 'node')."""
    where = f"node {node.name or node.op_type!r} ({node.op_type})"
    inputs: list[dict[str, Any] | None] = []
    for name in node.input:
        if not name:
            inputs.append(None)
            continue
        shape = g.shape(name, node)
        etype = g.types.get(name)
        if not etype:
            raise KernelError(f"cannot price {where}: the type of its input {name!r} is unknown")
        item: dict[str, Any] = {"shape": list(shape), "type": int(etype)}
        if name in g.consts:
            item["const"] = g.consts[name].ravel().tolist()
        inputs.append(item)
    outputs = []
    for name in node.output:
        out_shape, out_type = g.shapes.get(name), g.types.get(name)
        if out_shape is None or not out_type:
            raise KernelError(f"cannot price {where}: the shape of its output {name!r} is unknown; export with fixed shapes")
        outputs.append({"shape": list(out_shape), "type": int(out_type)})
    attrs = {a.name: _json_attr(onnx.helper.get_attribute_value(a), node, a.name) for a in node.attribute}
    detail = json.dumps({"inputs": inputs, "outputs": outputs, "attrs": attrs, "opset": g.opset}, sort_keys=True)
    first = next((i for i in inputs if i is not None and "const" not in i), None)
    n, c, h, w = first["shape"] if first is not None and len(first["shape"]) == 4 else [1, 1, 1, 1]
    return KernelSpec(op="node", batch=int(n), cin=int(c), cout=int(c), h=int(h), w=int(w), onnx_op=node.op_type, detail=detail)


def _shapes_by_running(model: onnx.ModelProto, g: _Graph) -> None:
    """Fill the shapes static inference left unknown (slice bounds computed from a tensor's size,
    as a channel split written `x[:, : x.size(1) // 2]` exports) by running the graph once on
    random inputs with every intermediate value exposed: the input shapes are fixed, so the run
    knows every shape."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    for node in m.graph.node:
        for name in node.output:
            if name and name not in known and g.shapes.get(name) is None:
                m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
                known.add(name)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(m.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime's own error types
        raise KernelError(f"shapes of the graph are unknown and it cannot be run to find them: {str(e).strip()[:200]}") from None
    inits = {i.name for i in m.graph.initializer}
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in m.graph.input:
        if inp.name not in inits:
            t = inp.type.tensor_type
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
            feeds[inp.name] = rng.standard_normal([d.dim_value for d in t.shape.dim]).astype(dtype)
    names = [o.name for o in sess.get_outputs()]
    for name, value in zip(names, sess.run(names, feeds)):
        arr = np.asarray(value)
        if arr.ndim and all(d > 0 for d in arr.shape):
            g.shapes[name] = tuple(int(d) for d in arr.shape)
            g.types.setdefault(name, onnx.helper.np_dtype_to_tensor_dtype(arr.dtype))


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


def _is_free(g: _Graph, node: onnx.NodeProto) -> bool:
    return node.op_type in FREE_OPS or _is_shape_arith(g, node)


def _kernel(g: _Graph, part: list[int]) -> KernelSpec:
    """The KernelSpec of one kernel's nodes (lead node first)."""
    node = g.nodes[part[0]]
    op = node.op_type
    if op == "Conv":
        return _conv(g, part)
    if op in ("Gemm", "MatMul"):
        return _linear(g, part)
    if op in ("MaxPool", "AveragePool"):
        return _pool(g, part[0])
    if op in ("GlobalAveragePool", "GlobalMaxPool") or (op == "ReduceMean" and _reduce_mean_axes(g, node) == [2, 3]):
        n, c, h, w = g.shape4(node.input[0], node)
        kind = "globalmaxpool" if op == "GlobalMaxPool" else "globalavgpool"
        return KernelSpec(op=kind, batch=n, cin=c, cout=c, h=h, w=w)
    if op in ("Add", "Mul"):
        n, c, h, w = _eltwise_shape(g.shape(node.output[0], node))
        return KernelSpec(op=op.lower(), batch=n, cin=c, cout=c, h=h, w=w, activation=_fused_activation(g, part))
    if op == "Concat" and len(node.input) > 1 and len(g.shape(node.output[0], node)) == 4:
        # Priced as the copy of the first input's channels next to the rest (axis 1 only).
        n, c_out, h, w = g.shape4(node.output[0], node)
        if _attrs(node).get("axis", 0) not in (1, -3):
            raise KernelError(f"{node.name or op}: only channel-axis Concat is supported")
        return KernelSpec(op="concat", batch=n, cin=g.shape4(node.input[0], node)[1], cout=c_out, h=h, w=w)
    if op in ACT_OPS:
        n, c, h, w = _eltwise_shape(g.shape(node.input[0], node))
        return KernelSpec(op="act", batch=n, cin=c, cout=c, h=h, w=w, activation=_activation(g, node))
    if op == "BatchNormalization" and len(g.shape(node.input[0], node)) == 4:  # no conv before it to fold into
        n, c, h, w = g.shape4(node.input[0], node)
        return KernelSpec(op="bn", batch=n, cin=c, cout=c, h=h, w=w)
    return _generic(g, node)


Grouping = Callable[[onnx.ModelProto], list[list[int]]]


def prepare_model(model: onnx.ModelProto | bytes | str | os.PathLike[str], batch: int | None = None) -> onnx.ModelProto:
    """A shape-inferred private copy with a free leading input dimension set to `batch` (default 1):
    the graph every grouping reads, node indices included."""
    m = load_model(model)
    _fix_free_dims(m, batch)
    m = as_qdq(m)  # INT8: QOperator nodes as DequantizeLinear -> float op -> QuantizeLinear (quantized_graph)
    return onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)


def kernels_from_onnx(
    model: onnx.ModelProto | bytes | str | os.PathLike[str], *, batch: int | None = None, grouping: Grouping | None = None
) -> list[KernelSpec]:
    """The fused kernels of a model, in execution order.

    `grouping` says which nodes run as one kernel (node indices of the prepared model, see
    `prepare_model`); by default onnxruntime's (`onnxruntime_groups`). A device's own runtime
    decides it through `hwprofiler.device_kernels`. A free leading input dimension is set to
    `batch` (default 1). Raises `KernelError` naming the node when an op cannot be priced.
    """
    return [k for k, _ in kernel_nodes_from_onnx(model, batch=batch, grouping=grouping)]


def kernel_nodes_from_onnx(
    model: onnx.ModelProto | bytes | str | os.PathLike[str], *, batch: int | None = None, grouping: Grouping | None = None
) -> list[tuple[KernelSpec, tuple[str, ...]]]:
    """`kernels_from_onnx`, each kernel with the names of the nodes it runs, its lead node first
    (what lets a kernel map follow a graph rewritten under the same node names, e.g. a
    mixed-precision quantization of the same network)."""
    m = prepare_model(model, batch)
    g = _Graph(m)
    if any(g.shapes.get(o) is None for node in g.nodes for o in node.output if o):
        _shapes_by_running(m, g)
    for node in g.nodes:
        if node.domain not in ("", "ai.onnx"):
            raise KernelError(f"node {node.name or node.op_type!r} is in domain {node.domain!r}; export plain ONNX")
    groups = grouping(m) if grouping is not None else _ort_groups(g)
    int8 = Int8Roles(g)  # INT8: which nodes run as INT8 kernels, which Q/DQ nodes run on their own
    kernels: list[tuple[KernelSpec, tuple[str, ...]]] = []
    for group in groups:
        for part in _segments(g, group):
            lead = g.nodes[part[0]]
            names = tuple(g.nodes[i].name for i in part)
            if lead.op_type in QDQ_OPS:  # INT8: a Q/DQ node is a kernel only where float and integer tensors meet
                q_kernel = int8.kernel(part[0], g.shape(lead.input[0], lead))
                if q_kernel is not None:
                    kernels.append((q_kernel, names))
                continue
            kernels.append((int8.label(_kernel(g, part), part), names))  # INT8: the precision the part runs in
    return kernels
