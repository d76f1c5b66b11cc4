"""`hilprune devices`, `profile`, `lut build`, `lut check` on digits-cnn, with real onnxruntime runs."""

from __future__ import annotations

import json

import pytest

from hilprune.cli.main import main


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HWPROFILER_CACHE", str(tmp_path / "hwcache"))


def run_json(capsys, args: list[str]) -> dict:
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_devices_lists_builtins(capsys) -> None:
    out = run_json(capsys, ["devices", "--json"])
    rows = {d["name"]: d for d in out["devices"]}
    assert {"ort-cpu-1t", "ort-cpu-2t", "ov-cpu-1t", "ov-cpu-2t", "sim-cpu"} <= set(rows)
    assert all(d["fingerprint"]["onnxruntime"] for d in out["devices"] if "onnxruntime" in d["fingerprint"])
    assert (rows["ort-cpu-1t"]["runtime"], rows["ov-cpu-1t"]["runtime"], rows["sim-cpu"]["runtime"]) == (
        "onnxruntime",
        "openvino",
        "simulated",
    )
    assert rows["ort-cpu-1t"]["usable"] and rows["ort-cpu-1t"]["status"].startswith("onnxruntime ")
    ov = rows["ov-cpu-1t"]  # usable or not, it is listed, with a status line saying which
    assert ov["usable"] == (ov["fingerprint_id"] is not None) and "OpenVINO" in ov["status"]
    assert ov["settings"]["INFERENCE_NUM_THREADS"] == 1


def test_profile_dense_and_pruned(capsys, tmp_path) -> None:
    dense = run_json(capsys, ["profile", "--model", "digits-cnn", "--dataset", "digits", "--json"])
    assert set(dense) >= {"median_ms", "p10_ms", "p90_ms", "n", "rel_ci"}
    assert dense["p10_ms"] <= dense["median_ms"] <= dense["p90_ms"] and dense["n"] >= 10
    again = run_json(capsys, ["profile", "--model", "digits-cnn", "--dataset", "digits", "--json"])
    assert again["cached"] and again["median_ms"] == dense["median_ms"]
    policy = tmp_path / "p.json"
    assert main(["policy", "init", "--model", "digits-cnn", "--dataset", "digits", "--ratio", "0.75", "--out", str(policy)]) == 0
    capsys.readouterr()
    pruned = run_json(capsys, ["profile", "--model", "digits-cnn", "--dataset", "digits", "--policy", str(policy), "--json"])
    assert not pruned["cached"]


def test_lut_build_then_check(capsys) -> None:
    built = run_json(capsys, ["lut", "build", "--model", "digits-cnn", "--dataset", "digits", "--grid-step", "0.45", "--json"])
    assert built["kernels_reachable"] == built["measured"] > 0
    again = run_json(capsys, ["lut", "build", "--model", "digits-cnn", "--dataset", "digits", "--grid-step", "0.45", "--json"])
    assert again["measured"] == 0 and again["entries"] == built["entries"]
    check = run_json(capsys, ["lut", "check", "--model", "digits-cnn", "--dataset", "digits", "--samples", "4", "--json"])
    for key in ("within_10pct", "mape", "kendall_tau", "flops_within_10pct", "flops_kendall_tau"):
        assert key in check
    assert check["samples"] == 4 and 0.0 <= check["within_10pct"] <= 1.0 and check["mape"] >= 0


def test_unknown_device_is_one_clear_error(capsys) -> None:
    assert main(["profile", "--model", "digits-cnn", "--dataset", "digits", "--device", "no-such-device"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no-such-device" in err and "Traceback" not in err


def test_the_precision_table_shows_each_scheme_against_the_fastest_fp32_time(capsys, monkeypatch) -> None:
    """The row whose fp32 partner ran slow shows the fastest fp32 time, so its two times give its speedup."""
    from hilprune.cli import device_cmd, output
    from hwprofiler.precision import on_fastest_fp32

    monkeypatch.setattr(output.out, "width", 200)
    rows = [
        {"name": "qdq-u8s8", "int8_ms": 0.30, "fp32_ms": 0.60, "ratio": 0.5, "faster": True},
        {"name": "qdq-s8s8", "int8_ms": 0.45, "fp32_ms": 0.90, "ratio": 0.5, "faster": True},  # its fp32 partner ran slow
    ]
    on_fastest_fp32(rows)
    table = {"schemes": rows, "keeps_fp32": False, "settled": True}
    device_cmd._print_precisions([{"name": "dev", "precision": table}])
    text = capsys.readouterr().out
    assert "0.45 / 0.6" in text and "1.33x" in text and "0.45 / 0.9" not in text
    assert "0.3 / 0.6" in text and "2.00x" in text
