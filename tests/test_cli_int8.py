"""`--precision int8` end to end on digits-cnn and the simulated device: `hilprune prune`,
`hilprune export` after a short search, and the precisions `hilprune devices` reports."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import onnx
import pytest

import hwprofiler
from hilprune.cli.main import main
from hilprune.export import ort_session
from hilprune.policy import Policy
from hwprofiler.quantization import candidate_schemes

DIGITS = ["--model", "digits-cnn", "--dataset", "digits"]
# The simulated device's schemes: its INT8 graphs run on this host for their accuracy, so they carry
# 7-bit weights (-rr) where this host's CPU lacks VNNI (hwprofiler.quantization.needs_reduce_range).
QDQ_U8, QDQ_S8, QOP_U8, QOP_S8 = (s.name for s in candidate_schemes({}))


def run_json(capsys: pytest.CaptureFixture, args: list[str]) -> dict:
    capsys.readouterr()
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_prune_int8_writes_the_chosen_int8_graph_and_the_fp32_one(tmp_path: Path, capsys) -> None:
    policy = tmp_path / "policy.json"
    run_json(capsys, ["policy", "init", *DIGITS, "--ratio", "0.25", "--out", str(policy), "--json"])
    out = tmp_path / "pruned"
    args = ["prune", *DIGITS, "--policy", str(policy), "--out", str(out), "--precision", "int8", "--device", "sim-cpu"]
    report = run_json(capsys, [*args, "--calibration-size", "32", "--json"])
    q = report["quantization"]
    assert report["precision"] == "int8" and q["scheme"]["name"] == QDQ_U8
    assert "QuantizeLinear" in _ops(out / "model.onnx") and "QuantizeLinear" not in _ops(out / "model.fp32.onnx")
    logits = ort_session((out / "model.onnx").read_bytes()).run(None, {"input": np.zeros((1, 1, 8, 8), np.float32)})[0]
    assert logits.shape == (1, 10)
    assert json.loads((out / "quantization.json").read_text()) == q
    assert q["calibration"]["images"] == 32 and q["calibration"]["split"] == "train"
    assert abs(q["accuracy"]["int8"]["test"] - q["accuracy"]["fp32"]["test"]) <= 0.02
    saved = Policy.load(out / "policy.json")
    assert saved.metrics["quantization"]["scheme"] == QDQ_U8 and saved.metrics["quantization"]["precision"] == "int8"


def test_prune_int8_without_a_dataset_is_one_line_of_error(tmp_path: Path, capsys) -> None:
    policy = tmp_path / "policy.json"
    run_json(capsys, ["policy", "init", *DIGITS, "--ratio", "0.25", "--out", str(policy), "--json"])
    code = main(["prune", "-m", "digits-cnn", "--policy", str(policy), "--out", str(tmp_path / "o"), "--precision", "int8"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "--dataset" in err and "\n" not in err
    code = main(["prune", *DIGITS, "--policy", str(policy), "--out", str(tmp_path / "o"), "--precision", "int4"])
    assert code == 2 and "--precision must be one of fp32, int8" in capsys.readouterr().err


@pytest.fixture(scope="module")
def search_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("search") / "run"
    args = ["search", *DIGITS, "--device", "sim-cpu", "--budget", "0.5", "--agent", "uniform", "--evals", "3"]
    with redirect_stdout(io.StringIO()) as buf:
        rc = main([*args, "--seed", "0", "--out", str(out), "--no-progress", "--json"])
    assert rc == 0, buf.getvalue()
    return out


def test_export_int8_ships_the_int8_graph_with_its_model_card(search_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "export"
    args = ["export", str(search_run), "--budget", "0.5", "--finetune-epochs", "0.5", "--out", str(out)]
    res = run_json(capsys, [*args, "--precision", "int8", "--schemes", f"{QDQ_U8},{QOP_U8},{QDQ_S8}", "--json"])
    assert res["precision"] == "int8" and res["scheme"] == QDQ_U8
    assert [c["name"] for c in res["quantization"]["candidates"]] == [QDQ_U8, QOP_U8, QDQ_S8]
    assert "QuantizeLinear" in _ops(out / "model.onnx") and (out / "model.fp32.onnx").is_file()
    assert res["test_accuracy"] == res["quantization"]["accuracy"]["int8"]["test"]
    assert res["latency_ms"] < res["fp32_latency_ms"] and res["meets_budget"]  # INT8 only makes it faster
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Precision" in card and QDQ_U8 in card and "train" in card and f"| {QDQ_S8} |" in card
    policy = Policy.load(out / "policy.json")
    assert policy.metrics["precision"] == "int8" and policy.metrics["quantization"]["scheme"]["name"] == QDQ_U8
    bridge = policy.metrics["live_int8_conversion"]  # every layer INT8: timed through the dense INT8 graph
    assert bridge["int8_conversion_ratios"] and bridge["int8_conversion"] > 0
    assert all(r == pytest.approx(bridge["int8_conversion"], abs=1e-4) for r in bridge["int8_conversion_ratios"])  # sim-cpu
    fp32 = run_json(capsys, [*args[:-1], str(tmp_path / "fp32"), "--precision", "fp32", "--json"])
    assert fp32["precision"] == "fp32" and "quantization" not in fp32 and not (tmp_path / "fp32" / "model.fp32.onnx").exists()
    # the search judged its policies as INT8 graphs (--precision int8, its default): export follows it
    auto = run_json(capsys, [*args[:-1], str(tmp_path / "auto"), "--schemes", QDQ_U8, "--json"])
    assert Policy.load(tmp_path / "auto" / "policy.json").int8_groups() and "quantization" in auto


def test_devices_reports_the_precisions_each_device_runs_fast(capsys) -> None:
    out = run_json(capsys, ["devices", "--json"])
    sim = next(d for d in out["devices"] if d["name"] == "sim-cpu")
    table = sim["precision"]
    assert table["best"] == QDQ_U8 and not table["keeps_fp32"]
    assert {r["name"] for r in table["schemes"]} == {QDQ_U8, QDQ_S8, QOP_U8, QOP_S8}
    again = run_json(capsys, ["devices", "--json"])
    assert next(d for d in again["devices"] if d["name"] == "sim-cpu")["precision"]["cached"]
    remeasured = run_json(capsys, ["devices", "--remeasure", "--json"])
    assert not next(d for d in remeasured["devices"] if d["name"] == "sim-cpu")["precision"]["cached"]
    bare = run_json(capsys, ["devices", "--no-precisions", "--json"])
    assert all("precision" not in d for d in bare["devices"])


def test_prune_int8_on_openvino_chooses_among_the_schemes_openvino_runs(tmp_path: Path, capsys) -> None:
    """INT8 on the second runtime: every scheme is tried on OpenVINO itself; the QOperator graphs it
    cannot read are recorded as failed, and the chosen scheme is one it measured (or fp32)."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'hilprune[openvino]'")
    import openvino as ov

    policy = tmp_path / "policy.json"
    run_json(capsys, ["policy", "init", *DIGITS, "--ratio", "0.25", "--out", str(policy), "--json"])
    out = tmp_path / "pruned"
    args = ["prune", *DIGITS, "--policy", str(policy), "--out", str(out), "--precision", "int8", "--device", "ov-cpu-1t"]
    q = run_json(capsys, [*args, "--calibration-size", "32", "--json"])["quantization"]
    by_name = {c["name"]: c for c in q["candidates"]}
    ov_cpu = hwprofiler.fingerprint(hwprofiler.load_device("ov-cpu-1t"))  # -rr names where this CPU lacks VNNI
    assert set(by_name) == {s.name for s in candidate_schemes(ov_cpu)}
    for c in by_name.values():  # each was either timed on OpenVINO against fp32 or failed with a reason
        assert (c["verdict"] == "failed") == (c["int8_ms"] is None) == bool(c["error"])
    assert any(c["int8_ms"] is not None for c in by_name.values())
    if q["precision"] == "int8":
        chosen = by_name[q["scheme"]["name"]]
        assert chosen["verdict"] == "chosen" and chosen["int8_ms"] < chosen["fp32_ms"]
        compiled = ov.Core().compile_model(str(out / "model.onnx"), "CPU")
        assert compiled(np.zeros((1, 1, 8, 8), np.float32))[0].shape == (1, 10)
