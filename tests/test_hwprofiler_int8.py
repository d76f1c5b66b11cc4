"""INT8 on the device side: quantized graphs grouped into the kernels onnxruntime runs, one-kernel
INT8 graphs for the LUT, the simulated device's INT8 cost model, schemes, and the precision table."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest

import hwprofiler
import hwprofiler.runtimes.simulated
from hwprofiler import KernelError, KernelSpec, build_kernel_model, kernels_from_onnx, load_device, measure_paired
from hwprofiler.cpu import cpu_info
from hwprofiler.precision import precision_table
from hwprofiler.quantization import ArrayReader, Quantizer, Scheme, candidate_schemes, needs_reduce_range
from hwprofiler.runtimes.ort import make_session
from hwprofiler.testing import fast_device, tiny_cnn

LAYOUT_ONLY = {"Flatten", "Reshape", "Transpose", "ReorderInput", "ReorderOutput"}
U8, S8 = Scheme("qdq", "u8"), Scheme("qdq", "s8")
SIM_U8S8 = candidate_schemes({})[0].name  # the simulated device's qdq-u8s8: 7-bit weights where this host lacks VNNI


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HWPROFILER_CACHE", str(tmp_path / "cache"))


def sim(**options) -> hwprofiler.DeviceSpec:
    base = load_device("sim-cpu")
    return replace(base, runtime_options=base.runtime_options | options)


def _reader(n: int = 4) -> ArrayReader:
    rng = np.random.default_rng(0)
    return ArrayReader("x", (rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(n)))


@pytest.fixture(scope="module")
def quantized() -> dict[str, bytes]:
    fp32 = tiny_cnn(c=16, c2=32, hw=16).SerializeToString()
    graphs = {"fp32": fp32}
    with Quantizer(fp32, _reader()) as q:
        for scheme in (U8, S8, Scheme("qoperator", "u8")):
            graphs[scheme.name] = q.quantize(scheme)
    with Quantizer(fp32, _reader(), exclude=["conv2"]) as q:
        graphs["mixed"] = q.quantize(U8)
    return graphs


def _ran(data: bytes, tmp_path) -> list[str]:
    opt = tmp_path / "opt.onnx"
    make_session(data, fast_device(), optimized_model_path=str(opt))
    return [n.op_type for n in onnx.load(str(opt)).graph.node if n.op_type not in LAYOUT_ONLY]


def test_a_qdq_u8s8_graph_groups_into_the_qlinear_kernels_onnxruntime_runs(quantized, tmp_path):
    kernels = kernels_from_onnx(quantized["qdq-u8s8"])
    ran = _ran(quantized["qdq-u8s8"], tmp_path)
    assert len(kernels) == len(ran), (kernels, ran)
    assert sum(op.startswith("QLinear") or op == "QGemm" for op in ran) == sum(
        k.op not in ("quantize", "dequantize") for k in kernels
    )
    assert [k.op for k in kernels if k.precision == "u8s8"][0] == "quantize"  # the float input is quantized once
    assert all(k.precision == "u8s8" for k in kernels)
    assert [k.op for k in kernels].count("add") == 1 and not any(k.residual_add for k in kernels)  # QLinearAdd of its own


def test_qoperator_and_qdq_graphs_price_alike(quantized):
    qdq, qop = kernels_from_onnx(quantized["qdq-u8s8"]), kernels_from_onnx(quantized["qop-u8s8"])
    assert qdq == qop
    assert {k.precision for k in kernels_from_onnx(quantized["qdq-s8s8"])} == {"s8s8"}
    assert len(kernels_from_onnx(quantized["qdq-s8s8"])) == len(qdq)


def test_a_layer_left_in_fp32_is_an_fp32_kernel_between_a_dequantize_and_a_quantize(quantized):
    kernels = kernels_from_onnx(quantized["mixed"])
    fp32 = [i for i, k in enumerate(kernels) if k.precision == "fp32"]
    assert [kernels[i].op for i in fp32] == ["conv"]  # conv2 (the residual conv) only
    (i,) = fp32
    assert kernels[i - 1].op == "dequantize" and kernels[i + 1].op == "quantize"
    assert sum(k.op == "quantize" for k in kernels) == 2 and sum(k.op == "dequantize" for k in kernels) == 2


@pytest.mark.parametrize(
    "spec, fused",
    [
        (KernelSpec(op="conv", cin=16, cout=32, kernel=3, padding=1, h=16, w=16, precision="u8s8"), "QLinearConv"),
        (KernelSpec(op="linear", cin=64, cout=10, precision="u8s8"), "QGemm"),
        (KernelSpec(op="add", cin=16, cout=16, h=8, w=8, precision="u8s8"), "QLinearAdd"),
        (KernelSpec(op="globalavgpool", cin=16, cout=16, h=8, w=8, precision="u8s8"), "QLinearGlobalAveragePool"),
    ],
)
def test_one_kernel_int8_graphs_round_trip_and_fuse_into_one_node(spec, fused, tmp_path):
    model = build_kernel_model(spec)
    onnx.checker.check_model(model)
    assert kernels_from_onnx(model) == [spec]
    assert _ran(model.SerializeToString(), tmp_path) == [fused]
    assert model.SerializeToString() == build_kernel_model(spec).SerializeToString()  # stable cache keys


def test_relu_after_an_int8_conv_is_absorbed_into_its_quantization(tmp_path):
    spec = KernelSpec(op="conv", cin=16, cout=16, kernel=3, padding=1, h=8, w=8, activation="relu", precision="u8s8")
    model = build_kernel_model(spec)
    assert _ran(model.SerializeToString(), tmp_path) == ["QLinearConv"]
    assert kernels_from_onnx(model) == [replace(spec, activation=None)]


def test_quantize_and_dequantize_kernels_time_one_node(tmp_path):
    for op in ("quantize", "dequantize"):
        spec = KernelSpec(op=op, cin=8, cout=8, h=4, w=4, precision="s8s8")
        assert kernels_from_onnx(build_kernel_model(spec)) == [spec]
        assert len(_ran(build_kernel_model(spec).SerializeToString(), tmp_path)) == 1


def test_fp32_keys_and_json_are_what_they_were_before_precision():
    k = KernelSpec(op="conv", cin=16, cout=16, kernel=3, padding=1, h=8, w=8)
    assert "precision" not in k.key() and "precision" not in k.to_dict()
    q = replace(k, precision="u8s8")
    assert q.key() != k.key() and q.key().endswith("|precision=u8s8")
    assert KernelSpec.from_dict(q.to_dict()) == q and KernelSpec.from_dict(k.to_dict()) == k


def test_bad_int8_specs_are_refused():
    with pytest.raises(KernelError, match="precision"):
        KernelSpec(op="conv", precision="int4")
    with pytest.raises(KernelError, match="needs an int8 precision"):
        KernelSpec(op="quantize")
    with pytest.raises(KernelError, match="no residual add"):
        KernelSpec(op="conv", residual_add=True, precision="u8s8")


def test_the_simulated_device_prices_int8_by_its_own_constants(quantized):
    fp32, u8, s8 = quantized["fp32"], quantized["qdq-u8s8"], quantized["qdq-s8s8"]

    def ratio(graph: bytes, dev: hwprofiler.DeviceSpec) -> float:
        return measure_paired(graph, fp32, dev, cache=False).ratio

    default = sim()
    assert ratio(u8, default) < ratio(s8, default)  # S8S8 MACs take s8s8_factor times longer
    assert ratio(s8, sim(s8s8_factor=0.5)) < ratio(u8, sim(s8s8_factor=0.5))
    assert ratio(u8, sim(int8_gmacs=10.0)) > ratio(u8, default)
    assert hwprofiler.fingerprint_id(sim(int8_gmacs=10.0)) != hwprofiler.fingerprint_id(default)


def test_schemes_parse_their_names_and_reduce_range_follows_the_cpu():
    for s in candidate_schemes({}) + [Scheme("qoperator", "s8", per_channel=False, reduce_range=True)]:
        assert Scheme.parse(s.name) == s
    vnni = {"arch": "x86_64", "isa": ["avx2", "avx512_vnni"]}
    assert [s.name for s in candidate_schemes(vnni)] == ["qdq-u8s8", "qdq-s8s8", "qop-u8s8", "qop-s8s8"]
    old_x86 = {"arch": "x86_64", "isa": ["avx2", "fma"]}
    assert needs_reduce_range(old_x86) and all(s.reduce_range for s in candidate_schemes(old_x86))
    assert [s.name for s in candidate_schemes(old_x86)] == ["qdq-u8s8-rr", "qdq-s8s8-rr", "qop-u8s8-rr", "qop-s8s8-rr"]
    assert not needs_reduce_range(vnni)
    # no hardware named (the simulated device): this host's CPU decides, as it runs the accuracy check
    assert needs_reduce_range({}) == needs_reduce_range(cpu_info()) == needs_reduce_range({"runtime": "simulated"})
    assert not needs_reduce_range({"arch": "aarch64", "isa": ["asimd"]})
    with pytest.raises(hwprofiler.DeviceError, match="bad quantization scheme"):
        Scheme.parse("qdq-u8u8")


def test_the_precision_table_is_measured_once_per_fingerprint_and_follows_the_device():
    first = precision_table(sim())
    assert not first["cached"] and precision_table(sim())["cached"]
    assert first["best"] == SIM_U8S8 and not first["keeps_fp32"]
    assert {r["name"] for r in first["schemes"]} == {s.name for s in candidate_schemes({})}
    assert Scheme.parse(precision_table(sim(s8s8_factor=0.3))["best"]).activations == "s8"
    slow = precision_table(sim(int8_gmacs=5.0, quant_ns=5.0))
    assert slow["keeps_fp32"] and slow["best"] == "fp32" and all(r["ratio"] > 1 for r in slow["schemes"])


def test_a_model_gets_its_own_precision_table_timed_on_its_own_graph():
    """A search times the schemes on its dense model, not the reference: its own cache entry and rows."""
    from hwprofiler.precision import reference_model

    model = tiny_cnn(c=16, c2=32, hw=16).SerializeToString()
    reference = precision_table(sim())
    own = precision_table(sim(), model=model)
    assert not own["cached"] and precision_table(sim(), model=model)["cached"]
    assert own["reference"].startswith("the model itself") and reference["reference"] != own["reference"]
    assert {r["name"] for r in own["schemes"]} == {r["name"] for r in reference["schemes"]}
    fp32_own = sorted(r["fp32_ms"] for r in own["schemes"])[0]
    fp32_ref = sorted(r["fp32_ms"] for r in reference["schemes"])[0]
    assert fp32_own != pytest.approx(fp32_ref, rel=0.05)  # another graph was timed
    same = precision_table(sim(), model=reference_model(1))  # the reference graph given as a model: the same ranking
    assert not same["cached"] and same["best"] == reference["best"]


def _fp32_slowed_on(monkeypatch, slow_calls: set[int], factor: float = 5.0) -> None:
    """The real paired measurement on the simulated device, with the fp32 reference of the listed
    calls (1-based, in the order the table measures its schemes) taken in a slow window."""
    import hwprofiler.precision as precision

    real, calls = precision.measure_paired, [0]

    def measure(model, reference, device, **kw):
        pair = real(model, reference, device, **kw)
        calls[0] += 1
        if calls[0] in slow_calls:
            slowed = replace(pair.reference, latency_ms=pair.reference.latency_ms * factor)
            return replace(pair, reference=slowed, ratio=pair.ratio / factor)
        return pair

    monkeypatch.setattr(precision, "measure_paired", measure)


def test_a_table_whose_fp32_timings_disagree_is_measured_again(monkeypatch):
    from hwprofiler.precision import measure_precisions

    n = len(candidate_schemes({}))
    _fp32_slowed_on(monkeypatch, {2})  # qdq-s8s8's fp32 partner ran slow in the first attempt only
    table = measure_precisions(sim(run_us=3.0))
    assert table["attempts"] == 2 and table["settled"] and table["fp32_spread"] <= 1.25
    assert table["best"] == SIM_U8S8  # not the scheme the slow window made look 5x faster
    assert n == len(table["schemes"])


def test_a_table_that_never_settles_is_flagged_and_not_trusted_from_the_cache(monkeypatch):
    n = len(candidate_schemes({}))
    _fp32_slowed_on(monkeypatch, {2, n + 2, 2 * n + 2})  # qdq-s8s8's partner, in all three attempts
    dev = sim(run_us=4.0)
    first = precision_table(dev)
    assert first["attempts"] == 3 and first["settled"] is False and first["fp32_spread"] == pytest.approx(5.0, rel=0.01)
    # unsettled, yet the slow window no longer ranks: each ratio is on the fastest fp32 time of the table
    assert first["best"] == SIM_U8S8
    s8s8 = next(r for r in first["schemes"] if r["name"] == candidate_schemes({})[1].name)
    assert s8s8["ratio"] == pytest.approx(5.0 * s8s8["pair_ratio"], rel=0.05)
    assert s8s8["ratio"] == pytest.approx(s8s8["int8_ms"] / min(r["fp32_ms"] for r in first["schemes"]), rel=1e-9)
    again = precision_table(dev)  # the cached table is unsettled: measured afresh, the slow window gone
    assert not again["cached"] and again["settled"] and again["attempts"] == 1 and again["best"] == SIM_U8S8
    assert precision_table(dev)["cached"]


def test_a_lut_times_int8_kernels_so_the_kernel_sum_prices_an_int8_network(quantized):
    dev = sim()
    p = hwprofiler.runtimes.simulated.params(dev)
    kernels = kernels_from_onnx(quantized["qdq-u8s8"])
    lut = hwprofiler.LUT(dev)
    assert lut.fill(kernels, progress=False) == len({k.key() for k in kernels})
    kernel_sum = sum(lut.get(k) for k in kernels)
    live = hwprofiler.measure_onnx(quantized["qdq-u8s8"], dev, cache=False).latency_ms
    # each one-kernel graph pays one Run() (run_us); the network pays it once and, all INT8, no reorders
    assert kernel_sum - live == pytest.approx((len(kernels) - 1) * p.run_us / 1e3, rel=1e-9)
    fp32_sum = sum(lut.get(replace(k, precision="fp32")) for k in kernels if k.op not in ("quantize", "dequantize"))
    assert kernel_sum < fp32_sum  # the same kernels in fp32 cost more on this device
