"""KernelMap: the kernels predicted for a policy equal those of the real pruned export."""

from __future__ import annotations

import random

import pytest

from hilprune.export import to_onnx_bytes
from hilprune.kernel_map import KernelMap, MixedKernelMap, ratio_grid
from hilprune.models import resolve_model
from hilprune.surgery import Surgeon
from hwprofiler import device_kernels, kernels_from_onnx

_MAPS: dict[tuple[str, tuple[int, ...]], tuple] = {}


def mapped(name: str, shape: tuple[int, int, int]) -> tuple:
    """(spec, surgeon, kernel map on sim-cpu: onnxruntime's fusions), built once per model for the module."""
    if (name, shape) not in _MAPS:
        spec = resolve_model(name, input_shape=shape)
        surgeon = Surgeon(spec.build(), spec.input_shape, spec.identity())
        _MAPS[name, shape] = (spec, surgeon, KernelMap(surgeon, device="sim-cpu"))
    return _MAPS[name, shape]


@pytest.mark.parametrize("name,shape", [("resnet20", (1, 16, 16)), ("mobilenetv2", (3, 16, 16)), ("digits-cnn", (1, 8, 8))])
def test_kernels_match_real_surgery(name: str, shape: tuple[int, int, int]) -> None:
    spec, surgeon, kmap = mapped(name, shape)
    assert len(kmap.dense) > len(surgeon.groups)
    rng = random.Random(0)
    for _ in range(3):
        ratios = [rng.choice([0.0, 0.3, 0.55, 0.8]) for _ in surgeon.groups]
        for round_to in (1, 4):
            pruned = surgeon.apply(surgeon.policy(ratios, round_to=round_to), count=False).model
            real = kernels_from_onnx(to_onnx_bytes(pruned, spec.input_shape))
            assert kmap.kernels_for(ratios, round_to) == real


def test_a_given_dense_export_is_the_one_the_map_reads() -> None:
    """The latency model hands over the dense export it already checked; the map must read that graph."""
    spec, surgeon, kmap = mapped("digits-cnn", (1, 8, 8))
    given = to_onnx_bytes(surgeon.dense, spec.input_shape)
    again = KernelMap(surgeon, device="sim-cpu", dense_onnx=given)
    assert again.dense_onnx is given and again.dense == kmap.dense and again.ties == kmap.ties


def test_reachable_covers_grid_policies() -> None:
    spec = resolve_model("digits-cnn", dataset="digits")
    surgeon = Surgeon(spec.build(), spec.input_shape, spec.identity())
    kmap = KernelMap(surgeon)
    grid = ratio_grid(0.8, 0.2)
    assert grid == [0.0, 0.2, 0.4, 0.6, 0.8]
    reachable = {k.key() for k in kmap.reachable(grid)}
    rng = random.Random(1)
    for _ in range(10):
        ratios = [rng.choice(grid) for _ in surgeon.groups]
        assert {k.key() for k in kmap.kernels_for(ratios)} <= reachable


def test_concat_and_depthwise_user_model(fixtures_dir) -> None:
    """After a concat a kernel's input channels are the sum of two groups' channels."""
    spec = resolve_model(f"{fixtures_dir / 'user_model.py'}:build", input_shape=(3, 16, 16))
    surgeon = Surgeon(spec.build(), spec.input_shape, spec.identity())
    kmap = KernelMap(surgeon)
    assert any(k.op == "concat" for k in kmap.dense)
    assert any(len(t.cin) >= 2 for t in kmap.ties), "some kernel should follow two groups (the concat)"
    rng = random.Random(3)
    for _ in range(4):
        ratios = [rng.choice([0.0, 0.25, 0.5, 0.75]) for _ in surgeon.groups]
        pruned = surgeon.apply(surgeon.policy(ratios), count=False).model
        assert kmap.kernels_for(ratios) == kernels_from_onnx(to_onnx_bytes(pruned, spec.input_shape))


@pytest.mark.parametrize("name,shape", [("resnet20", (1, 16, 16)), ("mobilenetv2", (3, 16, 16)), ("user", (3, 16, 16))])
def test_mixed_precision_kernels_match_the_real_quantized_export(name: str, shape: tuple[int, int, int], fixtures_dir) -> None:
    """A policy with some groups INT8 and some fp32: the mixed map (its pattern's structure on the
    dense graph, ties taken from the float map by node and tensor name) prices what the pruned,
    quantized export runs, residual adds that stop fusing, depthwise convs and a concat included."""
    from hilprune.quantize.mixed import fp32_nodes
    from hwprofiler.quantization import Scheme, quantize_structure

    spec, surgeon, kmap = mapped(f"{fixtures_dir / 'user_model.py'}:build" if name == "user" else name, shape)
    names = [g.name for g in surgeon.groups]

    def marked(ratios: list[float], fp32: set[str], round_to: int = 1):
        return surgeon.policy(ratios, round_to=round_to).set_precision({n: "fp32" if n in fp32 else "int8" for n in names})

    def structure(fp32: frozenset[str]) -> bytes:
        return quantize_structure(kmap.dense_onnx, Scheme(), fp32_nodes(kmap.dense_onnx, marked([0.0] * len(names), set(fp32))))

    mixed = MixedKernelMap(kmap, structure)
    rng = random.Random(2)
    patterns = [frozenset(n for n in names if rng.random() < 0.5) | {names[i]} for i in (0, 1)]
    for fp32 in patterns:
        for _ in range(2):
            ratios = [rng.choice([0.0, 0.3, 0.55, 0.8]) for _ in names]
            policy = marked(ratios, set(fp32), round_to=4)
            assert policy.graph_precision() == "mixed"
            onnx_fp32 = to_onnx_bytes(surgeon.apply(policy, count=False).model, spec.input_shape)
            real = device_kernels(quantize_structure(onnx_fp32, Scheme(), fp32_nodes(onnx_fp32, policy)), "sim-cpu")
            priced = mixed.kernels(list(policy.key()), fp32)
            assert priced == real
            assert {k.precision for k in priced} == {"fp32", "u8s8"}
            assert any(k.op in ("quantize", "dequantize") for k in priced)  # the borders' own kernels
    assert len(mixed._patterns) == len(patterns)  # one structure per pattern, whatever the widths


def test_device_kernel_nodes_name_each_kernels_nodes_lead_first() -> None:
    import onnx

    from hwprofiler import DeviceError, device_kernel_nodes, load_device

    spec = resolve_model("resnet20", input_shape=(1, 16, 16))
    data = to_onnx_bytes(spec.build(), spec.input_shape)
    labelled = device_kernel_nodes(data, "sim-cpu")
    assert [k for k, _ in labelled] == device_kernels(data, "sim-cpu")
    ops = {n.name: n.op_type for n in onnx.load_from_string(data).graph.node}
    lead = {"conv": "Conv", "linear": "Gemm", "globalavgpool": "GlobalAveragePool"}
    assert all(ops[names[0]] == lead[k.op] for k, names in labelled if k.op in lead)
    fused = [names for k, names in labelled if k.residual_add]
    assert fused and all([ops[n] for n in names][:2] == ["Conv", "Add"] for names in fused)  # conv + add (+ relu)
    remote = load_device("remote:http://127.0.0.1:9")
    with pytest.raises(DeviceError, match="remote"):
        device_kernel_nodes(data, remote)
