"""Kernel specs, single-kernel models, and grouping an ONNX graph into fused kernels."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwprofiler import KernelError, KernelSpec, build_kernel_model, kernels_from_onnx
from hwprofiler.runtimes.ort import make_session, session_feeds
from hwprofiler.testing import fast_device, tiny_cnn

FREE = {"Flatten", "Reshape", "ReorderInput", "ReorderOutput"}


def test_tiny_cnn_groups_into_the_fused_kernels():
    got = kernels_from_onnx(tiny_cnn(c=16, c2=32, hw=16))
    assert got == [
        KernelSpec(op="conv", cin=3, cout=16, kernel=3, padding=1, h=16, w=16, activation="relu"),
        KernelSpec(op="conv", cin=16, cout=16, kernel=3, padding=1, h=16, w=16, activation="relu", residual_add=True),
        KernelSpec(op="conv", cin=16, cout=32, kernel=3, stride=2, padding=1, h=16, w=16, activation="relu"),
        KernelSpec(op="globalavgpool", cin=32, cout=32, h=8, w=8),
        KernelSpec(op="linear", cin=32, cout=10),
    ]


@pytest.mark.parametrize("c", [16, 30])  # 16: blocked NCHWc convs; 30: plain FusedConv path
def test_kernel_count_matches_what_onnxruntime_runs(tmp_path, c):
    model = tiny_cnn(c=c, c2=2 * c)
    opt = tmp_path / "opt.onnx"
    make_session(model.SerializeToString(), fast_device(), optimized_model_path=str(opt))
    ran = [n.op_type for n in onnx.load(str(opt)).graph.node if n.op_type not in FREE]
    assert len(ran) == len(kernels_from_onnx(model)), ran


def _w(name, *shape):
    return numpy_helper.from_array(np.random.default_rng(0).standard_normal(shape).astype(np.float32), name)


def _model(nodes, inits, x_shape, y_name, y_shape, opset=17):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(y_name, TensorProto.FLOAT, y_shape)],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_downsample_block_gives_the_add_to_the_first_input():
    # main: conv(x) -> relu -> conv ; shortcut: conv 1x1 stride 1; Add(main, shortcut) -> Relu
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["x", "wd", "bd"], ["sc"]),  # shortcut comes first in node order
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "sc"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    inits = [_w("w1", 8, 4, 3, 3), _w("b1", 8), _w("wd", 8, 4, 1, 1), _w("bd", 8), _w("w2", 8, 8, 3, 3), _w("b2", 8)]
    ks = kernels_from_onnx(_model(nodes, inits, [1, 4, 8, 8], "y", [1, 8, 8, 8]))
    assert [(k.kernel, k.residual_add, k.activation) for k in ks] == [(3, False, "relu"), (1, False, None), (3, True, "relu")]


def test_linear_from_matmul_add_and_standalone_ops():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("ReduceMean", ["r", "axes"], ["m"], keepdims=0),
        helper.make_node("MatMul", ["m", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["lin"]),
        helper.make_node("Clip", ["lin", "lo", "hi"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
        _w("w", 6, 5),
        _w("b", 5),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
    ]
    ks = kernels_from_onnx(_model(nodes, inits, ["N", 6, 4, 4], "y", ["N", 5], opset=18), batch=2)
    assert ks == [
        KernelSpec(op="act", batch=2, cin=6, cout=6, h=4, w=4, activation="relu"),
        KernelSpec(op="globalavgpool", batch=2, cin=6, cout=6, h=4, w=4),
        KernelSpec(op="linear", batch=2, cin=6, cout=5, activation="relu6"),
    ]


SPECS = [
    KernelSpec(op="conv", cin=8, cout=16, kernel=3, stride=2, padding=1, h=12, w=12, activation="relu6"),
    KernelSpec(op="conv", cin=16, cout=16, kernel=3, groups=16, padding=1, h=8, w=8, residual_add=True),
    KernelSpec(op="linear", cin=32, cout=10, activation="relu"),
    KernelSpec(op="maxpool", cin=8, cout=8, kernel=3, stride=2, padding=1, h=9, w=9),
    KernelSpec(op="avgpool", cin=8, cout=8, kernel=2, stride=2, h=8, w=8),
    KernelSpec(op="globalavgpool", cin=8, cout=8, h=4, w=4),
    KernelSpec(op="add", cin=8, cout=8, h=4, w=4, activation="relu"),
    KernelSpec(op="act", cin=8, cout=8, h=4, w=4, activation="sigmoid"),
    KernelSpec(op="bn", cin=8, cout=8, h=4, w=4),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.op)
def test_kernel_models_check_run_and_round_trip(spec):
    model = build_kernel_model(spec)
    onnx.checker.check_model(model, full_check=True)
    assert build_kernel_model(spec).SerializeToString() == model.SerializeToString()  # stable cache key
    sess = make_session(model.SerializeToString(), fast_device())
    (y,) = sess.run(None, session_feeds(sess, 1))
    ho, wo = spec.out_hw
    assert y.shape == ((1, spec.cout) if spec.op == "linear" else (1, spec.cout, ho, wo))
    assert KernelSpec.from_dict(spec.to_dict()) == spec
    assert len({spec.key(), *(s.key() for s in SPECS if s != spec)}) == len(SPECS)


def test_bad_specs_are_kernel_errors():
    with pytest.raises(KernelError, match="unknown kernel op"):
        KernelSpec(op="lstm")
    with pytest.raises(KernelError, match="groups"):
        KernelSpec(op="conv", cin=6, cout=8, groups=4)
    with pytest.raises(KernelError, match="unknown kernel spec keys"):
        KernelSpec.from_dict({"op": "conv", "chanels": 3})
    with pytest.raises(KernelError, match="positive"):
        KernelSpec.from_dict({"op": "conv", "cin": -1})
    assert KernelSpec(op="conv", cin=4, cout=8, kernel=3, padding=1, h=8, w=8).macs == 8 * 8 * 8 * 4 * 9


def test_concat_kernel_builds_runs_and_is_found() -> None:
    import onnxruntime as ort

    spec = KernelSpec(op="concat", cin=8, cout=20, h=6, w=6)
    sess = ort.InferenceSession(build_kernel_model(spec).SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"x": np.zeros((1, 8, 6, 6), np.float32), "rest": np.ones((1, 12, 6, 6), np.float32)})[0]
    assert out.shape == (1, 20, 6, 6)
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 8, 6, 6])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 12, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 20, 6, 6])
    graph = helper.make_graph([helper.make_node("Concat", ["a", "b"], ["y"], axis=1)], "cat", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert kernels_from_onnx(model) == [KernelSpec(op="concat", cin=8, cout=20, h=6, w=6)]
    with pytest.raises(KernelError):
        KernelSpec(op="concat", cin=8, cout=8, h=6, w=6)


def test_every_op_the_runtime_executes_is_priced(tmp_path):
    """Standalone BatchNormalization, unfused activations, Softmax, Resize, Pad, Slice, Split and
    Transpose (a channel shuffle) each become a kernel the LUT can time, and the simulated device
    prices the whole graph."""
    import torch
    from torch import nn

    from hilprune.export import to_onnx_bytes
    from hwprofiler import LUT, measure_onnx

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.bn(torch.relu(self.conv(x)))  # pre-activation style: BN after the activation, alone
            a, b = y.chunk(2, dim=1)
            y = torch.cat([a, b * 2], 1)
            n, c, h, w = y.shape
            y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle
            y = nn.functional.pad(y, (1, 1, 1, 1))
            y = nn.functional.interpolate(y, scale_factor=2.0, mode="nearest")
            y = self.conv2(y[:, :, 1:-1, 1:-1])
            return torch.softmax(y.mean(dim=(2, 3)), dim=1)

    data = to_onnx_bytes(Mixed().eval(), (3, 8, 8))
    kernels = kernels_from_onnx(data)
    ops = {k.onnx_op or k.op for k in kernels}
    assert {"bn", "Transpose", "Softmax", "Resize", "Pad"} <= ops, ops
    assert ops & {"Split", "Slice"}, ops
    lut = LUT(fast_device(), tmp_path / "lut.json")
    assert lut.fill(kernels, progress=False) == len({k.key() for k in kernels})  # each one timed as its own graph
    assert all(lut.get(k) > 0 for k in kernels)
    assert measure_onnx(data, "sim-cpu", cache=False).latency_ms > 0


def test_an_op_that_cannot_be_priced_is_one_error_naming_it():
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    then = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["t"])], "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4])]
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 4])]
    )
    node = helper.make_node("If", ["cond"], ["y"], name="branchy", then_branch=then, else_branch=other)
    graph = helper.make_graph(
        [node], "g", [cond, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(KernelError, match="branchy") as exc:
        kernels_from_onnx(model)
    assert "\n" not in str(exc.value)


def test_a_runtime_grouping_renamed_nodes_and_closest_specs() -> None:
    """Executed ops as OpenVINO reports them (here: as it would on a CPU that fuses two convs into
    one op): a renamed node joins its consumers' kernel, and a kernel no KernelSpec can express
    becomes the closest sequence of KernelSpecs."""
    from hwprofiler.runtimes.ov_fusion import node_groups
    from hwprofiler.testing import residual_block

    model = residual_block(c=8, hw=6)  # nodes: stem stem_bn stem_relu conv_a bn_a relu_a conv_b bn_b add relu
    layers = [
        ("Reorder", []),
        ("Convolution", ["hp#0", "hp#1", "hp#2", "hp#3/WithoutBiases", "hp#4", "hp#5"]),  # stem and conv_a as one op
        ("Convolution", ["Multiply_77", "hp#7", "hp#8", "y"]),  # conv_b renamed; the last Relu named after the output
    ]
    groups = node_groups(model, layers)
    assert groups == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9]]
    got = kernels_from_onnx(model, grouping=lambda m: node_groups(m, layers))
    conv = dict(op="conv", cout=8, kernel=3, padding=1, h=6, w=6, activation="relu")
    assert got == [KernelSpec(cin=3, **conv), KernelSpec(cin=8, **conv), KernelSpec(cin=8, residual_add=True, **conv)]
