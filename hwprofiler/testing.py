"""Tiny ONNX models and a fast device spec, for tests and demos (no torch needed)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hwprofiler.devices import DeviceSpec, MeasurePolicy

FAST_POLICY = MeasurePolicy(warmup=3, rounds=3, round_s=0.02, min_round_runs=3)
FAST_KERNEL_POLICY = MeasurePolicy(warmup=2, rounds=2, round_s=0.005, min_round_runs=3)


def fast_device(threads: int = 1, name: str = "test-fast") -> DeviceSpec:
    """The CPU device with short measurement policies, so a test suite stays quick."""
    return DeviceSpec(
        name=name,
        intra_op_threads=threads,
        policy=FAST_POLICY,
        kernel_policy=FAST_KERNEL_POLICY,
        source="hwprofiler.testing",
    )


def tiny_cnn(c: int = 16, c2: int | None = 32, hw: int = 16, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-Relu -> Conv-Add(residual)-Relu -> [Conv(stride 2)-Relu] -> GlobalAveragePool -> Flatten -> Gemm.

    Unoptimised, as an exporter writes it (BN not folded), opset 17, fixed 1x3xHWxHW input.
    """
    rng = np.random.default_rng(seed)

    def t(name: str, *shape: int, positive: bool = False) -> onnx.TensorProto:
        a = rng.standard_normal(shape).astype(np.float32) * 0.1
        return numpy_helper.from_array(np.abs(a) + 1.0 if positive else a, name)

    inits = [
        t("w1", c, 3, 3, 3),
        t("bn_g", c, positive=True),
        t("bn_b", c),
        t("bn_m", c),
        t("bn_v", c, positive=True),
        t("w2", c, c, 3, 3),
        t("b2", c),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "bn_g", "bn_b", "bn_m", "bn_v"], ["bn1"], name="bn1"),
        helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "r1"], ["a2"], name="add2"),
        helper.make_node("Relu", ["a2"], ["r2"], name="relu2"),
    ]
    last, width = "r2", c
    if c2 is not None:
        inits += [t("w3", c2, c, 3, 3), t("b3", c2)]
        nodes += [
            helper.make_node(
                "Conv", ["r2", "w3", "b3"], ["c3"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], name="conv3"
            ),
            helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        ]
        last, width = "r3", c2
    inits += [t("fc_w", classes, width), t("fc_b", classes)]
    nodes += [
        helper.make_node("GlobalAveragePool", [last], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hwprofiler.testing")
    model.ir_version = 8
    return model


def residual_block(c: int = 16, hw: int = 8, seed: int = 0) -> onnx.ModelProto:
    """A ResNet basic block after a stem, unoptimised (BN not folded), opset 17:
    stem Conv-BN-Relu (r0) -> Conv-BN-Relu -> Conv-BN -> Add(r0) -> Relu. Nodes are named
    stem, stem_bn, stem_relu, conv_a, bn_a, relu_a, conv_b, bn_b, add, relu."""
    rng = np.random.default_rng(seed)

    def t(name: str, *shape: int, positive: bool = False) -> onnx.TensorProto:
        a = rng.standard_normal(shape).astype(np.float32) * 0.1
        return numpy_helper.from_array(np.abs(a) + 1.0 if positive else a, name)

    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def conv_bn(name: str, bn: str, x: str, cin: int) -> str:
        inits.extend([t(f"{name}_w", c, cin, 3, 3), t(f"{bn}_g", c, positive=True), t(f"{bn}_b", c), t(f"{bn}_m", c)])
        inits.append(t(f"{bn}_v", c, positive=True))
        nodes.append(helper.make_node("Conv", [x, f"{name}_w"], [f"{name}_y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name=name))
        params = [f"{bn}_{k}" for k in "gbmv"]
        nodes.append(helper.make_node("BatchNormalization", [f"{name}_y", *params], [f"{bn}_y"], name=bn))
        return f"{bn}_y"

    r0 = "stem_relu_y"
    nodes.append(helper.make_node("Relu", [conv_bn("stem", "stem_bn", "x", 3)], [r0], name="stem_relu"))
    nodes.append(helper.make_node("Relu", [conv_bn("conv_a", "bn_a", r0, c)], ["relu_a_y"], name="relu_a"))
    nodes.append(helper.make_node("Add", [conv_bn("conv_b", "bn_b", "relu_a_y", c), r0], ["add_y"], name="add"))
    nodes.append(helper.make_node("Relu", ["add_y"], ["y"], name="relu"))
    graph = helper.make_graph(
        nodes,
        "residual_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, hw, hw])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hwprofiler.testing")
    model.ir_version = 8
    return model
