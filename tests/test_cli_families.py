"""The CLI on the architecture families (tests/fixtures/families): `policy init`, `policy show` and `prune`
give a result, and say which layers stay unpruned and why; a model that cannot run is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hilprune.cli.main import app, main
from hilprune.export import TOLERANCE
from hilprune.policy import Policy

FAMILY_DIR = Path(__file__).parent / "fixtures" / "families"
FAMILIES = ["shufflenetv2", "resnext", "regnet", "dpn", "pnasnet", "senet", "mobilenet", "densenet"]


def model_args(family: str) -> list[str]:
    return ["--model", f"{FAMILY_DIR / family}.py:build", "--input-shape", "3,16,16", "--num-classes", "10"]


def invoke(args: list[str]) -> str:
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("family", FAMILIES)
def test_policy_init_show_and_prune(family: str, tmp_path: Path) -> None:
    policy_path = tmp_path / "policy.json"
    init = json.loads(invoke(["policy", "init", *model_args(family), "--ratio", "0.4", "--out", str(policy_path), "--json"]))
    assert init["groups"] > 0 and init["channels_after"] < init["channels_before"]
    assert init["excluded"] == len(init["excluded_layers"])
    policy = Policy.load(policy_path)
    assert [(e.name, e.reason) for e in policy.excluded] == [(e["name"], e["reason"]) for e in init["excluded_layers"]]

    shown = invoke(["policy", "show", str(policy_path)])
    for e in policy.excluded:
        assert f"{e.name}: {e.reason}" in " ".join(shown.split())  # rich may wrap long lines
    assert ("left unpruned" in shown) == bool(policy.excluded)

    out = tmp_path / "out"
    report = json.loads(invoke(["prune", *model_args(family), "--policy", str(policy_path), "--out", str(out), "--json"]))
    assert report["macs_after"] < report["macs_before"] and report["params_after"] < report["params_before"]
    assert report["max_abs_diff"] <= TOLERANCE
    assert report["excluded"] == len(policy.excluded)
    assert {p.name for p in out.iterdir()} == {"pruned.pt", "policy.json", "model.onnx"}


def test_shuffle_and_grouped_say_what_stays(tmp_path: Path) -> None:
    shuffle = tmp_path / "shuffle.json"
    invoke(["policy", "init", *model_args("shufflenetv2"), "--ratio", "0.4", "--out", str(shuffle)])
    shown = " ".join(invoke(["policy", "show", str(shuffle)]).split())
    assert "left unpruned" in shown and "channel shuffle" in shown
    grouped = tmp_path / "resnext.json"
    table = " ".join(invoke(["policy", "init", *model_args("resnext"), "--ratio", "0.5", "--out", str(grouped)]).split())
    assert "grouped" in table and "4x4 -> 4x2" in table  # 4 conv groups of 4 channels keep 2 each
    assert "left unpruned" not in table


def test_model_that_cannot_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--model", f"{FAMILY_DIR / 'densenet'}.py:build", "--input-shape", "1,16,16"]
    code = main(["policy", "init", *args, "--ratio", "0.4", "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert "fails on a 1x1x16x16 input" in err
