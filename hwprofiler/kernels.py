"""Kernel specs (one fused unit the runtime executes) and single-kernel ONNX models to time them.

Latencies are not additive per layer once the runtime fuses Conv+BN+Add+Relu, so the lookup
table is keyed by the fused kernel with its full shape, as nn-Meter does.  The exact channel
counts are part of the key: onnxruntime picks a different (blocked NCHWc) convolution when
channels are a multiple of the SIMD width, so odd widths are measured, not interpolated.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hwprofiler.errors import KernelError

# INT8 (added for quantized graphs): standalone QuantizeLinear / DequantizeLinear where float and
# integer tensors meet; everything between them runs as fused QLinear* kernels.
QUANT_OPS: tuple[str, ...] = ("quantize", "dequantize")
OPS: tuple[str, ...] = (
    "conv",
    "linear",
    "maxpool",
    "avgpool",
    "globalavgpool",
    "globalmaxpool",
    "add",
    "mul",
    "act",
    "concat",
    "bn",
    "node",
) + QUANT_OPS
# "fp32", or an INT8 kernel named by its activation and weight types (u8s8: uint8 activations,
# int8 weights). Quantize/dequantize kernels use the activation half only (weights are always s8).
PRECISIONS = ("fp32", "u8s8", "s8s8")
ACTIVATIONS = ("relu", "relu6", "clip", "sigmoid", "tanh", "leakyrelu", "hardsigmoid")
OPSET = 17
_ONNX_DTYPES = {"float32": (TensorProto.FLOAT, np.float32), "float16": (TensorProto.FLOAT16, np.float16)}


@dataclass(frozen=True)
class KernelSpec:
    """A fused kernel with its full input shape.

    conv: Conv (+folded BN) (+residual Add when `residual_add`) (+`activation`); `h`, `w` are the
    input size.  linear: Gemm/MatMul(+bias) from `cin` to `cout` features.  Pools keep
    `cin == cout`.  add/mul: an element-wise binary op on a (cin, h, w) tensor.  act: a standalone
    `activation`.  bn: a BatchNormalization no conv absorbs (pre-activation nets).  Square kernels,
    strides and symmetric padding only.

    node: any other ONNX op the runtime executes as its own kernel (Transpose, Softmax, Resize, Pad,
    Slice, Split, ...), timed as a one-node graph by shape: `onnx_op` names it and `detail` (JSON)
    holds its inputs' shapes and types, constant inputs, attributes and output shapes. Where its
    input is an NCHW tensor, `cin`/`h`/`w` repeat that shape.
    """

    op: str
    batch: int = 1
    cin: int = 1
    cout: int = 1
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    padding: int = 0
    h: int = 1
    w: int = 1
    activation: str | None = None
    residual_add: bool = False
    dilation: int = 1
    onnx_op: str | None = None
    detail: str = ""
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise KernelError(f"unknown kernel op {self.op!r}; known: {OPS}")
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise KernelError(f"unknown activation {self.activation!r}; known: {ACTIVATIONS}")
        if self.op == "act" and self.activation is None:
            raise KernelError("an 'act' kernel needs an activation")
        if (self.op == "node") != bool(self.onnx_op and self.detail):
            raise KernelError("a 'node' kernel needs onnx_op and detail, and only a 'node' kernel has them")
        ints = (self.batch, self.cin, self.cout, self.kernel, self.stride, self.groups, self.h, self.w, self.dilation)
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in ints) or self.padding < 0:
            raise KernelError(f"kernel sizes must be positive integers: {self}")
        if self.op == "conv" and (self.cin % self.groups or self.cout % self.groups):
            raise KernelError(f"groups={self.groups} must divide cin={self.cin} and cout={self.cout}")
        if self.op == "concat" and self.cout <= self.cin:
            raise KernelError(f"concat joins its first input's cin channels with more: cout must exceed cin ({self})")
        if self.residual_add and self.op != "conv":
            raise KernelError("residual_add only applies to conv kernels")
        if (
            self.op in ("maxpool", "avgpool", "globalavgpool", "globalmaxpool", "add", "mul", "act", "bn")
            and self.cin != self.cout
        ):
            raise KernelError(f"{self.op} keeps the channel count: cin must equal cout ({self})")
        if self.out_hw[0] < 1 or self.out_hw[1] < 1:
            raise KernelError(f"kernel has an empty output: {self}")
        self._check_precision()

    def _check_precision(self) -> None:
        if self.precision not in PRECISIONS:
            raise KernelError(f"unknown precision {self.precision!r}; known: {PRECISIONS}")
        if self.op in QUANT_OPS and (self.precision == "fp32" or self.cin != self.cout):
            raise KernelError(f"a {self.op} kernel needs an int8 precision and cin == cout ({self})")
        if self.precision != "fp32" and self.residual_add:
            raise KernelError("int8 convs take no residual add: onnxruntime runs the add as its own QLinearAdd")

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output height and width."""
        if self.op in ("conv", "maxpool", "avgpool"):
            k = self.dilation * (self.kernel - 1) + 1
            return (
                (self.h + 2 * self.padding - k) // self.stride + 1,
                (self.w + 2 * self.padding - k) // self.stride + 1,
            )
        if self.op in ("globalavgpool", "globalmaxpool", "linear"):
            return 1, 1
        return self.h, self.w

    @property
    def macs(self) -> int:
        """Multiply-accumulates of conv and linear kernels (0 for the rest): the FLOPs proxy."""
        ho, wo = self.out_hw
        if self.op == "conv":
            return self.batch * self.cout * ho * wo * (self.cin // self.groups) * self.kernel * self.kernel
        if self.op == "linear":
            return self.batch * self.cin * self.cout
        return 0

    @property
    def params(self) -> int:
        """Weights and biases of conv and linear kernels (0 for the rest)."""
        if self.op == "conv":
            return self.cout * (self.cin // self.groups) * self.kernel * self.kernel + self.cout
        if self.op == "linear":
            return self.cin * self.cout + self.cout
        return 0

    def key(self) -> str:
        """Stable text key used in lookup tables (fp32 kernels keep the keys they had before
        `precision` existed, so existing tables stay valid)."""
        return "|".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self) if not self._default_precision(f.name))

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON data; `precision` only when int8, so older profiler servers read fp32 specs."""
        d = asdict(self)
        if self._default_precision("precision"):
            del d["precision"]
        return d

    def _default_precision(self, name: str) -> bool:
        return name == "precision" and self.precision == "fp32"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KernelSpec:
        if not isinstance(d, dict):
            raise KernelError(f"a kernel spec must be an object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise KernelError(f"unknown kernel spec keys {sorted(unknown)}; known: {sorted(known)}")
        try:
            return cls(**d)
        except TypeError as e:
            raise KernelError(f"bad kernel spec {d}: {e}") from None


def _activation_nodes(act: str, x: str, y: str, inits: list[onnx.TensorProto], np_dtype: Any) -> list[onnx.NodeProto]:
    if act in ("relu6", "clip"):
        lo, hi = (0.0, 6.0) if act == "relu6" else (-1.0, 1.0)
        inits += [
            numpy_helper.from_array(np.array(lo, dtype=np_dtype), "clip_min"),
            numpy_helper.from_array(np.array(hi, dtype=np_dtype), "clip_max"),
        ]
        return [helper.make_node("Clip", [x, "clip_min", "clip_max"], [y])]
    op = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "leakyrelu": "LeakyRelu", "hardsigmoid": "HardSigmoid"}
    return [helper.make_node(op[act], [x], [y])]


def _seed(spec: KernelSpec) -> int:
    return int.from_bytes(hashlib.sha256(spec.key().encode()).digest()[:4], "little")


def _node_model(spec: KernelSpec, rng: np.random.Generator) -> onnx.ModelProto:
    """A one-node graph of a generic kernel, from its `detail` (see KernelSpec)."""
    d = json.loads(spec.detail)
    inputs, inits, names = [], [], []
    for i, item in enumerate(d["inputs"]):
        name = f"in{i}"
        if item is None:  # an optional input left out
            names.append("")
            continue
        names.append(name)
        if "const" in item:
            arr = np.array(item["const"], dtype=helper.tensor_dtype_to_np_dtype(item["type"])).reshape(item["shape"])
            inits.append(numpy_helper.from_array(arr, name))
        else:
            inputs.append(helper.make_tensor_value_info(name, item["type"], item["shape"]))
    outs = [helper.make_tensor_value_info(f"out{i}", o["type"], o["shape"]) for i, o in enumerate(d["outputs"])]
    node = helper.make_node(str(spec.onnx_op), names, [o.name for o in outs], domain=d.get("domain", ""), **d["attrs"])
    graph = helper.make_graph([node], f"kernel_{spec.onnx_op}", inputs, outs, inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", int(d.get("opset", OPSET)))], producer_name="hwprofiler"
    )
    model.ir_version = 8
    return model


def build_kernel_model(spec: KernelSpec, dtype: str = "float32") -> onnx.ModelProto:
    """A one-kernel ONNX graph (opset 17) with random weights seeded by the spec, so the bytes,
    and therefore cache keys, are the same every time.

    Convs always carry a bias, as BN-folded exports do: onnxruntime only fuses a residual Add
    into a Conv that has one.
    """
    if dtype not in _ONNX_DTYPES:
        raise KernelError(f"dtype {dtype!r} is not one of {sorted(_ONNX_DTYPES)}")
    if spec.precision != "fp32":
        from hwprofiler.int8_kernels import build_int8_kernel_model

        return build_int8_kernel_model(spec, build_kernel_model)
    elem, np_dtype = _ONNX_DTYPES[dtype]
    rng = np.random.default_rng(_seed(spec))

    def weight(name: str, shape: tuple[int, ...], fan_in: int) -> onnx.TensorProto:
        w = rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))
        return numpy_helper.from_array(w.astype(np_dtype), name)

    b, ho, wo = spec.batch, *spec.out_hw
    x_shape = [b, spec.cin] if spec.op == "linear" else [b, spec.cin, spec.h, spec.w]
    y_shape = [b, spec.cout] if spec.op == "linear" else [b, spec.cout, ho, wo]
    inputs = [helper.make_tensor_value_info("x", elem, x_shape)]
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    k, s, p, d = spec.kernel, spec.stride, spec.padding, spec.dilation
    if spec.op == "conv":
        fan_in = spec.cin // spec.groups * k * k
        inits += [weight("W", (spec.cout, spec.cin // spec.groups, k, k), fan_in), weight("B", (spec.cout,), 1)]
        nodes.append(
            helper.make_node(
                "Conv",
                ["x", "W", "B"],
                ["conv"],
                kernel_shape=[k, k],
                strides=[s, s],
                pads=[p, p, p, p],
                dilations=[d, d],
                group=spec.groups,
            )
        )
        last = "conv"
        if spec.residual_add:
            inputs.append(helper.make_tensor_value_info("residual", elem, y_shape))
            nodes.append(helper.make_node("Add", ["conv", "residual"], ["sum"]))
            last = "sum"
    elif spec.op == "linear":
        inits += [weight("W", (spec.cout, spec.cin), spec.cin), weight("B", (spec.cout,), 1)]
        nodes.append(helper.make_node("Gemm", ["x", "W", "B"], ["gemm"], transB=1))
        last = "gemm"
    elif spec.op in ("maxpool", "avgpool"):
        attrs: dict[str, Any] = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p, p, p, p]}
        if spec.op == "maxpool":
            attrs["dilations"] = [d, d]
        nodes.append(helper.make_node("MaxPool" if spec.op == "maxpool" else "AveragePool", ["x"], ["pool"], **attrs))
        last = "pool"
    elif spec.op in ("globalavgpool", "globalmaxpool"):
        op = "GlobalAveragePool" if spec.op == "globalavgpool" else "GlobalMaxPool"
        nodes.append(helper.make_node(op, ["x"], ["pool"]))
        last = "pool"
    elif spec.op == "concat":
        inputs.append(helper.make_tensor_value_info("rest", elem, [b, spec.cout - spec.cin, spec.h, spec.w]))
        nodes.append(helper.make_node("Concat", ["x", "rest"], ["cat"], axis=1))
        last = "cat"
    elif spec.op in ("add", "mul"):
        inputs.append(helper.make_tensor_value_info("other", elem, x_shape))
        nodes.append(helper.make_node("Add" if spec.op == "add" else "Mul", ["x", "other"], ["binary"]))
        last = "binary"
    elif spec.op == "bn":
        c = spec.cin
        inits += [
            numpy_helper.from_array((rng.random(c) + 0.5).astype(np_dtype), "scale"),
            numpy_helper.from_array(rng.standard_normal(c).astype(np_dtype), "bias"),
            numpy_helper.from_array(rng.standard_normal(c).astype(np_dtype), "mean"),
            numpy_helper.from_array((rng.random(c) + 0.5).astype(np_dtype), "var"),
        ]
        nodes.append(helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["bn"]))
        last = "bn"
    elif spec.op == "node":
        return _node_model(spec, rng)
    else:  # act
        last = "x"
    if spec.activation is not None:
        nodes += _activation_nodes(spec.activation, last, "act", inits, np_dtype)
        last = "act"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, f"kernel_{spec.op}", inputs, [helper.make_tensor_value_info("y", elem, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hwprofiler")
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    return model
