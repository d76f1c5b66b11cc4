"""OpenVINO as a device runtime: the devices, measuring, the fusions it really makes, the LUT and
predictor, the CLI, a live search, and the profiler server without torch. Real OpenVINO runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'hilprune[openvino]'")

from hwprofiler import (  # noqa: E402
    LUT,
    KernelSpec,
    Predictor,
    device_kernels,
    fingerprint,
    fingerprint_id,
    kernels_from_onnx,
    load_device,
    measure_onnx,
    measure_paired,
    usable_device,
)
from hwprofiler.client import ProfilerClient  # noqa: E402
from hwprofiler.errors import DeviceError  # noqa: E402
from hwprofiler.quantization import candidate_schemes  # noqa: E402
from hwprofiler.runtimes import get_runtime  # noqa: E402
from hwprofiler.runtimes.ov import capabilities, compile_onnx, unsupported_precision  # noqa: E402
from hwprofiler.testing import residual_block, tiny_cnn  # noqa: E402

DEVICE = "ov-cpu-1t"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HWPROFILER_CACHE", str(tmp_path / "hwcache"))


def executed(model) -> list[tuple[str, set[str]]]:
    """(layerType, originalLayersNames) of each op OpenVINO executes, read here with its own API."""
    compiled = ov.Core().compile_model(
        ov.Core().read_model(model=model.SerializeToString()), "CPU", dict(load_device(DEVICE).runtime_options)
    )
    rows = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        rows.append((info["layerType"].astype(str), set(info["originalLayersNames"].astype(str).split(","))))
    return rows


def test_device_loads_fingerprints_and_measures() -> None:
    dev = load_device(DEVICE)
    fp = fingerprint(dev)
    assert fp["runtime"] == "openvino" and fp["openvino"] == ov.__version__ and fp["cpu_model"]
    assert fp["openvino_config"] == {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    names = ["ov-cpu-1t", "ov-cpu-2t", "ort-cpu-1t"] + (["ov-cpu-1t-bf16"] if "BF16" in capabilities() else [])
    assert len({fingerprint_id(load_device(n)) for n in names}) == len(names)  # threads and precision are the device's
    if "BF16" in capabilities():
        assert fingerprint(load_device("ov-cpu-1t-bf16"))["openvino_config"]["INFERENCE_PRECISION_HINT"] == "bf16"
    usable, status = get_runtime("openvino").status()
    assert usable and status == f"OpenVINO {ov.__version__.split('-')[0]}"
    m = measure_onnx(tiny_cnn(), dev, cache=False)
    assert m.latency_ms > 0 and m.min_ms <= m.median_ms <= m.p90_ms and m.rounds == dev.policy.rounds
    assert m.latency_ms == m.min_ms  # the device's estimator


def test_a_precision_the_cpu_lacks_is_refused_with_the_reason() -> None:
    """bf16 on a CPU without bf16 units: OpenVINO emulates it (4.5x slower than f32 on an Ice Lake
    Xeon) or runs f32, so the device is refused, on this machine's real capabilities."""
    no_bf16 = ["WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT"]
    why = unsupported_precision("ov-x", {"INFERENCE_PRECISION_HINT": "bf16"}, no_bf16)
    assert why and "no native bf16" in why and "FP32, INT8" in why and "ov-cpu-1t" in why
    assert unsupported_precision("ov-x", {"INFERENCE_PRECISION_HINT": "bf16"}, [*no_bf16, "BF16"]) is None
    assert unsupported_precision("ov-x", {"INFERENCE_PRECISION_HINT": "f16"}, [*no_bf16, "BF16"])  # f16 needs FP16
    assert unsupported_precision("ov-x", {"INFERENCE_PRECISION_HINT": "f32"}, no_bf16) is None
    assert unsupported_precision("ov-x", {}, no_bf16) is None  # the default is f32
    spec = load_device("ov-cpu-1t-bf16")
    usable, status = get_runtime("openvino").status(spec)
    if "BF16" in capabilities():
        assert usable and measure_onnx(tiny_cnn(), spec, cache=False).latency_ms > 0
    else:
        assert not usable and "no native bf16" in status
        with pytest.raises(DeviceError, match="no native bf16 .* use an f32 device"):
            measure_onnx(tiny_cnn(), spec, cache=False)
        with pytest.raises(DeviceError, match="no native bf16"):
            fingerprint(spec)
        with pytest.raises(DeviceError, match="no native bf16"):
            usable_device("ov-cpu-1t-bf16")  # what a search checks before it writes its run directory


def test_f32_inference_computes_what_onnxruntime_does() -> None:
    """INFERENCE_PRECISION_HINT = f32: the measured model is the float32 model (not bf16)."""
    import onnxruntime as ort

    model = tiny_cnn()
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    got = compile_onnx(model.SerializeToString(), load_device(DEVICE))({"x": x})[0]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))


def test_paired_measurement_orders_a_big_and_a_small_model() -> None:
    dev = load_device(DEVICE)
    pair = measure_paired(tiny_cnn(c=48, c2=96, hw=32), tiny_cnn(c=4, c2=None, hw=8), dev, cache=False)
    assert pair.ratio == pytest.approx(pair.model.latency_ms / pair.reference.latency_ms) and pair.ratio > 1
    assert len(pair.round_ratios) == dev.policy.rounds and all(r > 0 for r in pair.round_ratios)


def test_a_residual_block_fuses_conv_bn_add_relu_into_one_kernel() -> None:
    model = residual_block(c=16, hw=8)
    ran = executed(model)
    (sum_op,) = [(t, names) for t, names in ran if "add" in names]
    # The sum, the folded BN and the block's last Relu (named after the graph output "y") are
    # post-ops of conv_b; the conv itself comes back renamed by the BN folding.
    assert sum_op[0] == "Convolution" and {"bn_b", "add", "y"} <= sum_op[1]
    conv = dict(op="conv", cout=16, kernel=3, padding=1, h=8, w=8, activation="relu")
    assert device_kernels(model, DEVICE) == [
        KernelSpec(cin=3, **conv),
        KernelSpec(cin=16, **conv),
        KernelSpec(cin=16, residual_add=True, **conv),
    ]


def test_openvino_keeps_a_sum_out_of_the_conv_that_reads_the_residual() -> None:
    """tiny_cnn's conv2 reads r1 and Add(conv2, r1) would overwrite r1 in place: OpenVINO runs the
    Add (with the Relu) as its own Eltwise; onnxruntime fuses it into the conv."""
    model = tiny_cnn(c=16, c2=32, hw=16)
    ran = dict((frozenset(names), t) for t, names in executed(model))
    assert ran[frozenset({"add2", "relu2"})] == "Eltwise"
    assert ran[frozenset({"conv2/WithoutBiases", "conv2"})] == "Convolution"
    ov_kernels, ort_kernels = device_kernels(model, DEVICE), kernels_from_onnx(model)
    assert [(k.op, k.activation, k.residual_add) for k in ov_kernels] == [
        ("conv", "relu", False),
        ("conv", None, False),
        ("add", "relu", False),
        ("conv", "relu", False),
        ("globalavgpool", None, False),
        ("linear", None, False),
    ]
    assert len(ort_kernels) == 5 and ort_kernels[1].residual_add
    assert device_kernels(model, "ort-cpu-1t") == ort_kernels  # each device gets its own runtime's fusions


def test_kernel_map_follows_openvino_fusions_of_pruned_exports() -> None:
    import random

    from hilprune.export import to_onnx_bytes
    from hilprune.kernel_map import KernelMap
    from hilprune.models import resolve_model
    from hilprune.surgery import Surgeon

    spec = resolve_model("resnet20", input_shape=(1, 16, 16))  # mobilenetv2 agrees too, but takes 40 s
    surgeon = Surgeon(spec.build(), spec.input_shape, spec.identity())
    kmap = KernelMap(surgeon, device=DEVICE)
    rng = random.Random(0)
    for _ in range(2):  # odd and aligned widths: OpenVINO's kernels of the real pruned graph
        ratios = [rng.choice([0.0, 0.3, 0.55, 0.8]) for _ in surgeon.groups]
        pruned = surgeon.apply(surgeon.policy(ratios), count=False).model
        assert kmap.kernels_for(ratios) == device_kernels(to_onnx_bytes(pruned, spec.input_shape), DEVICE)


def test_lut_and_predictor_time_openvino_kernels() -> None:
    dev = load_device(DEVICE)
    model = tiny_cnn(c=8, c2=16, hw=12)
    kernels = device_kernels(model, dev)
    lut = LUT(dev)
    assert lut.fill(kernels, progress=False) == len({k.key() for k in kernels})
    assert any(e["spec"]["op"] == "add" for e in lut.entries.values())  # OpenVINO's own kernel, timed
    saved = json.loads(lut.path.read_text())
    assert saved["fingerprint"]["runtime"] == "openvino" and saved["fingerprint_id"] == fingerprint_id(dev)
    pred = Predictor(lut)
    live = pred.observe_model(model)
    assert live.latency_ms > 0 and pred.predict_model(model) > 0 and lut.measured == len(lut)


def test_cli_profile_and_lut_check(capsys) -> None:
    from hilprune.cli.main import main

    base = ["--model", "digits-cnn", "--dataset", "digits", "--device", DEVICE, "--json"]
    assert main(["profile", *base]) == 0
    prof = json.loads(capsys.readouterr().out)
    assert prof["device"] == DEVICE and prof["latency_ms"] > 0 and prof["p10_ms"] <= prof["median_ms"] <= prof["p90_ms"]
    assert main(["lut", "check", *base, "--samples", "3"]) == 0
    check = json.loads(capsys.readouterr().out)
    assert check["device"] == DEVICE and check["samples"] == 3
    assert 0.0 <= check["within_10pct"] <= 1.0 and check["mape"] >= 0 and -1.0 <= check["kendall_tau"] <= 1.0


def test_live_search_on_openvino(tmp_path: Path, capsys) -> None:
    pytest.importorskip("envs.evaluator", reason="envs.evaluator (PolicyEvaluator) is not available")
    from hilprune.cli.main import main
    from search import store
    from search.job import load_run_job

    out = tmp_path / "run"
    args = ["search", "-m", "digits-cnn", "-d", "digits", "--device", DEVICE, "--budget", "1.0", "--agent", "uniform"]
    args += ["--evals", "2", "--latency-source", "live", "--out", str(out), "--no-progress", "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    job = load_run_job(out)
    (records,) = store.load_records(store.open_storage(job.storage_url, cache=False), job.name).values()
    assert len(records) == 2
    dense_ms = summary["dense"]["latency_ms"]
    for r in records:  # measured live on OpenVINO, paired with the dense model, in its frame
        assert r.live_ratio is not None and r.live_ratio > 0 and r.latency_ms == pytest.approx(r.live_ratio * dense_ms)
    assert json.loads((out / "dense.json").read_text())["fingerprint"]["runtime"] == "openvino"
    assert summary["best"]["1"] is not None


BLOCK_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked: hwprofiler must work without it")
sys.meta_path.insert(0, NoTorch())
"""


def test_server_serves_openvino_without_torch(tmp_path: Path) -> None:
    from test_hwprofiler_server import free_port

    port, token = free_port(), "ov-token-0123456789"
    (tmp_path / "token").write_text(token)
    serve = ["serve", "--device", DEVICE, "--port", str(port), "--token-file", str(tmp_path / "token")]
    code = BLOCK_TORCH + f"from hwprofiler.cli import main\nsys.exit(main({serve!r}))\n"
    env = {**os.environ, "HWPROFILER_CACHE": str(tmp_path / "server-cache")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
    try:
        info = ProfilerClient(f"http://127.0.0.1:{port}", token, retries=10, backoff_s=0.1).device()  # retried until up
        assert info["name"] == DEVICE and info["fingerprint"] == fingerprint(load_device(DEVICE))
        dev = load_device(f"remote:http://127.0.0.1:{port}", token=token)
        model = tiny_cnn(c=8, c2=16, hw=12)
        assert measure_onnx(model, dev).latency_ms > 0
        pair = measure_paired(tiny_cnn(c=48, c2=96, hw=32), model, dev, cache=False)
        assert pair.ratio > 1
        kernels = device_kernels(model, dev)  # the server's OpenVINO decides the fusions
        assert kernels == device_kernels(model, DEVICE) and any(k.op == "add" for k in kernels)
        lut = LUT(dev)
        assert lut.fingerprint_id == fingerprint_id(load_device(DEVICE))
        assert lut.fill(kernels, progress=False) == len({k.key() for k in kernels}) and all(lut.get(k) > 0 for k in kernels)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"serving device {DEVICE}" in err and "Traceback" not in err and "torch is blocked" not in err


def test_the_precision_table_times_the_int8_schemes_on_openvino() -> None:
    """`hilprune devices` shows OpenVINO's INT8 schemes too: each is timed on OpenVINO against fp32,
    or recorded with the reason OpenVINO could not run it; `best` is the fastest that beat fp32."""
    from hwprofiler.precision import FASTER, measure_precisions

    table = measure_precisions(DEVICE)
    rows = {r["name"]: r for r in table["schemes"]}
    assert set(rows) == {s.name for s in candidate_schemes(fingerprint(load_device(DEVICE)))}  # -rr off VNNI
    timed = [r for r in rows.values() if "error" not in r]
    assert timed and all(r["ratio"] > 0 and r["faster"] == (r["ratio"] < FASTER) for r in timed)
    faster = sorted((r for r in timed if r["faster"]), key=lambda r: r["ratio"])
    assert table["best"] == (faster[0]["name"] if faster else "fp32") and table["keeps_fp32"] == (not faster)
