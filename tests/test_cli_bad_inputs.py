"""Every user mistake, in every command: exit code 2 and one line on stderr that names the problem,
never a traceback. Runs through `hilprune.cli.main.main`, the console script's entry point."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from hilprune.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "hilprune" / "models" / "checkpoints"
DIGITS = ["--model", "digits-cnn", "--dataset", "digits"]
R20 = ["--model", "resnet20", "--dataset", "fashion-mnist"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    garbage = d / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    truncated = d / "truncated.pt"
    truncated.write_bytes((SHIPPED / "digits-cnn__digits.pt").read_bytes()[:2000])
    bad_toml = d / "dev.toml"
    bad_toml.write_text('name = "x"\n[onnxruntime]\nintra_op_threads = "two"\n')
    bad_policy = d / "policy.json"
    bad_policy.write_text("{not json")
    job = d / "job.toml"
    job.write_text('model = "digits-cnn"\ndataset = "digits"\nbudgets = ["0.5"]\nspeed = "fast"\n')
    empty_run = d / "not-a-run"
    empty_run.mkdir()
    return {
        "garbage": garbage,
        "truncated": truncated,
        "other_model": SHIPPED / "resnet56__fashion-mnist.pt",
        "bad_toml": bad_toml,
        "bad_policy": bad_policy,
        "job": job,
        "empty_run": empty_run,
        "out": d / "out",
    }


# (id, argv with {placeholders} from `files`, a phrase the one line must hold)
CASES = [
    ("train-unknown-model", ["train", "--model", "nope", "--dataset", "digits", "--out", "{out}/m.pt"], "unknown model"),
    ("train-unknown-dataset", ["train", "--model", "digits-cnn", "--dataset", "mnist2", "--out", "{out}/m.pt"], "mnist2"),
    (
        "policy-garbage-checkpoint",
        ["policy", "init", *DIGITS, "--checkpoint", "{garbage}", "-r", "0.5", "-o", "{out}/p.json"],
        "not a PyTorch checkpoint",
    ),
    (
        "policy-truncated-checkpoint",
        ["policy", "init", *DIGITS, "--checkpoint", "{truncated}", "-r", "0.5", "-o", "{out}/p.json"],
        "not a PyTorch checkpoint",
    ),
    ("policy-bad-ratio", ["policy", "init", *DIGITS, "-r", "1.5", "-o", "{out}/p.json"], "ratio"),
    ("policy-show-bad-file", ["policy", "show", "{bad_policy}"], "policy"),
    (
        "policy-other-models-checkpoint",
        ["policy", "init", *R20, "--checkpoint", "{other_model}", "-r", "0.5", "-o", "{out}/p.json"],
        "does not fit this model",
    ),
    ("prune-bad-policy", ["prune", *DIGITS, "--policy", "{bad_policy}", "--out", "{out}/x"], "policy"),
    (
        "profile-garbage-checkpoint",
        ["profile", *DIGITS, "--device", "sim-cpu", "--checkpoint", "{garbage}"],
        "not a PyTorch checkpoint",
    ),
    (
        "profile-other-models-checkpoint",
        ["profile", *R20, "--device", "sim-cpu", "--checkpoint", "{other_model}"],
        "does not fit this model",
    ),
    ("profile-unknown-device", ["profile", *DIGITS, "--device", "tpu-9000"], "unknown device"),
    ("profile-bad-device-file", ["profile", *DIGITS, "--device", "{bad_toml}"], "intra_op_threads"),
    (
        "lut-build-unknown-model",
        ["lut", "build", "--model", "nope", "--dataset", "digits", "--device", "sim-cpu"],
        "unknown model",
    ),
    ("lut-check-bad-samples", ["lut", "check", *DIGITS, "--device", "sim-cpu", "--samples", "1"], "--samples"),
    ("search-bad-budget", ["search", *DIGITS, "--device", "sim-cpu", "--budget", "fast", "--out", "{out}/s"], "budget"),
    ("search-budget-over-one", ["search", *DIGITS, "--device", "sim-cpu", "--budget", "1.5", "--out", "{out}/s"], "budget"),
    (
        "search-unreachable-budget",
        ["search", *DIGITS, "--device", "sim-cpu", "--budget", "0.01", "--evals", "1", "--out", "{out}/s1"],
        "--max-ratio",
    ),
    (
        "search-unknown-agent",
        ["search", *DIGITS, "--device", "sim-cpu", "--agent", "genius", "--out", "{out}/s"],
        "unknown agent",
    ),
    (
        "search-garbage-checkpoint",
        ["search", *DIGITS, "--device", "sim-cpu", "--checkpoint", "{garbage}", "--out", "{out}/s"],
        "not a PyTorch checkpoint",
    ),
    ("search-bad-job-file", ["search", "--job", "{job}"], "speed"),
    ("search-bad-max-ratio", ["search", *DIGITS, "--device", "sim-cpu", "--max-ratio", "1.5", "--out", "{out}/s"], "max_ratio"),
    ("report-not-a-run", ["report", "{empty_run}"], "not a search run directory"),
    ("export-not-a-run", ["export", "{empty_run}", "--budget", "0.5", "--out", "{out}/e"], "not a search run directory"),
    (
        "export-bad-tie-break",
        ["export", "{empty_run}", "--budget", "0.5", "--out", "{out}/e", "--tie-break", "params"],
        "--tie-break must be one of macs, accuracy",
    ),
    ("dashboard-not-a-run", ["dashboard", "{empty_run}"], "not a search run directory"),
]


# Mistakes found only after the model is loaded and the dense model measured: progress lines come
# first (on stderr, as all progress does), then the one error line.
LATE = {"search-unreachable-budget"}


def run_bad(argv: list[str], capsys: pytest.CaptureFixture, late: bool = False) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, (code, captured.out[-500:], captured.err[-2000:])
    assert "Traceback" not in captured.err
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    if not late:
        assert len(err) == 1, err  # nothing but the error: the mistake was caught before any work
    return errors[0]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_and_exit_2(case: tuple, files: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    name, argv, phrase = case
    line = run_bad([a.format(**files) for a in argv], capsys, late=name in LATE)
    assert phrase in line, line


def test_a_remote_device_that_is_unreachable_or_refuses_the_token(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """profile, lut and search alike: one line naming the profiler and what to fix."""
    import os
    import subprocess

    from hwprofiler.client import ProfilerClient

    unreachable = f"remote:http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HWPROFILER_CLIENT_RETRIES", "1")
    assert "unreachable" in run_bad(["profile", *DIGITS, "--device", unreachable], capsys)
    token = tmp_path / "token"
    token.write_text("right-token\n")
    port = free_port()
    cmd = [sys.executable, "-m", "hwprofiler", "serve", "--port", str(port), "--token-file", str(token), "--device", "sim-cpu"]
    server = subprocess.Popen(cmd, env={**os.environ, "HWPROFILER_CACHE": str(tmp_path / "c")}, stderr=subprocess.DEVNULL)
    try:
        ProfilerClient(f"http://127.0.0.1:{port}", "right-token", retries=10, backoff_s=0.1).device()  # up
        monkeypatch.setenv("HWPROFILER_TOKEN", "wrong")
        remote = f"remote:http://127.0.0.1:{port}"
        for argv in (
            ["profile", *DIGITS, "--device", remote],
            ["lut", "check", *DIGITS, "--device", remote, "--samples", "2"],
            ["search", *DIGITS, "--device", remote, "--budget", "0.9", "--evals", "1", "--out", str(tmp_path / "s")],
        ):
            assert "rejected the token" in run_bad(argv, capsys, late=argv[0] == "search"), argv
    finally:
        server.terminate()
        server.wait(10)


def test_a_corrupt_cached_lut_is_set_aside_and_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged table in hwprofiler's cache never stops a command: it is moved aside with a
    warning naming both files, and a new one is measured."""
    import hwprofiler

    monkeypatch.setenv("HWPROFILER_CACHE", str(tmp_path / "cache"))
    path = hwprofiler.LUT.default_path(hwprofiler.fingerprint_id(hwprofiler.load_device("sim-cpu")))
    path.parent.mkdir(parents=True)
    path.write_text('{"format": 3, "fingerprint": {}, "entries": [{"oops": 1}]')  # truncated JSON
    assert main(["lut", "build", *DIGITS, "--device", "sim-cpu", "--calibration-runs", "2", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["measured"] > 0
    assert "could not be used" in caplog.text and str(path) in caplog.text
    assert list(path.parent.glob("*.bad-*.json")) and json.loads(path.read_text())["entries"]
