"""The core CLI on digits-cnn: train, zoo, policy init/show, prune, and one clear line per user mistake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hilprune.cli.main import app, main
from hilprune.export import TOLERANCE, ort_session
from hilprune.models import resolve_model
from hilprune.policy import Policy
from hilprune.surgery import load_pruned

FIXTURES = Path(__file__).parent / "fixtures"
SHIPPED = Path(__file__).parents[1] / "hilprune" / "models" / "checkpoints" / "digits-cnn__digits.pt"
DIGITS = ["--model", "digits-cnn", "--dataset", "digits"]
PRUNE_KEYS = {"macs_before", "macs_after", "params_before", "params_after", "onnx", "max_abs_diff"}


def invoke(args: list[str]) -> tuple[dict | None, str]:
    """Run a command that must succeed; returns (parsed JSON stdout or None, stdout)."""
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.stdout
    return (json.loads(out) if "--json" in args else None), out


def fails(args: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run through main() (which turns user errors into exit 2); returns the one-line message."""
    code = main(args)
    captured = capsys.readouterr()
    assert code == 2, (code, captured.out, captured.err)
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in captured.err
    return err


@pytest.fixture
def template(tmp_path: Path) -> Path:
    path = tmp_path / "policy.json"
    invoke(["policy", "init", *DIGITS, "--ratio", "0.5", "--out", str(path)])
    return path


# --- happy paths -------------------------------------------------------------------------------


def test_help_lists_core_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("train", "zoo", "policy", "prune"):
        assert cmd in result.stdout


def test_zoo_json() -> None:
    obj, _ = invoke(["zoo", "--json"])
    names = [m["name"] for m in obj["models"]]
    assert names == ["resnet20", "resnet56", "mobilenetv2", "vgg11", "digits-cnn"]
    digits = next(m for m in obj["models"] if m["name"] == "digits-cnn")
    assert digits["checkpoints"][0]["dataset"] == "digits" and digits["checkpoints"][0]["val_accuracy"] > 0.9
    _, table = invoke(["zoo"])
    assert "digits-cnn" in table


def test_train_few_steps(tmp_path: Path) -> None:
    out = tmp_path / "ck" / "d.pt"
    obj, _ = invoke(["train", *DIGITS, "--epochs", "0.2", "--batch-size", "64", "--out", str(out), "--json", "--threads", "1"])
    assert obj["checkpoint"] == str(out) and 0.0 <= obj["val_accuracy"] <= 1.0
    assert out.is_file() and out.with_suffix(".json").is_file() and out.with_suffix(".md").is_file()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["model"] == "digits-cnn" and meta["epochs"] == 0.2
    spec = resolve_model("digits-cnn", "digits", checkpoint=out)  # the new checkpoint loads (weights_only)
    spec.build()


def test_policy_init_and_show(template: Path) -> None:
    policy = Policy.load(template)
    assert policy.model["name"] == "digits-cnn" and policy.model["checkpoint"] == "digits-cnn__digits.pt"
    assert [g.requested_ratio for g in policy.groups] == [0.5] * 4
    assert [g.channels_after for g in policy.groups] == [16, 32, 64, 64]

    obj, _ = invoke(["policy", "show", str(template), "--json"])
    assert obj["format"] == "hilprune.policy/v1" and len(obj["groups"]) == 4
    assert obj["summary"]["channels_before"] == 352 and obj["summary"]["channels_after"] == 176

    _, table = invoke(["policy", "show", str(template)])
    for text in ("digits-cnn", "features.0", "32 -> 16", "0.500", "conv", "digits-cnn__digits.pt", "1x8x8"):
        assert text in table


def test_policy_init_options(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    obj, _ = invoke(
        [
            "policy",
            "init",
            "--model",
            "digits-cnn",
            "--input-shape",
            "1,8,8",
            "--num-classes",
            "10",
            "--ratio",
            "0.3",
            "--round-to",
            "8",
            "--max-ratio",
            "0.5",
            "--importance",
            "fpgm",
            "--out",
            str(path),
            "--json",
        ]
    )
    assert obj["policy"] == str(path) and obj["groups"] == 4
    policy = Policy.load(path)
    assert policy.round_to == 8 and policy.max_ratio == 0.5 and policy.importance == "fpgm"
    assert all(g.channels_after % 8 == 0 for g in policy.groups)
    assert policy.model["checkpoint"] is None and policy.model["dataset"] is None


def test_prune_json(template: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    obj, _ = invoke(["prune", *DIGITS, "--policy", str(template), "--out", str(out), "--json"])
    assert PRUNE_KEYS <= obj.keys()
    assert obj["macs_after"] < obj["macs_before"] and obj["params_after"] < obj["params_before"]
    assert 0 <= obj["max_abs_diff"] <= TOLERANCE
    assert obj["onnx"] == str(out / "model.onnx")
    assert {p.name for p in out.iterdir()} == {"pruned.pt", "policy.json", "model.onnx"}

    written = Policy.load(out / "policy.json")
    assert written.metrics["macs_after"] == obj["macs_after"] and written.metrics["max_abs_diff"] == obj["max_abs_diff"]
    assert [g.channels_after for g in written.groups] == [16, 32, 64, 64]
    assert written.importance == "l1"

    spec = resolve_model("digits-cnn", "digits")
    model, policy = load_pruned(spec, out / "pruned.pt")
    assert policy.key() == written.key()
    x = torch.randn(1, 1, 8, 8)  # the exported graph has a fixed batch of 1
    with torch.no_grad():
        ref = model(x).numpy()
    onnx_out = ort_session((out / "model.onnx").read_bytes()).run(None, {"input": x.numpy()})[0]
    assert abs(onnx_out - ref).max() <= TOLERANCE


def test_prune_importance_override_and_summary(template: Path, tmp_path: Path) -> None:
    obj, _ = invoke(
        ["prune", *DIGITS, "--policy", str(template), "--out", str(tmp_path / "t"), "--json", "--importance", "taylor"]
    )
    assert obj["importance"] == "taylor"
    assert Policy.load(tmp_path / "t" / "policy.json").importance == "taylor"
    _, text = invoke(
        [
            "prune",
            *DIGITS,
            "--policy",
            str(template),
            "--out",
            str(tmp_path / "s"),
            "--importance",
            "bn-scale",
            "--checkpoint",
            str(SHIPPED),
        ]
    )
    assert "MACs" in text and "params" in text and "bn-scale" in text


def test_prune_user_model(tmp_path: Path) -> None:
    spec_text = f"{FIXTURES / 'user_model.py'}:build"
    policy = tmp_path / "p.json"
    invoke(["policy", "init", "--model", spec_text, "--input-shape", "3,16,16", "--ratio", "0.25", "--out", str(policy)])
    obj, _ = invoke(
        [
            "prune",
            "--model",
            spec_text,
            "--input-shape",
            "3,16,16",
            "--policy",
            str(policy),
            "--out",
            str(tmp_path / "o"),
            "--json",
        ]
    )
    assert obj["macs_after"] < obj["macs_before"] and obj["max_abs_diff"] <= TOLERANCE


# --- user mistakes: exit 2, one line on stderr ---------------------------------------------------


def test_unknown_model(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    err = fails(
        ["policy", "init", "--model", "resnet1000", "--dataset", "digits", "--ratio", "0.5", "--out", str(tmp_path / "p.json")],
        capsys,
    )
    assert "unknown model 'resnet1000'" in err
    assert not (tmp_path / "p.json").exists()


def test_unknown_model_in_prune(capsys: pytest.CaptureFixture, template: Path, tmp_path: Path) -> None:
    err = fails(
        ["prune", "--model", "resnet1000", "--dataset", "digits", "--policy", str(template), "--out", str(tmp_path / "o")], capsys
    )
    assert "unknown model 'resnet1000'" in err


def test_missing_policy_file(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    err = fails(["prune", *DIGITS, "--policy", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")], capsys)
    assert "policy file not found" in err and "nope.json" in err
    assert not (tmp_path / "o").exists()
    err = fails(["policy", "show", str(tmp_path / "nope.json")], capsys)
    assert "policy file not found" in err


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda o: o["groups"][0].update(requested_ratio=0.95), "ratio 0.95 is outside [0, 0.9]"),
        (lambda o: o["groups"][1].update(requested_ratio=-0.2), "ratio -0.2 is outside"),
        (lambda o: o["groups"][0].update(name="features.42"), "unknown group 'features.42'"),
        (lambda o: o["groups"].pop(), "no ratio for group(s) features.10"),
        (lambda o: o.update(format="hilprune.policy/v9"), "unknown policy format 'hilprune.policy/v9'"),
        (lambda o: o.update(importance="magic"), "unknown importance 'magic'"),
    ],
)
def test_bad_policy(capsys: pytest.CaptureFixture, template: Path, tmp_path: Path, edit, message: str) -> None:
    obj = json.loads(template.read_text())
    edit(obj)
    template.write_text(json.dumps(obj))
    err = fails(["prune", *DIGITS, "--policy", str(template), "--out", str(tmp_path / "o")], capsys)
    assert message in err
    assert not (tmp_path / "o" / "pruned.pt").exists()


def test_policy_not_json_and_for_another_model(capsys: pytest.CaptureFixture, template: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    assert "not valid JSON" in fails(["policy", "show", str(bad)], capsys)
    assert "not valid JSON" in fails(["prune", *DIGITS, "--policy", str(bad), "--out", str(tmp_path / "o")], capsys)
    err = fails(
        ["prune", "--model", "resnet20", "--input-shape", "3,8,8", "--policy", str(template), "--out", str(tmp_path / "o")],
        capsys,
    )
    assert "policy is for name='digits-cnn'" in err and "resnet20" in err


def test_other_mistakes(capsys: pytest.CaptureFixture, template: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "p.json")
    assert "outside [0, 0.9]" in fails(["policy", "init", *DIGITS, "--ratio", "1.5", "--out", out], capsys)
    assert "unknown importance 'l7'" in fails(
        ["policy", "init", *DIGITS, "--ratio", "0.5", "--importance", "l7", "--out", out], capsys
    )
    assert "needs --dataset or --input-shape" in fails(
        ["policy", "init", "--model", "vgg11", "--ratio", "0.5", "--out", out], capsys
    )
    assert "--input-shape must be" in fails(
        ["policy", "init", "--model", "vgg11", "--input-shape", "3,32", "--ratio", "0.5", "--out", out], capsys
    )
    assert "unknown dataset 'mnist'" in fails(
        ["policy", "init", "--model", "vgg11", "--dataset", "mnist", "--ratio", "0.5", "--out", out], capsys
    )
    assert "checkpoint not found" in fails(
        ["prune", *DIGITS, "--checkpoint", str(tmp_path / "c.pt"), "--policy", str(template), "--out", str(tmp_path / "o")],
        capsys,
    )
    assert "user model file not found" in fails(
        [
            "prune",
            "--model",
            f"{tmp_path / 'm.py'}:build",
            "--input-shape",
            "3,8,8",
            "--policy",
            str(template),
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert "pass --dataset" in fails(
        [
            "prune",
            "--model",
            "digits-cnn",
            "--input-shape",
            "1,8,8",
            "--importance",
            "taylor",
            "--policy",
            str(template),
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    (tmp_path / "afile").write_text("x")
    assert "is not a folder" in fails(["prune", *DIGITS, "--policy", str(template), "--out", str(tmp_path / "afile")], capsys)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    assert "is not a PyTorch checkpoint" in fails(
        ["prune", *DIGITS, "--checkpoint", str(junk), "--policy", str(template), "--out", str(tmp_path / "o")], capsys
    )


def test_entry_point_error_has_no_traceback(tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hilprune",
            "prune",
            "--model",
            "digits-cnn",
            "--dataset",
            "digits",
            "--policy",
            str(tmp_path / "missing.json"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: policy file not found: {tmp_path / 'missing.json'}"
    assert proc.stdout == ""


def test_usage_errors_exit_2_without_traceback(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """typer vendors click (typer._click): its usage errors must still be reported, not raised."""
    assert main(["policy", "init", *DIGITS, "--out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert "Missing option '--ratio'" in err and "Traceback" not in err
    assert main(["prune", *DIGITS, "--policy", "p.json", "--out", str(tmp_path), "--no-such-flag"]) == 2
    assert "No such option" in capsys.readouterr().err
    assert main(["policy", "init", *DIGITS, "--ratio", "half", "--out", "p.json"]) == 2
    assert "Invalid value for '--ratio'" in capsys.readouterr().err
    assert main(["policy", "--help"]) == 0
    assert "init" in capsys.readouterr().out
