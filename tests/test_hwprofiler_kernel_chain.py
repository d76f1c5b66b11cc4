"""Kernels timed in a chain: the chained graph computes what the kernel applied n times does, the
net time and fixed cost come out of the measurements as the model says, and a device asks for it
in its kernel policy."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest

from hwprofiler import DeviceError, KernelSpec, fingerprint_id, load_device
from hwprofiler import kernel_chain as kc
from hwprofiler.devices import MeasurePolicy
from hwprofiler.kernels import build_kernel_model
from hwprofiler.measurement import Measurement, PairedMeasurement
from hwprofiler.testing import fast_device

CONV = KernelSpec("conv", cin=8, cout=8, kernel=3, padding=1, h=6, w=6, activation="relu")
RESIDUAL = KernelSpec("conv", cin=8, cout=8, kernel=3, padding=1, h=6, w=6, residual_add=True, activation="relu")


def _run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


@pytest.mark.parametrize("spec", [CONV, RESIDUAL], ids=["conv", "conv+residual"])
def test_chain_computes_the_kernel_applied_n_times(spec):
    rng = np.random.default_rng(0)
    single = build_kernel_model(spec)
    chained = kc.chain_model(single, 3)
    assert chained is not None
    assert sum(n.op_type == "Conv" for n in chained.graph.node) == 3
    x = rng.standard_normal((1, 8, 6, 6)).astype(np.float32)
    shared = {"residual": rng.standard_normal((1, 8, 6, 6)).astype(np.float32)} if spec.residual_add else {}
    y = x
    for _ in range(3):
        y = _run(single, {"x": y, **shared})
    np.testing.assert_allclose(_run(chained, {"x": x, **shared}), y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "spec",
    [
        KernelSpec("conv", cin=8, cout=8, kernel=3, stride=2, padding=1, h=6, w=6),  # a stride
        KernelSpec("conv", cin=8, cout=16, kernel=1, h=6, w=6),  # more channels
        KernelSpec("globalavgpool", cin=8, cout=8, h=6, w=6),
        KernelSpec("quantize", cin=8, cout=8, h=6, w=6, precision="u8s8"),  # float in, uint8 out
    ],
    ids=["stride", "channels", "pool", "quantize"],
)
def test_a_kernel_whose_output_cannot_feed_its_input_does_not_chain(spec):
    assert kc.chain_model(build_kernel_model(spec), 3) is None


def _m(ms: float) -> Measurement:
    return Measurement(latency_ms=ms, estimator="min", median_ms=ms, min_ms=ms, p10_ms=ms, p90_ms=ms, n=3)


class ScriptedDevice:
    """Times as a blocked-layout runtime costs them: a fixed cost per inference (the call, plus
    reordering the graph's input and output) and each kernel's own time, per copy in a chain."""

    CALL, PER_ELEM = 0.004, 1e-5

    def __init__(self, kernel_ms: dict[int, float]) -> None:
        self.kernel_ms = kernel_ms  # by the number of MACs of the graph's one kind of kernel

    def _graph_ms(self, model) -> float:
        g = model.graph
        elems = [int(np.prod([d.dim_value for d in v.type.tensor_type.shape.dim])) for v in (g.input[0], g.output[0])]
        convs = [n for n in g.node if n.op_type in ("Conv", "GlobalAveragePool")]
        w = next((i for i in g.initializer if i.name.startswith("W")), None)
        key = int(np.prod(w.dims)) if w is not None else 0
        return self.CALL + self.PER_ELEM * sum(elems) + len(convs) * self.kernel_ms[key]

    def pair(self, data, reference, spec, policy):
        import onnx

        a, b = (self._graph_ms(onnx.load_from_string(d)) for d in (data, reference))
        return PairedMeasurement(model=_m(a), reference=_m(b), ratio=a / b)

    def single(self, data, spec, policy):
        import onnx

        return _m(self._graph_ms(onnx.load_from_string(data)))


def test_net_time_and_fixed_cost_come_out_of_the_chain(monkeypatch):
    kc._PROBES.clear()
    stride2 = KernelSpec("conv", cin=8, cout=16, kernel=3, stride=2, padding=1, h=6, w=6)
    probes = {s: kc.probe_spec(s) for s in [(1, 8, 6, 6), (1, 16, 3, 3)]}
    kernel_ms = {8 * 8 * 9: 0.02, 16 * 8 * 9: 0.03, **{p.cout * 9: 0.001 for p in probes.values()}}
    dev = ScriptedDevice(kernel_ms)
    monkeypatch.setattr(kc, "measure_pair_local", dev.pair)
    monkeypatch.setattr(kc, "measure_local", dev.single)
    device, policy = fast_device(), MeasurePolicy(chain=4)

    chained = kc.measure_kernel_chained(build_kernel_model(CONV), device, policy)
    assert chained.latency_ms == pytest.approx(0.02)  # the kernel's own time, no fixed cost
    assert chained.min_ms == pytest.approx(0.02 + ScriptedDevice.CALL + 2 * 288 * ScriptedDevice.PER_ELEM)  # alone

    # No chain for a stride: its input's and output's probes say what its one-kernel graph pays
    # beyond the kernel (the call once, and reordering 288 + 144 elements).
    net = kc.measure_kernel_chained(build_kernel_model(stride2), device, policy)
    assert net.latency_ms == pytest.approx(0.03)
    assert len(kc._PROBES) == 2
    kc.measure_kernel_chained(build_kernel_model(stride2), device, policy)
    assert len(kc._PROBES) == 2  # memoised per shape


def test_net_time_never_drops_below_a_share_of_the_kernel_alone():
    # Noise can make the chain look no slower than the kernel alone.
    net, fixed = kc._net(pair_chain_ms=0.1, alone_ms=0.1, n=4)
    assert net == pytest.approx(kc.MIN_SHARE * 0.1)
    assert fixed == pytest.approx(0.1 - net)
    # ...or slower than n copies of it: the kernel never costs more than its one-kernel graph.
    assert kc._net(pair_chain_ms=0.5, alone_ms=0.1, n=4) == (pytest.approx(0.1), pytest.approx(0.0))


def test_chain_belongs_to_the_kernel_policy(tmp_path):
    base = (tmp_path / "base.toml", 'name = "d"\n[kernel_policy]\nestimator = "min"\n')
    chained = (tmp_path / "chained.toml", 'name = "d"\n[kernel_policy]\nchain = 5\n')
    one = (tmp_path / "one.toml", 'name = "d"\n[kernel_policy]\nchain = 1\n')
    wrong = (tmp_path / "wrong.toml", 'name = "d"\n[policy]\nchain = 5\n')
    for path, text in (base, chained, one, wrong):
        path.write_text(text)
    assert load_device(str(chained[0])).kernel_policy.chain == 5
    # chain = 1 is timing kernels alone: the same fingerprint (and table) as before chaining existed.
    assert fingerprint_id(load_device(str(one[0]))) == fingerprint_id(load_device(str(base[0])))
    assert fingerprint_id(load_device(str(chained[0]))) != fingerprint_id(load_device(str(base[0])))
    with pytest.raises(DeviceError, match=r"belongs in \[kernel_policy\]"):
        load_device(str(wrong[0]))
    with pytest.raises(DeviceError, match="chain must be a whole number"):
        replace(MeasurePolicy(), chain=0)


def test_openvino_devices_time_kernels_in_a_chain():
    for name in ("ov-cpu-1t", "ov-cpu-2t", "ov-cpu-1t-bf16"):
        assert load_device(name).kernel_policy.chain > 1, name
    assert load_device("ort-cpu-1t").kernel_policy.chain == 1


def test_a_lut_on_a_chaining_device_stores_net_times(tmp_path, monkeypatch):
    """End to end on onnxruntime (milliseconds, the real runtime): the table fills through the
    chain and the probes, and each kernel's stored time is at most its one-kernel graph's."""
    monkeypatch.setenv("HWPROFILER_CACHE", str(tmp_path / "cache"))
    from hwprofiler import LUT

    kc._PROBES.clear()
    pairs = []
    real_pair = kc.measure_pair_local
    monkeypatch.setattr(kc, "measure_pair_local", lambda *a, **k: pairs.append(1) or real_pair(*a, **k))
    device = replace(fast_device(), kernel_policy=replace(fast_device().kernel_policy, chain=3))
    lut = LUT(device, tmp_path / "t.json")
    stride2 = KernelSpec("conv", cin=8, cout=16, kernel=3, stride=2, padding=1, h=6, w=6)
    assert lut.fill([CONV, stride2], progress=False) == 2
    assert len(pairs) == 3  # the conv against its chain; the stride's two probes against theirs
    for spec in (CONV, stride2):
        entry = lut.entries[spec.key()]
        assert 0 < entry["latency_ms"] <= entry["min_ms"], entry
