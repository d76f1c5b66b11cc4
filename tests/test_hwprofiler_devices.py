"""Device specs, fingerprints, and the no-torch import rule."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest

import hwprofiler
from hwprofiler import DeviceError, fingerprint, fingerprint_id, list_devices, load_device


def test_builtins_listed_and_loadable():
    assert {"ort-cpu-1t", "ort-cpu-2t", "sim-cpu", "ov-cpu-1t", "ov-cpu-2t"} <= set(list_devices())
    one, two = load_device("ort-cpu-1t"), load_device("ort-cpu-2t")
    assert one.intra_op_threads == 1 and two.intra_op_threads == 2 and one.runtime == "onnxruntime"
    assert one.graph_optimization_level == "all" and one.policy.estimator == "min"
    assert one.kernel_policy.rounds <= one.policy.rounds
    sim = load_device("sim-cpu")
    assert sim.runtime == "simulated" and sim.runtime_options["block"] == 16
    ov1, ov2 = load_device("ov-cpu-1t"), load_device("ov-cpu-2t")  # loads without OpenVINO installed
    assert ov1.runtime == ov2.runtime == "openvino"
    assert ov1.runtime_options == {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    assert ov2.runtime_options["INFERENCE_NUM_THREADS"] == 2
    # The same windows as onnxruntime; OpenVINO's kernels are timed in a chain (hwprofiler.kernel_chain).
    assert (ov1.policy, replace(ov1.kernel_policy, chain=1)) == (one.policy, one.kernel_policy)
    assert ov1.kernel_policy.chain == 5 and one.kernel_policy.chain == 1


def test_load_from_toml_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\nbatch = 2\n[onnxruntime]\nintra_op_threads = 2\n[policy]\nwarmup = 1\nrounds = 4\n')
    spec = load_device(str(path))
    assert (spec.name, spec.batch, spec.intra_op_threads, spec.runtime) == ("mine", 2, 2, "onnxruntime")
    assert spec.policy.warmup == 1 and spec.policy.rounds == 4 and spec.policy.estimator == "min"  # defaults kept
    sim = tmp_path / "sim.toml"
    sim.write_text('name = "fast-sim"\nruntime = "simulated"\n[simulated]\ngmacs = 100.0\nnoise = 0.1\n')
    spec = load_device(str(sim))
    assert spec.runtime_options["gmacs"] == 100.0 and spec.runtime_options["block"] == 16


@pytest.mark.parametrize(
    "text, needle",
    [
        ('name = "x"\nthreads = 2\n', "unknown keys"),
        ('name = "x"\n[onnxruntime]\ngraph_optimization_level = "max"\n', "graph_optimization_level"),
        ('name = "x"\n[policy]\nrounds = 0\n', "policy"),
        ('name = "x"\n[policy]\nestimator = "mean"\n', "estimator"),
        ('name = "x"\nruntime = "tvm"\n', "unknown runtime"),
        ('name = "x"\nruntime = "simulated"\n[simulated]\ngmacs = -1.0\n', "gmacs"),
        ('name = "x"\nruntime = "simulated"\n[simulated]\nspeed = 1\n', "unknown keys"),
        ('name = "x"\n[simulated]\nnoise = 0.1\n', "runtime"),
        ('name = "x"\nruntime = "openvino"\n[openvino]\nTHREADS = 1\n', "unknown keys.*INFERENCE_NUM_THREADS"),
        ('name = "x"\nruntime = "openvino"\n[openvino]\nINFERENCE_NUM_THREADS = -1\n', "INFERENCE_NUM_THREADS must be"),
        ('name = "x"\nruntime = "openvino"\n[openvino]\nPERFORMANCE_HINT = "FAST"\n', "PERFORMANCE_HINT must be one of"),
        ('name = "x"\nruntime = "openvino"\n[openvino]\nENABLE_CPU_PINNING = "no"\n', "ENABLE_CPU_PINNING"),
        ("name = [\n", "not valid TOML"),
    ],
)
def test_bad_toml_is_one_clear_device_error(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(DeviceError, match=needle) as info:
        load_device(path)
    assert "\n" not in str(info.value)


def test_unknown_device_is_device_error():
    with pytest.raises(DeviceError, match="unknown device 'no-such-device'.*ort-cpu-1t"):
        load_device("no-such-device")
    with pytest.raises(DeviceError, match="does not exist"):
        load_device("/nonexistent/dev.toml")
    with pytest.raises(DeviceError, match="remote:http://HOST:PORT"):
        load_device("remote:ftp://x")
    assert issubclass(DeviceError, Exception) and not issubclass(DeviceError, ValueError)


def test_remote_spec_takes_token_from_env(monkeypatch):
    monkeypatch.setenv("HWPROFILER_TOKEN", "s3cret")
    spec = load_device("remote:http://127.0.0.1:9/")
    assert spec.is_remote and spec.remote == "http://127.0.0.1:9" and spec.token == "s3cret"
    assert "s3cret" not in repr(spec)


def test_fingerprint_is_stable_and_setting_sensitive():
    one = load_device("ort-cpu-1t")
    fp = fingerprint(one)
    for key in ("cpu_model", "logical_cores", "onnxruntime", "providers", "intra_op_threads", "provider_options"):
        assert key in fp
    fid = fingerprint_id(one)
    assert fid == fingerprint_id(fp) == fingerprint_id(load_device("ort-cpu-1t")) and len(fid) == 16
    assert fingerprint_id(replace(one, name="renamed")) == fid  # names do not matter
    assert fingerprint_id(load_device("ort-cpu-2t")) != fid
    assert fingerprint_id(replace(one, graph_optimization_level="basic")) != fid


BLOCK_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked: hwprofiler must work without it")
sys.meta_path.insert(0, NoTorch())
"""


def test_import_leaves_torch_unimported():
    code = (
        "import sys, hwprofiler, hwprofiler.server, hwprofiler.cli, hwprofiler.client, hwprofiler.predictor;"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_device_side_works_with_torch_blocked(tmp_path):
    code = BLOCK_TORCH + (
        "import hwprofiler as hp\n"
        "from hwprofiler.server import create_app\n"
        "from hwprofiler.testing import fast_device, tiny_cnn\n"
        "dev = fast_device()\n"
        "lut = hp.LUT(dev)\n"
        "lut.fill(hp.kernels_from_onnx(tiny_cnn(c=4, c2=None)), progress=True)\n"
        "assert hp.measure_onnx(tiny_cnn(c=4, c2=None), dev).latency_ms > 0\n"
        "create_app(dev, 'token')\n"
    )
    env = {**os.environ, "HWPROFILER_CACHE": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env, capture_output=True)


def test_public_api():
    for name in (
        "DeviceSpec",
        "load_device",
        "list_devices",
        "fingerprint",
        "measure_onnx",
        "Measurement",
        "KernelSpec",
        "kernels_from_onnx",
        "build_kernel_model",
        "LUT",
        "Predictor",
        "DeviceError",
    ):
        assert name in hwprofiler.__all__ and hasattr(hwprofiler, name)


def test_round_override_from_the_environment(monkeypatch):
    from hwprofiler import load_device

    assert load_device("ort-cpu-1t").policy.round_s == 0.0  # tests/conftest.py sets HWPROFILER_ROUND_S=0
    monkeypatch.setenv("HWPROFILER_ROUND_S", "0.3")
    dev = load_device("ort-cpu-1t")
    assert dev.policy.round_s == 0.3 and dev.kernel_policy.round_s == 0.3
    monkeypatch.setenv("HWPROFILER_ROUND_S", "-1")
    with pytest.raises(DeviceError, match="HWPROFILER_ROUND_S"):
        load_device("ort-cpu-1t")


BLOCK_OPENVINO = """
import sys
class NoOpenVINO:
    def find_spec(self, name, path=None, target=None):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("openvino is blocked")
sys.meta_path.insert(0, NoOpenVINO())
"""


def test_without_openvino_its_devices_say_how_to_install_it(tmp_path):
    code = BLOCK_OPENVINO + (
        "import hwprofiler as hp\n"
        "from hwprofiler.cli import main\n"
        "from hwprofiler.runtimes import get_runtime\n"
        "from hwprofiler.testing import tiny_cnn\n"
        "dev = hp.load_device('ov-cpu-1t')\n"
        "usable, line = get_runtime('openvino').status()\n"
        "assert not usable and \"pip install 'hilprune[openvino]'\" in line, line\n"
        "calls = [lambda: hp.measure_onnx(tiny_cnn(), dev), lambda: hp.fingerprint(dev), lambda: hp.device_kernels(tiny_cnn(), dev)]\n"
        "for call in calls:\n"
        "    try:\n"
        "        call()\n"
        "    except hp.DeviceError as e:\n"
        "        assert str(e) == \"device ov-cpu-1t needs OpenVINO: pip install 'hilprune[openvino]'\", e\n"
        "    else:\n"
        "        raise AssertionError('no DeviceError')\n"
        "assert main(['devices']) == 0\n"
    )
    env = {**os.environ, "HWPROFILER_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env, capture_output=True, text=True).stdout
    row = next(line for line in out.splitlines() if line.startswith("ov-cpu-1t"))
    assert "unusable" in row and "hilprune[openvino]" in row
    assert next(line for line in out.splitlines() if line.startswith("ort-cpu-1t")).split("\t")[2].startswith("ok")
