"""One-kernel INT8 graphs in QDQ form, so a lookup table can time INT8 kernels on the device.

The float one-kernel graph is wrapped the way `onnxruntime.quantization.quantize_static` writes a
network in QDQ format: integer inputs pass through DequantizeLinear, weights are int8 with a
per-channel DequantizeLinear, the bias is int32, and the output is quantized again. onnxruntime
fuses DequantizeLinear -> op -> QuantizeLinear into one QLinearConv / QLinearAdd / QGemm ...
(checked with `SessionOptions.optimized_model_filepath`), so the graph times the fused kernel and
nothing else: the kernel's input arrives quantized and its output leaves quantized, as between
two INT8 kernels of a network. Where a network moves between float and integer tensors it runs a
standalone QuantizeLinear or DequantizeLinear, priced as the `quantize` / `dequantize` kernels.

As `quantize_static` does, a Relu or Clip after the op is absorbed into the output quantization
(its zero point at the bottom of the range), so an int8 conv with activation "relu" times the same
QLinearConv as one without; MaxPool keeps its input's scale, so onnxruntime runs it on integers.
Scales are fixed constants: the timing does not depend on them, and the bytes (and so cache keys)
are the same every time.

Checked with onnxruntime 1.32 on an AVX-512 VNNI host: the U8S8 conv, Gemm, Add, GlobalAveragePool
and Concat graphs become one QLinear* node each; an S8S8 conv stays a float Conv between its Q/DQ
nodes (onnxruntime has no S8S8 QLinearConv fusion there), which is what the table then measures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

if TYPE_CHECKING:  # a type only: kernels.py imports this module when it builds an int8 kernel
    from hwprofiler.kernels import KernelSpec

X_SCALE, Y_SCALE = 0.05, 0.1
_ACT_TYPES = {"u8": (TensorProto.UINT8, np.uint8, 128), "s8": (TensorProto.INT8, np.int8, 0)}
_LOW_ZP = {"u8": 0, "s8": -128}  # zero point of a range that starts at 0 (after Relu)
ABSORBED = ("relu", "relu6", "clip")  # activations the output quantization clamps instead
SAME_SCALE_OPS = ("maxpool", "globalmaxpool")  # onnxruntime runs these on integers when scales match


def activation_type(precision: str) -> str:
    """'u8' or 's8': the activation half of an int8 precision name (u8s8, s8s8)."""
    return precision[:2]


def _scalar(name: str, value: float | int, dtype: type) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def build_int8_kernel_model(spec: KernelSpec, build_float: Callable[[KernelSpec, str], onnx.ModelProto]) -> onnx.ModelProto:
    """The QDQ one-kernel graph of an int8 `spec` (`build_float` builds float one-kernel graphs)."""
    from dataclasses import replace

    act = activation_type(spec.precision)
    elem, np_int, zp = _ACT_TYPES[act]
    if spec.op in ("quantize", "dequantize"):
        return _quant_model(spec, elem, np_int, zp)
    absorbed = spec.activation in ABSORBED
    model = build_float(replace(spec, precision="fp32", activation=None if absorbed else spec.activation), "float32")
    g = model.graph
    nodes: list[onnx.NodeProto] = []
    same = spec.op in SAME_SCALE_OPS
    inits = [_scalar("x_scale", X_SCALE, np.float32), _scalar("x_zp", zp, np_int)]
    inits += [
        _scalar("y_scale", X_SCALE if same else Y_SCALE, np.float32),
        _scalar("y_zp", _LOW_ZP[act] if absorbed else zp, np_int),
    ]
    inputs = []
    for vi in g.input:  # every float input arrives quantized
        q = helper.make_tensor_value_info(vi.name + "_q", elem, [d.dim_value for d in vi.type.tensor_type.shape.dim])
        inputs.append(q)
        nodes.append(helper.make_node("DequantizeLinear", [q.name, "x_scale", "x_zp"], [vi.name]))
    weight_scale = None
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        if init.name == "W":  # int8 weights, one scale per output channel (axis 0), as per_channel=True writes
            scale = (np.abs(arr).reshape(arr.shape[0], -1).max(axis=1) / 127.0 + 1e-8).astype(np.float32)
            weight_scale = scale
            q = np.clip(np.round(arr / scale.reshape(-1, *[1] * (arr.ndim - 1))), -127, 127).astype(np.int8)
            inits += [
                numpy_helper.from_array(q, "W_q"),
                numpy_helper.from_array(scale, "W_scale"),
                numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), "W_zp"),
            ]
            nodes.append(helper.make_node("DequantizeLinear", ["W_q", "W_scale", "W_zp"], ["W"], axis=0))
        elif init.name == "B" and weight_scale is not None:  # int32 bias at scale x_scale * w_scale
            b_scale = (weight_scale * X_SCALE).astype(np.float32)
            inits += [
                numpy_helper.from_array(np.round(arr / b_scale).astype(np.int32), "B_q"),
                numpy_helper.from_array(b_scale, "B_scale"),
                numpy_helper.from_array(np.zeros_like(b_scale, dtype=np.int32), "B_zp"),
            ]
            nodes.append(helper.make_node("DequantizeLinear", ["B_q", "B_scale", "B_zp"], ["B"], axis=0))
        else:
            inits.append(init)
    body = list(g.node)
    body[-1].output[0] = "y_float"
    nodes += body
    nodes.append(helper.make_node("QuantizeLinear", ["y_float", "y_scale", "y_zp"], ["y"]))
    y_dims = [d.dim_value for d in g.output[0].type.tensor_type.shape.dim]
    graph = helper.make_graph(
        nodes, f"kernel_{spec.op}_{spec.precision}", inputs, [helper.make_tensor_value_info("y", elem, y_dims)], inits
    )
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hwprofiler")
    out.ir_version = 8
    return out


def _quant_model(spec: KernelSpec, elem: int, np_int: type, zp: int) -> onnx.ModelProto:
    shape = [spec.batch, spec.cin, spec.h, spec.w]
    inits = [_scalar("scale", X_SCALE, np.float32), _scalar("zp", zp, np_int)]
    if spec.op == "quantize":
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
        y = helper.make_tensor_value_info("y", elem, shape)
        node = helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["y"])
    else:
        x = helper.make_tensor_value_info("x", elem, shape)
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
        node = helper.make_node("DequantizeLinear", ["x", "scale", "zp"], ["y"])
    graph = helper.make_graph([node], f"kernel_{spec.op}_{spec.precision}", [x], [y], inits)
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hwprofiler")
    out.ir_version = 8
    return out
