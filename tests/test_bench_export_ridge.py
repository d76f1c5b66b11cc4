"""bench/export_ridge.py: which compare_agents row a pick names, and how its table reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.export_ridge import find_pick, markdown, table_rows
from hilprune.errors import HilpruneError


def _export(ridge: float | None, after: float, probe: dict | None = None) -> dict:
    return {
        "ridge": ridge,
        "probe": probe,
        "test_before": 0.5,
        "test_after": after,
        "val_after": after,
        "dense_test": 0.93,
        "speedup": 3.5,
        "wall_s": 1.0,
    }


def test_a_pick_names_its_row_and_its_run_directory_in_that_checkout(tmp_path: Path) -> None:
    results = tmp_path / "bench" / "results" / "cmp.json"
    results.parent.mkdir(parents=True)
    rows = [
        {"agent": "ppo", "seed": 1, "trial": 9, "trial_live_rule": 7, "model": "resnet20", "budget": 0.5, "run_dir": "runs/x/s1"},
        {"agent": "tpe", "seed": 1, "trial": 3, "model": "resnet20", "budget": 0.5, "run_dir": "runs/x/s1"},
        {"agent": "tp-global", "seed": 1, "trial": None, "model": "resnet20", "budget": 0.5, "run_dir": None},
    ]
    results.write_text(json.dumps(rows))
    pick = find_pick(f"{results}:ppo:1")
    assert pick == {
        "pick": "cmp:ppo:1",
        "model": "resnet20",
        "budget": "0.5",
        "trial": "ppo:7",
        "run_dir": str(tmp_path / "runs/x/s1"),
    }
    assert find_pick(f"{results}:tpe:1")["trial"] == "tpe:3"  # a row from before the export rule: the search's pick
    for missing in ("ppo:0", "tp-global:1"):  # no such seed; the peer has no trial to export
        with pytest.raises(HilpruneError, match="no .* row of seed"):
            find_pick(f"{results}:{missing}")


def test_the_table_shows_auto_in_the_column_of_the_ridge_it_chose() -> None:
    probe = {"ridge": 0.001, "scores": {"0.001": 0.8, "0.01": 0.79, "0.1": 0.7}, "steps": 40, "val_images": 2000, "wall_s": 12.0}
    exports = {
        "auto": _export(0.001, 0.8838, probe),
        "ridge 0.01": _export(0.01, 0.8781),
        "ridge 0.1": _export(0.1, 0.8533),
        "none": _export(None, 0.8557),
    }
    row = {"pick": "cmp:uniform:0", "model": "resnet20", "budget": "0.3", "exports": exports}
    md = markdown(
        {
            "name": "export_ridge",
            "finetune_epochs": 0.25,
            "machine": {"cpu": "x", "cores": 2, "python": "3", "versions": {}, "date": "d", "command": "c"},
            "rows": [row],
        }
    )
    line = next(ln for ln in md.splitlines() if ln.startswith("| cmp:uniform:0"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3:7] == ["85.57% (50.0)", "**88.38%** (50.0)", "87.81% (50.0)", "85.33% (50.0)"]
    assert cells[7] == "0.001 (0.001: 80.0, 0.01: 79.0, 0.1: 70.0)" and cells[8] == "12.0"


def test_a_run_adds_its_picks_to_the_earlier_table_and_resumes_the_ones_it_names_again() -> None:
    done = {"pick": "cmp:uniform:0", "exports": {"auto": _export(0.01, 0.88)}}
    other = {"pick": "cmp:ppo:0", "exports": {"auto": _export(0.1, 0.91)}}
    earlier = {"finetune_epochs": 0.25, "rows": [done, other]}
    new = {"pick": "cmp:ppo:1", "model": "resnet20", "budget": "0.3", "trial": "ppo:25", "run_dir": "r"}
    rows = table_rows(earlier, [{"pick": "cmp:uniform:0"}, new], 0.25)
    assert list(rows) == ["cmp:uniform:0", "cmp:ppo:0", "cmp:ppo:1"]
    assert rows["cmp:uniform:0"] is done and rows["cmp:ppo:0"] is other  # resumed and kept, not started again
    assert rows["cmp:ppo:1"] == new | {"exports": {}}
    assert list(table_rows(earlier, [new], 1.0)) == ["cmp:ppo:1"]  # rows of another fine-tune length are not mixed in
