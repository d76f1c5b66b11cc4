"""bench/cross_device.py's judgement: when two devices' exports are one deployment, the verdict per
cell, and a shipped graph that one runtime cannot run (real onnxruntime and OpenVINO)."""

from __future__ import annotations

import pytest

from bench.cross_device import matrix, other_fits_budget, rejudged, same_deployment, tally_markdown, verdict


def _searched(kept: list[int], shipped: str | None = None, scheme: str | None = None) -> dict:
    out: dict = {"kept": kept}
    if shipped is not None:
        out |= {"shipped": shipped, "scheme": scheme}
    return out


def test_one_deployment_needs_the_same_widths_shipped_in_the_same_precision_and_scheme() -> None:
    assert same_deployment(_searched([8, 16]), _searched([8, 16]))  # older results: fp32, nothing recorded
    assert same_deployment(_searched([8, 16], "int8", "qdq-u8s8"), _searched([8, 16], "int8", "qdq-u8s8"))
    assert not same_deployment(_searched([8, 16], "int8", "qdq-u8s8"), _searched([8, 16], "fp32"))
    assert not same_deployment(_searched([8, 16], "int8", "qdq-u8s8"), _searched([8, 16], "int8", "qdq-s8s8"))
    assert not same_deployment(_searched([8, 16], "fp32"), _searched([8, 24], "fp32"))


def test_the_other_policy_is_held_to_this_devices_budget_as_a_fraction_of_its_dense_latency() -> None:
    res = {
        "searched": {"a": {"budget_ms": 0.40, "search_dense_ms": 1.0}, "b": {"budget_ms": 0.25, "search_dense_ms": 0.5}},
        "matrix": {"b": {"a": {"ratio": 0.433}}, "a": {"b": {"ratio": 0.45}, "c": {"ratio": None}}},
    }
    assert other_fits_budget(res, "a", "b").startswith("**no**")  # 0.433 of dense against 0.40
    assert other_fits_budget(res, "b", "a").startswith("yes")  # 0.45 against 0.25/0.5 = 0.50
    assert other_fits_budget(res, "c", "a") == "does not run"


def test_verdict_wants_ten_percent_lower_latency_or_a_point_more_at_equal_latency() -> None:
    assert verdict(0.89, 1.0, 0.90, 0.90)[0]
    assert not verdict(0.95, 1.0, 0.90, 0.90)[0]
    assert verdict(1.05, 1.0, 0.915, 0.90)[0]
    assert not verdict(1.2, 1.0, 0.95, 0.90)[0]


def test_a_faster_own_policy_counts_only_at_equal_accuracy() -> None:
    # The accuracy issue's proxy can ship a deeper cut on one device: 20% faster but 4.3 points
    # less accurate is another point of the trade-off, not a better policy (cross_device_zen5_bf16_r20).
    met, why = verdict(0.80, 1.0, 0.8706, 0.9132)
    assert not met and why == "20% lower latency, but 4.26 points less accurate"
    assert verdict(0.80, 1.0, 0.9032, 0.9132)[0]  # one point less is equal accuracy
    assert not verdict(0.55, 1.0, 0.9271, 0.9376)[0]  # 1.05 points less (cross_device_intel_bf16_mbv2)


def _stored(own_ms: float, other_ms: float, own_acc: float, other_acc: float, met: bool) -> dict:
    """A results file's model entry as an older run wrote it (its targets by the rule of its day)."""
    searched = {"a": {"kept": [8], "test_accuracy": own_acc}, "b": {"kept": [16], "test_accuracy": other_acc}}
    cells = {"a": {"a": {"ms": own_ms}, "b": {"ms": 0.5}}, "b": {"a": {"ms": other_ms}, "b": {"ms": 1.0}}}
    targets = [
        {"model": "m", "device": "a", "other": "b", "met": met, "why": "as recorded"},
        {"model": "m", "device": "b", "other": "a", "met": False, "why": "as recorded"},
    ]
    return {"model": "m", "searched": searched, "matrix": cells, "targets": targets}


def test_the_tally_judges_every_stored_run_again_and_names_the_cells_that_turned() -> None:
    turned = _stored(0.8, 1.0, 0.87, 0.91, met=True)  # met under the old rule only
    kept = _stored(0.8, 1.0, 0.91, 0.91, met=True)
    assert [t["met"] for t in rejudged(turned)] == [False, False]
    assert [t["met"] for t in rejudged(kept)] == [True, False]
    runs = {
        name: {"machine": {"cpu": "X"}, "fingerprints": {"a": {"cpu_model": "X", "isa": ["avx2"]}}, "models": [m]}
        for name, m in (("cross_device_old", turned), ("cross_device_new", kept))
    }
    text = tally_markdown(runs, note="what this says")
    row = next(line for line in text.splitlines() if "`cross_device_old`" in line)
    assert "| 1/2 | 0/2 | a: 20% lower latency, but 4.00 points less accurate |" in row
    row = next(line for line in text.splitlines() if "`cross_device_new`" in line)
    assert row.endswith("| 1/2 | 1/2 | - |")
    assert text.endswith("what this says")


def test_a_graph_one_runtime_cannot_read_is_reported_not_measured() -> None:
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'hilprune[openvino]'")
    from hwprofiler.quantization import Scheme, quantize_structure
    from hwprofiler.testing import tiny_cnn

    dense = tiny_cnn().SerializeToString()
    qop = quantize_structure(dense, Scheme.parse("qop-u8s8"))  # QOperator: onnxruntime runs it, OpenVINO does not
    cells = matrix({"ort-cpu-1t": qop}, dense, ["ort-cpu-1t", "ov-cpu-1t"], repeats=1)
    on_ort, on_ov = cells["ort-cpu-1t"]["ort-cpu-1t"], cells["ort-cpu-1t"]["ov-cpu-1t"]
    assert on_ort["ratio"] is not None and on_ort["ratio"] > 0 and "error" not in on_ort
    assert on_ov["ratio"] is None and on_ov["error"]


def test_an_int8_graph_is_measured_through_the_dense_int8_graph_and_directly() -> None:
    from hwprofiler.quantization import Scheme, quantize_structure
    from hwprofiler.testing import tiny_cnn

    dense = tiny_cnn().SerializeToString()
    pruned_q = quantize_structure(tiny_cnn(c=8).SerializeToString(), Scheme.parse("qdq-u8s8"))
    cells = matrix({"ort-cpu-1t": pruned_q}, dense, ["ort-cpu-1t"], repeats=2, int8_schemes={"ort-cpu-1t": "qdq-u8s8"})
    cell = cells["ort-cpu-1t"]["ort-cpu-1t"]
    assert len(cell["ratios"]) == len(cell["direct_ratios"]) == 2 and cell["ratio"] > 0
    assert cell["int8_conversion"] > 0 and len(cell["int8_conversion_ratios"]) >= 3


def test_a_run_directory_names_every_setting_that_steers_its_trials() -> None:
    import argparse

    from bench.cross_device import DEFAULT_AGENTS, DEFAULT_BUDGET, run_dir_name

    base = {"latency_source": "hybrid", "round_to": 8, "precision": "fp32", "budget": DEFAULT_BUDGET, "agents": DEFAULT_AGENTS}
    default = run_dir_name("resnet20", "ov-cpu-1t", "w1", argparse.Namespace(**base))
    assert default == "resnet20-ov-cpu-1t-w1-hybrid-r8"  # what earlier runs were named: they still resume
    names = {
        run_dir_name("resnet20", "ov-cpu-1t", "w1", argparse.Namespace(**(base | change)))
        for change in (
            {"budget": "0.4"},
            {"agents": "uniform,random,tpe"},
            {"precision": "int8"},
            {"round_to": 1},
            {"proxy": "kd:40"},
            {"proxy": "ls,kd:40"},
            {"remove_blocks": "3"},
        )
    }
    assert len(names) == 7 and default not in names
    assert run_dir_name("resnet20", "ov-cpu-1t", "w1", argparse.Namespace(**(base | {"proxy": None}))) == default


def test_the_search_command_it_records_names_the_proxy_its_trials_were_scored_with(tmp_path) -> None:
    import argparse

    from bench.cross_device import search_args

    base = {"precision": "fp32", "budget": "0.5", "agents": "uniform", "evals": 3, "latency_source": "lut"}
    base |= {"round_to": 8, "seed": 0}
    with_proxy = search_args("resnet20", "ort-cpu-1t", tmp_path, argparse.Namespace(**base, proxy="ls,kd:40"))
    assert with_proxy[-2:] == ["--proxy", "ls,kd:40"]
    assert "--proxy" not in search_args("resnet20", "ort-cpu-1t", tmp_path, argparse.Namespace(**base, proxy=None))
    blocks = search_args("resnet20", "ort-cpu-1t", tmp_path, argparse.Namespace(**base, proxy=None, remove_blocks="3"))
    assert blocks[-2:] == ["--remove-blocks", "3"]


def test_a_cell_is_settled_when_two_thirds_of_at_least_repeats_ratios_agree_within_five_percent() -> None:
    from bench.cross_device import settled

    assert not settled([0.529, 0.495, 0.432], 3)  # as a Zen 3 bench read one pair: two of three off the median
    assert settled([0.481, 0.403, 0.487], 3)  # one slow round of three
    assert not settled([0.49, 0.49], 3)  # too few rounds yet
    assert settled([0.49], 1)


def test_the_matrix_measures_a_cell_again_until_its_ratios_agree_or_the_rounds_run_out(monkeypatch) -> None:
    from types import SimpleNamespace

    import hwprofiler
    from bench.cross_device import MAX_ROUNDS, _agreement_lines

    script = {
        b"steady": iter([0.5] * 20),
        b"one-bad-start": iter([0.3, 0.7, 0.5, 0.5, 0.5] + [0.5] * 20),
        b"wild": iter([0.3, 0.45, 0.6] * 10),
    }
    monkeypatch.setattr(hwprofiler, "measure_paired", lambda model, ref, dev, **kw: SimpleNamespace(ratio=next(script[model])))
    cells = matrix({p.decode(): p for p in script}, b"dense", ["dev"], repeats=3)
    steady, late, wild = (cells[p]["dev"] for p in ("steady", "one-bad-start", "wild"))
    assert len(steady["ratios"]) == 3 and steady["settled"] and steady["ratio"] == 0.5
    assert len(late["ratios"]) == 6 and late["settled"] and late["ratio"] == 0.5  # two bad rounds: 4 of 6 must agree
    assert len(wild["ratios"]) == MAX_ROUNDS * 3 and not wild["settled"]
    # the section names the cell that took more rounds and the one that never agreed, not the steady one
    res = {
        "args": {"repeats": 3},
        "models": [{"model": "m", "matrix": {"a": {"a": steady, "b": late}, "b": {"a": wild, "b": steady}}}],
    }
    again, never = _agreement_lines(res, ["a", "b"])[1:]
    assert "m searched for a on b (6 rounds, ratios 0.300-0.700)" in again and "searched for a on a" not in again
    assert never.startswith("**Never agreed** in 9 rounds") and "m searched for b on a (9 rounds" in never
    assert (
        _agreement_lines(
            {"args": {"repeats": 3}, "models": [{"model": "m", "matrix": {"a": {"a": {"ratios": [0.3, 0.6]}}}}]}, ["a"]
        )
        == []
    )
