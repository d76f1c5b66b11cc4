"""End to end on this machine's real CPU (onnxruntime): search with live measurements, report and
export. It asserts only what holds on any CPU, however fast or loaded: the search logic itself is
tested on the simulated device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("envs.evaluator", reason="envs.evaluator (PolicyEvaluator) is not available")

from hilprune.cli.main import main  # noqa: E402
from search import store  # noqa: E402
from search.job import load_run_job  # noqa: E402


def test_search_and_export_on_the_real_cpu(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "real"
    args = ["search", "-m", "digits-cnn", "-d", "digits", "--device", "ort-cpu-1t", "--budget", "1.0"]
    args += ["--agent", "uniform,random", "--evals", "3", "--latency-source", "live", "--out", str(out)]
    args += ["--proxy", "bn", "--no-progress"]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    job = load_run_job(out)
    records = store.load_records(store.open_storage(job.storage_url, cache=False), job.name)
    assert {a: len(r) for a, r in records.items()} == {"uniform": 3, "random": 3}
    dense_ms = summary["dense"]["latency_ms"]
    for r in (r for recs in records.values() for r in recs):
        assert r.live_ratio is not None and r.live_ratio > 0  # every trial measured live, paired with dense
        assert r.latency_ms == pytest.approx(r.live_ratio * dense_ms)  # in the dense reference's frame
        assert r.macs is not None and r.macs > 0
    assert summary["best"]["1"] is not None  # the dense model's own latency is a budget any policy meets
    assert main(["export", str(out), "--budget", "1.0", "--finetune-epochs", "0", "--out", str(tmp_path / "exp"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["max_abs_diff"] <= 1e-4 and res["live_ratio"] > 0 and Path(res["onnx"]).is_file()
