"""INT8 graphs as onnxruntime runs them: which nodes are INT8 kernels, which Q/DQ nodes cost time.

`onnxruntime.quantization` writes a network in one of two forms:

- QDQ: float ops with DequantizeLinear on their inputs and QuantizeLinear on their output. At
  ORT_ENABLE_ALL the CPU provider fuses each DequantizeLinear -> op -> QuantizeLinear into one
  QLinearConv, QLinearAdd, QLinearGlobalAveragePool, QGemm ... (checked by saving
  `SessionOptions.optimized_model_filepath` with onnxruntime 1.32 on resnet20: 21 QLinearConv,
  9 QLinearAdd, 1 QLinearGlobalAveragePool, 1 QGemm, one QuantizeLinear of the input). A Q or DQ
  between two INT8 ops disappears into them; one where float and integer tensors meet (the
  network's input, an op left in float) runs on its own.
- QOperator: the QLinear* ops themselves (some in the com.microsoft domain), which ONNX shape
  inference does not know. `as_qdq` rewrites them into the QDQ form above, so both forms are
  grouped by one set of rules and priced alike.

Known bias: with int8 activations (S8S8) onnxruntime 1.32 on x86 leaves some convs in float
between their Q/DQ nodes (12 of resnet20's 21 on an AVX-512 VNNI host); the grouping here counts
them as INT8 kernels. A lookup table times each kernel's own one-kernel graph, and the simulated
device prices S8S8 by its own constant, so their times do reflect the scheme.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hwprofiler.errors import KernelError
from hwprofiler.kernels import KernelSpec

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# ops that onnxruntime runs directly on integer tensors without a kernel of their own
PASS_THROUGH = frozenset({"Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Dropout"})
# ops whose INT8 form may end in a float output (QGemm / MatMulIntegerToFloat)
FLOAT_OUT_OK = frozenset({"Gemm", "MatMul"})
WEIGHTED = frozenset({"Conv", "Gemm", "MatMul"})  # INT8 only with dequantized (integer) weights
# what fuses into the op before it (onnx_kernels' grouping): its INT8 output is quantized after these
FUSED_AFTER = frozenset({"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "BatchNormalization"})
_ACT: dict[int, str] = {int(onnx.TensorProto.UINT8): "u8", int(onnx.TensorProto.INT8): "s8"}
_QOPERATOR = frozenset(
    {
        "QLinearConv",
        "QLinearMatMul",
        "QGemm",
        "QLinearAdd",
        "QLinearMul",
        "QLinearGlobalAveragePool",
        "QLinearAveragePool",
        "QLinearConcat",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
    }
)


class GraphIndex(Protocol):
    """What the roles need from onnx_kernels' graph index."""

    nodes: list[onnx.NodeProto]
    outputs: set[str]
    consts: dict[str, np.ndarray]
    types: dict[str, int]
    producer: dict[str, int]
    consumers: dict[str, list[int]]


# --- QOperator -> QDQ --------------------------------------------------------------------------


def is_qoperator(model: onnx.ModelProto) -> bool:
    return any(n.op_type in _QOPERATOR for n in model.graph.node)


def as_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every QOperator node written as DequantizeLinear -> float op -> QuantizeLinear.

    Weights become int8 initializers of the same shape behind a DequantizeLinear, biases float ones
    (their values do not change a kernel's time); ops that run on integer tensors as they are (MaxPool) get the Q/DQ pair of
    the tensor they read. Returns the model itself when it has no QOperator nodes.
    """
    if not is_qoperator(model):
        return model
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    qparams: dict[str, tuple[str, str]] = {}  # integer tensor -> (scale, zero point) names
    new_nodes: list[onnx.NodeProto] = []
    extra_inits: list[onnx.TensorProto] = []
    counter = [0]

    def fresh(base: str) -> str:
        counter[0] += 1
        return f"{base}__qdq{counter[0]}"

    def dq(x: str, scale: str, zp: str) -> str:
        out = fresh(x)
        new_nodes.append(helper.make_node("DequantizeLinear", [x, scale, zp], [out]))
        return out

    def q(x: str, scale: str, zp: str, out: str) -> None:
        new_nodes.append(helper.make_node("QuantizeLinear", [x, scale, zp], [out]))
        qparams[out] = (scale, zp)

    def float_const(name: str) -> str:
        """A float initializer shaped like the (integer) initializer `name` (a bias)."""
        if name not in inits:
            raise KernelError(f"QOperator weight {name!r} is not an initializer")
        out = fresh(name)
        extra_inits.append(numpy_helper.from_array(np.zeros(tuple(inits[name].dims), dtype=np.float32), out))
        return out

    def int8_weight(name: str) -> str:
        """Integer weights shaped like `name`, dequantized as QDQ graphs write them."""
        if name not in inits:
            raise KernelError(f"QOperator weight {name!r} is not an initializer")
        w, scale, zp = fresh(name), fresh(name + "_scale"), fresh(name + "_zp")
        extra_inits.append(numpy_helper.from_array(np.zeros(tuple(inits[name].dims), dtype=np.int8), w))
        extra_inits.append(numpy_helper.from_array(np.array(1.0, dtype=np.float32), scale))
        extra_inits.append(numpy_helper.from_array(np.array(0, dtype=np.int8), zp))
        return dq(w, scale, zp)

    for node in g.node:
        op, i = node.op_type, list(node.input)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "channels_last"}
        if any(a.name == "channels_last" and helper.get_attribute_value(a) for a in node.attribute):
            raise KernelError(f"{node.name or op}: channels_last QOperator nodes are not supported; pass the unoptimized graph")
        if op == "QuantizeLinear":
            new_nodes.append(node)
            qparams[node.output[0]] = (i[1], i[2] if len(i) > 2 else "")
        elif op == "QLinearConv":
            bias = [float_const(i[8])] if len(i) > 8 and i[8] else []
            x = dq(i[0], i[1], i[2])
            mid = fresh(node.output[0])
            new_nodes.append(helper.make_node("Conv", [x, int8_weight(i[3]), *bias], [mid], name=node.name, **attrs))
            q(mid, i[6], i[7], node.output[0])
        elif op == "QLinearMatMul":
            mid = fresh(node.output[0])
            b = int8_weight(i[3]) if i[3] in inits else dq(i[3], i[4], i[5])
            new_nodes.append(helper.make_node("MatMul", [dq(i[0], i[1], i[2]), b], [mid], name=node.name))
            q(mid, i[6], i[7], node.output[0])
        elif op == "QGemm":
            c = [float_const(i[6])] if len(i) > 6 and i[6] else []
            b = int8_weight(i[3]) if i[3] in inits else dq(i[3], i[4], i[5])
            has_q = len(i) > 7 and i[7]
            mid = fresh(node.output[0]) if has_q else node.output[0]
            new_nodes.append(helper.make_node("Gemm", [dq(i[0], i[1], i[2]), b, *c], [mid], name=node.name, **attrs))
            if has_q:
                q(mid, i[7], i[8] if len(i) > 8 else "", node.output[0])
        elif op in ("QLinearAdd", "QLinearMul"):
            mid = fresh(node.output[0])
            float_op = "Add" if op == "QLinearAdd" else "Mul"
            new_nodes.append(helper.make_node(float_op, [dq(i[0], i[1], i[2]), dq(i[3], i[4], i[5])], [mid], name=node.name))
            q(mid, i[6], i[7], node.output[0])
        elif op in ("QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu"):
            float_op = op[len("QLinear") :]
            mid = fresh(node.output[0])
            new_nodes.append(helper.make_node(float_op, [dq(i[0], i[1], i[2])], [mid], name=node.name, **attrs))
            q(mid, i[3], i[4], node.output[0])
        elif op == "QLinearConcat":
            ins = [dq(i[k], i[k + 1], i[k + 2]) for k in range(2, len(i), 3)]
            mid = fresh(node.output[0])
            new_nodes.append(helper.make_node("Concat", ins, [mid], name=node.name, **attrs))
            q(mid, i[0], i[1], node.output[0])
        elif op in ("MaxPool", "GlobalMaxPool") and i[0] in qparams:  # runs on integers: give it its Q/DQ pair
            scale, zp = qparams[i[0]]
            mid = fresh(node.output[0])
            new_nodes.append(helper.make_node(op, [dq(i[0], scale, zp)], [mid], name=node.name, **attrs))
            q(mid, scale, zp, node.output[0])
        else:
            if op in PASS_THROUGH and i and i[0] in qparams:
                qparams[node.output[0]] = qparams[i[0]]
            new_nodes.append(node)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    out.graph.initializer.extend(extra_inits)
    del out.graph.value_info[:]  # integer tensors became float ones: let shape inference start over
    kept = [o for o in out.opset_import if o.domain not in ("", "ai.onnx")]
    del out.opset_import[:]
    out.opset_import.extend([helper.make_opsetid("", max(17, _opset(model))), *kept])
    return out


def _opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=17)


# --- roles of nodes in a QDQ graph -------------------------------------------------------------


class Int8Roles:
    """Which nodes of a (QDQ) graph are INT8 kernels and which Q/DQ nodes run on their own."""

    def __init__(self, g: GraphIndex) -> None:
        self.g = g
        self.any = any(n.op_type in QDQ_OPS for n in g.nodes)

    # helpers ---------------------------------------------------------------------------
    def _is_weight_dq(self, i: int) -> bool:
        node = self.g.nodes[i]
        return node.op_type == "DequantizeLinear" and node.input[0] in self.g.consts

    def _from_activation_dq(self, name: str) -> bool:
        p = self.g.producer.get(name)
        return p is not None and self.g.nodes[p].op_type == "DequantizeLinear" and not self._is_weight_dq(p)

    def _data_inputs(self, node: onnx.NodeProto) -> list[str]:
        return [x for x in node.input if x and x not in self.g.consts and not self._weight(x)]

    def _weight(self, name: str) -> bool:
        p = self.g.producer.get(name)
        return p is not None and self._is_weight_dq(p)

    def _to_q_only(self, name: str) -> bool:
        users = self.g.consumers.get(name, [])
        return bool(users) and name not in self.g.outputs and all(self.g.nodes[u].op_type == "QuantizeLinear" for u in users)

    def _chain_end(self, i: int) -> str:
        """The output after the activations/BN that fuse into node i (as onnx_kernels groups them)."""
        out = self.g.nodes[i].output[0]
        while True:
            users = self.g.consumers.get(out, [])
            if len(users) != 1 or out in self.g.outputs:
                return out
            nxt = self.g.nodes[users[0]]
            if nxt.op_type not in FUSED_AFTER:
                return out
            out = nxt.output[0]

    def _chain_head(self, p: int) -> int:
        """The op that activations/BN ending at node p fuse into (p itself when none)."""
        while self.g.nodes[p].op_type in FUSED_AFTER:
            q = self.g.producer.get(self.g.nodes[p].input[0])
            if q is None or self.g.nodes[q].op_type in QDQ_OPS or len(self.g.consumers.get(self.g.nodes[p].input[0], [])) != 1:
                return p
            p = q
        return p

    # roles -------------------------------------------------------------------------------
    def is_int8(self, i: int, end: str | None = None) -> bool:
        """Node i (a compute op) runs as an INT8 kernel: every data input is dequantized, and its
        (fused) output is quantized again (Gemm/MatMul may end in float)."""
        if not self.any:
            return False
        node = self.g.nodes[i]
        if node.op_type in QDQ_OPS:
            return False
        data = self._data_inputs(node)
        if not data or not all(self._from_activation_dq(x) for x in data):
            return False
        if node.op_type in WEIGHTED and len(node.input) > 1 and node.input[1] in self.g.consts:
            return False  # float weights (a layer excluded from quantization): it runs in float
        return node.op_type in FLOAT_OUT_OK or self._to_q_only(end or self._chain_end(i))

    def _int8_user(self, j: int) -> bool:
        node = self.g.nodes[j]
        if node.op_type in PASS_THROUGH:  # DQ -> Flatten -> Q: onnxruntime drops the pair
            return self._to_q_only(node.output[0])
        return self.is_int8(j)

    def _int8_source(self, p: int | None) -> bool:
        if p is None:
            return False
        node = self.g.nodes[p]
        if node.op_type in PASS_THROUGH:
            return bool(node.input) and self._from_activation_dq(node.input[0])
        head = self._chain_head(p)
        return self.is_int8(head, node.output[0])

    def precision(self, i: int, end: str | None = None) -> str:
        """'fp32', or the int8 precision (u8s8, s8s8) of compute node i."""
        if not self.is_int8(i, end):
            return "fp32"
        return self._act(self.g.producer[self._data_inputs(self.g.nodes[i])[0]]) + "s8"

    def _act(self, qdq: int) -> str:
        node = self.g.nodes[qdq]
        name = node.input[0] if node.op_type == "DequantizeLinear" else node.output[0]
        elem = self.g.types.get(name)
        if elem is None and len(node.input) > 2 and node.input[2] in self.g.consts:
            elem = helper.np_dtype_to_tensor_dtype(self.g.consts[node.input[2]].dtype)
        if elem is None and node.op_type == "QuantizeLinear" and len(node.input) < 3:
            elem = onnx.TensorProto.UINT8  # the ONNX default without a zero point
        if elem not in _ACT:
            raise KernelError(f"{node.name or node.op_type}: only uint8 and int8 activations can be priced")
        return _ACT[elem]

    def standalone(self, i: int) -> str | None:
        """For a Q/DQ node: 'quantize' / 'dequantize' when it runs as its own kernel, else None
        (weights, and Q/DQ between two INT8 ops, cost nothing of their own)."""
        node = self.g.nodes[i]
        if node.op_type == "DequantizeLinear":
            if self._is_weight_dq(i):
                return None
            users = self.g.consumers.get(node.output[0], [])
            fused = bool(users) and node.output[0] not in self.g.outputs and all(self._int8_user(j) for j in users)
            return None if fused else "dequantize"
        return None if self._int8_source(self.g.producer.get(node.input[0])) else "quantize"

    def kernel(self, i: int, shape: tuple[int, ...]) -> KernelSpec | None:
        """The standalone quantize/dequantize kernel of Q/DQ node i, or None."""
        kind = self.standalone(i)
        if kind is None:
            return None
        n, c, h, w = shape if len(shape) == 4 else (shape[0], int(np.prod(shape[1:])), 1, 1)
        return KernelSpec(op=kind, batch=n, cin=c, cout=c, h=h, w=w, precision=self._act(i) + "s8")

    def label(self, spec: KernelSpec, group: list[int]) -> KernelSpec:
        """`spec` with the precision its group runs in."""
        if not self.any:
            return spec
        end = self.g.nodes[group[-1]].output[0]
        precision = self.precision(group[0], end)
        return spec if precision == "fp32" else replace(spec, precision=precision)
