"""The LUT fidelity check on the simulated device (the same on every machine): its ablation prices
the judged policies without the MACs term too, and the bench's table has a cell for every column."""

from __future__ import annotations

from bench.common import machine
from bench.lut_fidelity import markdown
from hilprune.latency_check import check_fidelity
from hilprune.models import resolve_model


def test_the_check_prices_policies_without_the_macs_term_and_the_table_renders_it() -> None:
    spec = resolve_model("digits-cnn", "digits", use_shipped=False)
    row = check_fidelity(spec, "sim-cpu", samples=4, progress=False, calibration_runs=10)
    without = row["ablation"]["no_macs"]
    assert not without["model"].endswith("+macs")
    assert without["n"] == 4 and 0.0 <= without["within_10pct"] <= 1.0
    row |= {"input_shape": list(spec.input_shape)}
    old = row | {"ablation": {k: v for k, v in row["ablation"].items() if k != "no_macs"}}  # a run before the term
    table = markdown([row, old], machine(), 0.0, "sim-cpu", "4").splitlines()
    head = next(line for line in table if line.startswith("| model |"))
    body = [line for line in table if line.startswith("| digits-cnn |")]
    assert len(body) == 2
    for line in body:
        assert line.count("|") == head.count("|")
    assert f"({without['model']})" in body[0] and "| – |" in body[1]
