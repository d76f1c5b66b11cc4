"""An INT8 search against a `remote:` device, over real loopback HTTP: the client quantizes every
graph, the token-protected profiler server prices and times it. The other INT8 tests use local
devices, and the server tests send it fp32 graphs only. The server serves the simulated device
(its analytic cost model prices INT8 below fp32 on wide layers), so nothing here depends on this
machine's INT8 speed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import onnx
import pytest
from fixtures.loopback import ServerThread

import hwprofiler
from envs.evaluator import PolicyEvaluator
from hilprune.cli.main import main
from hilprune.data import load_dataset
from hilprune.export import to_onnx_bytes
from hilprune.models import resolve_model
from hilprune.quantize import TrainCalibration
from hwprofiler import KernelSpec, fingerprint_id
from hwprofiler.client import ProfilerClient
from hwprofiler.precision import precision_table
from hwprofiler.quantization import Quantizer
from hwprofiler.server import create_app
from search.job import load_run_job
from search.store import load_records, open_storage

TOKEN = "remote-int8-token-0123456789"
SIM = hwprofiler.load_device("sim-cpu")
DIGITS = ["--model", "digits-cnn", "--dataset", "digits"]
INT8_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


class Recorder:
    """ASGI wrapper keeping the path and body of every request the server answered."""

    def __init__(self, app) -> None:
        self.app = app
        self.calls: list[tuple[str, bytes]] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body = bytearray()

        async def recv():
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        await self.app(scope, recv, send)
        self.calls.append((scope["path"], bytes(body)))

    def graphs(self, path: str, since: int = 0) -> list[bytes]:
        """The ONNX models sent to `path` (a pair's `model` for /measure_pair)."""
        out = []
        for p, body in self.calls[since:]:
            if p == path:
                out.append(base64.b64decode(json.loads(body)["model"]) if path == "/measure_pair" else body)
        return out

    def kernels(self) -> set[KernelSpec]:
        """Every kernel the server was asked to measure."""
        return {KernelSpec.from_dict(d) for p, body in self.calls if p == "/kernels" for d in json.loads(body)}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module, with its own hwprofiler cache: every LUT entry, precision table
    and measurement here came from this server."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HWPROFILER_CACHE", str(tmp_path_factory.mktemp("hwcache")))
        mp.delenv("HWPROFILER_TOKEN", raising=False)
        mp.delenv("HWPROFILER_TOKEN_FILE", raising=False)
        recorder = Recorder(create_app(SIM, TOKEN))
        with ServerThread(recorder) as s:
            s.recorder = recorder
            yield s


def ops(model: bytes) -> set[str]:
    return {n.op_type for n in onnx.load_from_string(model).graph.node}


def quantized_export(ev: PolicyEvaluator, policy) -> bytes:
    """The policy's INT8 graph as `hilprune export` writes it: the pruned model, calibrated on
    train images, in the search's scheme (a different calibration from the search's own)."""
    fp32 = to_onnx_bytes(ev.surgeon.apply(policy, count=False).model, ev.input_shape, ev.device.batch)
    name = onnx.load_from_string(fp32).graph.input[0].name
    reader = TrainCalibration(load_dataset("digits"), 64, ev.device.batch, name)
    with Quantizer(fp32, reader) as q:
        return q.quantize(ev.precision.scheme)


def test_an_int8_evaluator_on_a_remote_device_prices_the_int8_graph_the_server_sees(server):
    dev = hwprofiler.load_device(f"remote:{server.url}", token=TOKEN)
    ev = PolicyEvaluator("digits-cnn", "digits", device=dev, precision="int8", round_to=8, proxy="bn:10")
    scheme = ev.precision.scheme
    table = precision_table(dev, model=ev.dense_onnx)  # cached: the model's table, measured by the evaluator through the server
    assert table["cached"] and table["reference"].startswith("the model itself")
    assert ev.precision.mode == "int8" and scheme.name == table["best"] and scheme.precision != "fp32"
    assert table["device"] == dev.name and "not timed" not in ev.precision.why
    assert ev.fingerprint_id == fingerprint_id(SIM)
    assert ev.latency.kmap_q_ok  # the INT8 kernel map reproduced the server's kernels of real INT8 exports

    ratios = [0.25] * len(ev.groups)
    res = ev.evaluate(ratios)
    policy = res.policy
    assert policy.graph_precision() == "int8" and policy.metrics["int8_scheme"] == scheme.name
    assert "quantize" in res.phases  # accuracy of the INT8 graph, quantized here

    priced = ev.kernels_of(ratios)
    real = quantized_export(ev, policy)
    on_server = ProfilerClient(server.url, TOKEN).device_kernels(real)
    assert priced == on_server == hwprofiler.device_kernels(real, SIM)  # the server runs the same fusions
    convs = [k for k in priced if k.op == "conv"]
    assert len(convs) == 4 and {k.precision for k in convs} == {scheme.precision}
    assert res.lut_latency_ms == pytest.approx(ev.latency.predictor_q.predict(priced))  # priced as these kernels
    assert res.lut_latency_ms < ev.latency.predict_key(policy.key())  # the INT8 graph priced below the fp32 one

    assert set(priced) <= server.recorder.kernels()  # every INT8 kernel in the LUT was timed by the server
    sent = server.recorder.graphs("/device_kernels")
    assert sum(bool(ops(g) & INT8_OPS) for g in sent) >= 2  # the client sent quantized graphs, not fp32 ones
    assert any(ops(g) & INT8_OPS for g in server.recorder.graphs("/measure_pair"))  # the precision table's pairs


def test_hilprune_search_and_export_int8_on_a_remote_device(server, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("HWPROFILER_TOKEN", TOKEN)
    remote = f"remote:{server.url}"
    since = len(server.recorder.calls)
    run = tmp_path / "run"
    args = [*DIGITS, "--device", remote, "--precision", "int8", "--budget", "0.4", "--agent", "uniform", "--evals", "3"]
    # --max-ratio 0.4 keeps the layers wide, where INT8 prices well below fp32 (narrower policies
    # may be judged as their fp32 graph: envs.evaluator's _faster_precision)
    args += ["--max-ratio", "0.4", "--round-to", "8", "--proxy", "bn:10", "--out", str(run), "--no-progress", "--json"]
    summary = run_json(capsys, ["search", *args])
    assert summary["precision"] == "int8" and summary["device"] == remote

    fid = fingerprint_id(SIM)
    assert json.loads((run / "dense.json").read_text())["fingerprint_id"] == fid
    job = load_run_job(run)
    records = load_records(open_storage(job.storage_url), job.name)["uniform"]
    # the table of the search's own dense graph (weights aside: the simulated device prices structure)
    spec = resolve_model("digits-cnn", "digits")
    dev = hwprofiler.load_device(remote)
    best = precision_table(dev, model=to_onnx_bytes(spec.build(), spec.input_shape, dev.batch))["best"]
    assert len(records) == 3
    for r in records:
        assert {g["precision"] for g in r.policy["groups"]} == {"int8"}
        assert r.policy["metrics"]["precision"] == "int8" and r.policy["metrics"]["int8_scheme"] == best
        assert r.device_fingerprint == fid
    assert any(ops(g) & INT8_OPS for g in server.recorder.graphs("/device_kernels", since))

    out = tmp_path / "export"
    args = [str(run), "--budget", "0.4", "--trial", "uniform:0", "--finetune-epochs", "0", "--out", str(out)]
    res = run_json(capsys, ["export", *args, "--schemes", "qdq-u8s8", "--accuracy-tolerance", "5", "--no-progress", "--json"])
    assert res["precision"] == "int8" and res["scheme"] == "qdq-u8s8"
    shipped = (out / "model.onnx").read_bytes()
    assert "QuantizeLinear" in ops(shipped) and not ops((out / "model.fp32.onnx").read_bytes()) & INT8_OPS
    assert shipped in server.recorder.graphs("/measure_pair", since)  # the server timed the very graph written here

    for f in [*run.rglob("*"), *out.rglob("*")]:
        assert not f.is_file() or TOKEN.encode() not in f.read_bytes(), f  # the token stays in the environment


def run_json(capsys, args: list[str]) -> dict:
    capsys.readouterr()
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)
