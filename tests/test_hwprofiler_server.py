"""The profiler server over real loopback HTTP, the client, remote devices and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from fixtures.loopback import ServerThread, free_port

from hwprofiler import (
    LUT,
    DeviceError,
    KernelSpec,
    MeasurePolicy,
    device_kernels,
    fingerprint,
    fingerprint_id,
    kernels_from_onnx,
    load_device,
    measure_onnx,
    measure_paired,
)
from hwprofiler.cli import main as cli_main
from hwprofiler.client import ProfilerClient
from hwprofiler.server import create_app
from hwprofiler.testing import fast_device, tiny_cnn

TOKEN = "test-token-0123456789"
LIMIT = 256 * 1024


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HWPROFILER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HWPROFILER_TOKEN", raising=False)


@pytest.fixture
def server() -> Iterator[ServerThread]:
    app = create_app(fast_device(), TOKEN, max_upload_bytes=LIMIT, queue_size=4, timeout_s=60)
    with ServerThread(app) as s:
        yield s


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_healthy(http: httpx.Client) -> None:
    r = http.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_security_and_measurement_over_loopback(server):
    model = tiny_cnn(c=8, c2=None).SerializeToString()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert_healthy(http)

        for headers in ({}, auth("wrong-token"), {"Authorization": TOKEN}):
            for method, path in (("GET", "/device"), ("POST", "/measure"), ("POST", "/kernels")):
                r = http.request(method, path, headers=headers, content=model if method == "POST" else None)
                assert r.status_code == 401, (headers, path)
                assert r.headers["www-authenticate"] == "Bearer"
            assert_healthy(http)

        r = http.post("/measure", headers=auth(), content=b"\0" * (LIMIT + 1))  # declared by Content-Length
        assert r.status_code == 413
        assert_healthy(http)

        def chunks():
            for _ in range(8):
                yield b"\0" * (LIMIT // 4)

        r = http.post("/measure", headers=auth(), content=chunks())  # chunked: counted while streaming
        assert r.status_code == 413
        assert_healthy(http)

        r = http.post("/measure", headers=auth(), content=b"definitely not onnx \x00\x01")
        assert r.status_code == 400 and r.json()["error"]
        assert_healthy(http)
        broken = tiny_cnn(c=8, c2=None)
        broken.graph.node[0].input[1] = "nowhere"
        r = http.post("/measure", headers=auth(), content=broken.SerializeToString())
        assert r.status_code == 400 and "checker" in r.json()["error"]
        r = http.post("/kernels", headers=auth(), content=b'[{"op": "lstm"}]')
        assert r.status_code == 400 and "unknown kernel op" in r.json()["error"]
        assert_healthy(http)

        r = http.post("/measure?samples=1", headers=auth(), content=model)
        assert r.status_code == 200, r.text
        body = r.json()
        m = body["measurement"]
        assert 0 < m["p10_ms"] <= m["median_ms"] <= m["p90_ms"] and m["n"] == len(m["samples"])
        assert body["fingerprint_id"] == fingerprint_id(fast_device())

        r = http.get("/device", headers=auth())
        assert r.status_code == 200 and r.json()["fingerprint"] == fingerprint(fast_device())
        assert_healthy(http)


def slow_device(seconds: float):
    policy = MeasurePolicy(warmup=0, rounds=1, round_s=seconds, min_round_runs=1)
    return replace(fast_device(), policy=policy)


def test_full_queue_answers_503_with_retry_after():
    app = create_app(slow_device(1.0), TOKEN, queue_size=1, timeout_s=60, cache=False)
    with ServerThread(app) as s:
        codes: list[int] = []

        def post(c: int) -> None:
            r = httpx.post(s.url + "/measure", headers=auth(), content=tiny_cnn(c=c, c2=None).SerializeToString(), timeout=60)
            codes.append(r.status_code)
            if r.status_code == 503:
                assert int(r.headers["retry-after"]) >= 1

        threads = [threading.Thread(target=post, args=(c,)) for c in (4, 5, 6)]
        for t in threads:
            t.start()
            time.sleep(0.2)  # one running, one waiting, the third finds the queue full
        for t in threads:
            t.join()
        assert sorted(codes) == [200, 200, 503]
        assert httpx.get(s.url + "/health").status_code == 200


def test_request_timeout_answers_504():
    app = create_app(slow_device(1.0), TOKEN, timeout_s=0.3, cache=False)
    with ServerThread(app) as s:
        r = httpx.post(s.url + "/measure", headers=auth(), content=tiny_cnn(c=4, c2=None).SerializeToString(), timeout=30)
        assert r.status_code == 504 and "did not finish" in r.json()["error"]


def test_remote_device_end_to_end(server):
    dev = load_device(f"remote:{server.url}", token=TOKEN)
    assert fingerprint(dev) == fingerprint(fast_device())
    model = tiny_cnn(c=8, c2=None)
    first = measure_onnx(model, dev)
    second = measure_onnx(model, dev)
    assert not first.cached and second.cached and second.latency_ms == first.latency_ms
    lut = LUT(dev)
    assert lut.fingerprint_id == fingerprint_id(fast_device())
    specs = [KernelSpec(op="linear", cin=16, cout=c) for c in (4, 8, 12)]
    assert lut.fill(specs, progress=False) == 3 and all(lut.get(s) > 0 for s in specs)
    assert device_kernels(model, dev) == kernels_from_onnx(model)  # the server's runtime (onnxruntime) fuses
    r = httpx.post(server.url + "/device_kernels?batch=0", headers=auth(), content=model.SerializeToString())
    assert r.status_code == 400 and "batch" in r.json()["error"]
    # timed interleaved on the server; 8-64x the conv MACs of `model`
    pair = measure_paired(tiny_cnn(c=64, c2=None), model, dev, cache=False)
    assert pair.ratio == pytest.approx(pair.model.latency_ms / pair.reference.latency_ms) and pair.ratio > 1
    assert len(pair.round_ratios) == fast_device().policy.rounds

    with pytest.raises(DeviceError, match="rejected the token"):
        measure_onnx(model, load_device(f"remote:{server.url}", token="wrong"), cache=False)


def test_client_gives_one_clear_error_when_unreachable():
    client = ProfilerClient(f"http://127.0.0.1:{free_port()}", TOKEN, retries=2, backoff_s=0.01)
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match="unreachable after 3 tries"):
        client.health()
    assert time.monotonic() - t0 < 5


def test_cli_serve_subprocess(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("cli-token\n")
    port = free_port()
    env = {**os.environ, "HWPROFILER_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hwprofiler",
            "serve",
            "--port",
            str(port),
            "--token-file",
            str(token_file),
            "--max-upload-mb",
            "0.5",
            "--queue",
            "2",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = ProfilerClient(f"http://127.0.0.1:{port}", "cli-token", retries=8, backoff_s=0.1)
        info = client.device()  # retried until the server is up
        assert info["name"] == "ort-cpu-1t" and info["fingerprint_id"] == fingerprint_id(info["fingerprint"])
        r = httpx.post(f"http://127.0.0.1:{port}/measure", headers=auth("cli-token"), content=b"\0" * (600 * 1024))
        assert r.status_code == 413
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "cli-token" not in err and "serving device ort-cpu-1t" in err


def test_cli_commands_in_process(capsys, tmp_path):
    assert cli_main(["devices"]) == 0
    assert "ort-cpu-2t" in capsys.readouterr().out
    assert cli_main(["fingerprint", "--device", "ort-cpu-2t"]) == 0
    assert json.loads(capsys.readouterr().out)["intra_op_threads"] == 2
    assert cli_main(["fingerprint", "--device", "nope"]) == 2
    assert "unknown device" in capsys.readouterr().err
    path = tmp_path / "m.onnx"
    path.write_bytes(tiny_cnn(c=4, c2=None).SerializeToString())
    assert cli_main(["measure", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["latency_ms"] > 0


def test_a_wrong_token_is_answered_even_while_the_client_still_sends_its_body():
    """The server answers 401 before reading a body; it reads (and drops) the body first, so a
    client still writing a large upload gets the answer, not a broken pipe called 'unreachable'."""
    big = 32 * 2**20
    with ServerThread(create_app(fast_device(), TOKEN, max_upload_bytes=big)) as s:
        client = ProfilerClient(s.url, "wrong-token", retries=0)
        for _ in range(3):
            with pytest.raises(DeviceError, match="rejected the token"):
                client.device_kernels(b"\0" * (big - 1))
