"""bench/proxy_fidelity.py's statistics: the repeated reference is ranked against the first, and
each proxy against the mean of both, so the table shows how far the reference itself repeats."""

from __future__ import annotations

import pytest

from bench.proxy_fidelity import (
    AGAIN,
    EARLIER,
    HALVES,
    MIN_PARTIAL,
    complete_references,
    earlier_reference,
    markdown,
    spearman,
    summarize,
)


def rows(proxy: list[float], ref: list[float], again: list[float] | None = None) -> list[dict]:
    out = []
    for i, (p, r) in enumerate(zip(proxy, ref)):
        row = {"index": i, "proxies": {"kd:40": {"accuracy": p, "cost_s": 1.0 + i}}, "reference": {"test_accuracy": r}}
        if again is not None:
            row["reference_again"] = {"test_accuracy": again[i], "wall_s": 10.0}
        out.append(row)
    return out


def test_without_a_second_reference_only_the_proxies_are_summarized():
    s = summarize(rows([0.1, 0.3, 0.2, 0.4], [0.5, 0.7, 0.6, 0.8]), ["kd:40"])
    assert set(s) == {"kd:40"} and "rho_both" not in s["kd:40"]
    assert s["kd:40"]["rho"] == pytest.approx(1.0) and s["kd:40"]["regret_pts"] == pytest.approx(0.0)
    assert s["kd:40"]["cost_s"] == pytest.approx(2.5)  # the median


def test_the_second_reference_is_ranked_against_the_first_and_proxies_against_their_mean():
    proxy, ref, again = [0.1, 0.2, 0.3, 0.4, 0.5], [0.60, 0.70, 0.65, 0.80, 0.75], [0.62, 0.61, 0.72, 0.79, 0.83]
    s = summarize(rows(proxy, ref, again), ["kd:40"])
    assert s[AGAIN]["rho"] == pytest.approx(spearman(again, ref))
    assert s[AGAIN]["cost_s"] == pytest.approx(10.0) and "rho_both" not in s[AGAIN]
    assert s["kd:40"]["rho"] == pytest.approx(spearman(proxy, ref))
    assert s["kd:40"]["rho_both"] == pytest.approx(spearman(proxy, [(a + b) / 2 for a, b in zip(ref, again)]))
    assert s["kd:40"]["rho_both"] > s["kd:40"]["rho"]  # the mean of the references follows the proxy better here


def test_four_reference_seeds_rank_each_proxy_against_their_mean_and_one_half_against_the_other():
    proxy = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    seeds = [
        [0.60, 0.70, 0.65, 0.80, 0.75, 0.85],
        [0.62, 0.61, 0.72, 0.79, 0.83, 0.80],
        [0.58, 0.66, 0.70, 0.74, 0.81, 0.88],
        [0.64, 0.69, 0.61, 0.83, 0.78, 0.86],
    ]
    table = rows(proxy, seeds[0], seeds[1])
    for i, row in enumerate(table):
        row["reference_more"] = [{"test_accuracy": seeds[k][i], "wall_s": 10.0 * k} for k in (2, 3)]
    s = summarize(table, ["kd:40"])
    mean4 = [sum(seeds[k][i] for k in range(4)) / 4 for i in range(len(proxy))]
    assert s["kd:40"]["rho_both"] == pytest.approx(spearman(proxy, mean4)) and s["kd:40"]["refs_in_mean"] == 4
    first = [(seeds[0][i] + seeds[1][i]) / 2 for i in range(len(proxy))]
    last = [(seeds[2][i] + seeds[3][i]) / 2 for i in range(len(proxy))]
    assert s[HALVES]["rho"] == pytest.approx(spearman(last, first)) and s[HALVES]["refs_in_mean"] == 2
    assert s[HALVES]["cost_s"] == pytest.approx(50.0)  # the seconds of the half it ranks
    assert s[AGAIN]["rho"] == pytest.approx(spearman(seeds[1], seeds[0]))  # the second seed against the first, as before
    del table[0]["reference_more"]  # one policy with two seeds: the mean is over the two every policy has
    s = summarize(table, ["kd:40"])
    assert HALVES not in s and s["kd:40"]["refs_in_mean"] == 2


def test_more_reference_seeds_fine_tune_only_the_seeds_a_reused_run_lacks():
    asked: list[int] = []

    def fine_tune(k: int) -> dict:
        asked.append(k)
        return {"test_accuracy": k / 10}

    kept = [{"test_accuracy": 0.11}, {"test_accuracy": 0.22}]
    refs = complete_references(kept, 4, fine_tune)
    assert asked == [3, 4] and [r["test_accuracy"] for r in refs] == [0.11, 0.22, 0.3, 0.4]
    assert complete_references(kept, 1, fine_tune) == kept[:1] and asked == [3, 4]


def test_an_earlier_runs_reference_is_ranked_against_this_one_like_a_proxy():
    proxy, ref = [0.1, 0.2, 0.3, 0.4], [0.60, 0.70, 0.65, 0.80]
    earlier_one = {"reference": {"test_accuracy": 0.5, "wall_s": 3.0}}
    earlier_two = {"reference": {"test_accuracy": 0.5, "wall_s": 3.0}, "reference_again": {"test_accuracy": 0.7, "wall_s": 4.0}}
    assert earlier_reference(earlier_one) == {"test_accuracy": 0.5, "wall_s": 3.0, "runs": 1}
    assert earlier_reference(earlier_two) == {"test_accuracy": pytest.approx(0.6), "wall_s": 7.0, "runs": 2}
    table = rows(proxy, ref)
    earlier = [0.3, 0.1, 0.4, 0.2]
    for row, e in zip(table, earlier):
        row["earlier_reference"] = {"test_accuracy": e, "wall_s": 5.0}
    s = summarize(table, ["kd:40"])
    assert s[EARLIER]["rho"] == pytest.approx(spearman(earlier, ref)) and s[EARLIER]["cost_s"] == pytest.approx(5.0)
    assert s[EARLIER]["regret_pts"] == pytest.approx(100 * (0.80 - 0.65))  # its top pick (0.4) is the third policy
    del table[0]["earlier_reference"]  # only where every policy has one
    assert EARLIER not in summarize(table, ["kd:40"])


def test_a_run_stopped_early_is_ranked_on_its_finished_policies_and_says_so():
    proxy = [0.1, 0.3, 0.2, 0.4, 0.6, 0.5, 0.7]
    ref = [0.61, 0.72, 0.65, 0.80, 0.83, 0.79, 0.90]
    table = rows(proxy, ref)
    for i, row in enumerate(table):
        row["macs"], row["reference"]["wall_s"] = 100 + i, 30.0
    settings = dict(policies=16, device="sim-cpu", tolerance=0.05, round_to=8, val_size=1000, proxies="kd:40", ref_steps=0,
                    ref_epochs=1.0, ref_batch=128, ref_lr=0.01, test_size=0)  # fmt: skip
    machine = {"command": "c", "cpu": "cpu", "cores": 2, "python": "3", "versions": {}, "date": "d"}
    cell = dict(model="resnet56", budget=0.4, budget_ms=0.7, dense_latency_ms=1.7, dense_accuracy=0.95, dense_macs=1000,
                candidates=[[0.5]] * 16, rows=table)  # fmt: skip
    res = {"settings": settings, "machine": machine, "device_title": "`sim-cpu`", "cells": {"resnet56@0.4": cell}}
    text = markdown(res)
    assert "**Partial: the run stopped after 7 of its 16 policies.**" in text
    assert f"| `kd:40` | **{spearman(proxy, ref):.2f}** |" in text
    cell["rows"] = table[: MIN_PARTIAL - 1]  # too few to rank: no section
    assert "### resnet56" not in markdown(res)
    cell["rows"], cell["summary"] = table, summarize(table, ["kd:40"])  # a finished run: no such line
    assert "Partial" not in markdown(res) and "### resnet56 @ 0.4" in markdown(res)


def test_the_reference_refits_by_least_squares_as_the_export_does_unless_told_not_to(monkeypatch):
    import argparse

    from bench.proxy_fidelity import reference
    from envs.evaluator import PolicyEvaluator
    from hilprune.data import load_dataset

    ev = PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", val_size=100, proxy="bn")
    data = load_dataset("digits")
    real, calls = ev.surgeon.refit, []

    def refit(model, policy, images, seed=0, ridge=None):
        calls.append(len(images))
        return real(model, policy, images, seed=seed, ridge=ridge)

    monkeypatch.setattr(ev.surgeon, "refit", refit)
    ratios = [0.5] * ev.n_groups
    args = argparse.Namespace(ref_refit=16, ref_lr=0.01, ref_batch=32, ref_epochs=1.0, ref_steps=3, seed=0, test_size=100)
    refitted = reference(ev, data, ratios, args)
    assert calls == [16] and refitted["steps"] == 3 and 0.0 <= refitted["test_accuracy"] <= 1.0
    args.ref_refit = 0
    reference(ev, data, ratios, args)
    assert calls == [16]  # no refit the second time
    settings = dict(policies=16, device="sim-cpu", tolerance=0.05, round_to=8, val_size=1000, proxies="kd:40", ref_steps=0,
                    ref_epochs=1.0, ref_batch=128, ref_lr=0.01, test_size=0, ref_refit=64)  # fmt: skip
    machine = {"command": "c", "cpu": "cpu", "cores": 2, "python": "3", "versions": {}, "date": "d"}
    res = {"settings": settings, "machine": machine, "device_title": "`sim-cpu`", "cells": {}}
    assert "Reference: least-squares refit of the pruned layers on 64 train images" in markdown(res)
    settings["ref_refit"] = 0
    assert "Reference: BN recalibration, then" in markdown(res)


def test_a_proxy_may_name_its_refits_ridge_and_each_ridge_refits_on_its_own():
    """``ls/R+kd:40`` scores the search's proxy with another ridge (the export's probe picks 0.001 or
    0.01 where blocks are removed): the evaluator refits with R for it and with its default for the
    plain ``ls+``, and is left as it was."""
    from bench.proxy_fidelity import score_candidate, split_proxy
    from envs.evaluator import PolicyEvaluator

    assert split_proxy("ls/0.001+kd:40") == (64, 0.001, "kd:40")
    assert split_proxy("ls:32+bn:10") == (32, None, "bn:10")
    assert split_proxy("kd:40") == (0, None, "kd:40")
    for bad in ("ls/0+kd:40", "ls/x+kd:40", "ls/-1+bn:10"):
        with pytest.raises(SystemExit, match="ridge after '/' must be a number > 0"):
            split_proxy(bad)

    ev = PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", val_size=100, proxy="bn")
    real, ridges = ev.surgeon.refit, []

    def refit(model, policy, images, seed=0, ridge=None):
        ridges.append(ridge)
        return real(model, policy, images, seed=seed, ridge=ridge)

    ev.surgeon.refit = refit
    out = score_candidate(ev, [0.5] * ev.n_groups, ["bn:10", "ls+bn:10", "ls/0.001+bn:10", "ls/0.001+kd:2"])
    assert set(out["proxies"]) == {"bn:10", "ls+bn:10", "ls/0.001+bn:10", "ls/0.001+kd:2"}
    assert ridges == [None, 0.001]  # one refit per (images, ridge); kd:2 continues from its bn rung
    assert ev.reconstruct_images == 0 and ev.reconstruct_ridge is None


def test_the_reference_ridge_is_the_given_one_or_the_exports_probe_and_shows_in_the_cell():
    import argparse

    from bench.proxy_fidelity import markdown, reference_ridge
    from envs.evaluator import PolicyEvaluator
    from hilprune.data import load_dataset
    from search.ridge import RIDGES

    ev = PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", val_size=100, proxy="bn")
    data = load_dataset("digits")
    ratios = [0.5] * ev.n_groups
    args = argparse.Namespace(ref_refit=16, ref_lr=0.01, seed=0, ref_ridge=0.01)
    assert reference_ridge(ev, data, ratios, args) == {"ridge": 0.01}
    args.ref_ridge = None  # the surgery's default
    from hilprune.surgery.reconstruct import DEFAULT_RIDGE

    assert reference_ridge(ev, data, ratios, args) == {"ridge": DEFAULT_RIDGE}
    args.ref_ridge = "auto"
    chosen = reference_ridge(ev, data, ratios, args)
    assert chosen["ridge"] in RIDGES and set(chosen["probe"]["scores"]) == {f"{r:g}" for r in RIDGES}
    assert chosen["probe"]["scores"][f"{chosen['ridge']:g}"] == max(chosen["probe"]["scores"].values())

    table = rows([0.1 * i for i in range(8)], [0.1 * i for i in range(8)])
    for r, ridge in zip(table, [0.001] * 5 + [0.1] * 3):
        r["reference_ridge"] = {"ridge": ridge, "probe": {}}
        r["reference"] |= {"wall_s": 1.0}
        r["macs"] = 500
    settings = dict(policies=8, device="sim-cpu", tolerance=0.05, round_to=8, val_size=1000, proxies="kd:40", ref_steps=150,
                    ref_epochs=1.0, ref_batch=64, ref_lr=0.01, test_size=0, ref_refit=64, ref_ridge="auto")  # fmt: skip
    machine = {"command": "c", "cpu": "cpu", "cores": 2, "python": "3", "versions": {}, "date": "d"}
    cell = dict(model="resnet20", budget=0.3, budget_ms=0.2, dense_latency_ms=0.6, dense_accuracy=0.93, dense_macs=1000,
                candidates=[[0.5]] * 8, rows=table, removed_blocks=["layer1.2", "layer2.2", "layer3.1"])  # fmt: skip
    text = markdown({"settings": settings, "machine": machine, "device_title": "`sim-cpu`", "cells": {"r": cell}})
    assert "### resnet20 @ 0.3, 3 blocks removed (" in text
    assert "layer1.2, layer2.2, layer3.1" in text and "0.001 for 5, 0.1 for 3 of 8 policies" in text
    assert "the ridge `hilprune export`'s probe picks for that candidate" in text


def test_with_blocks_removed_the_reference_distils_from_the_model_as_given(monkeypatch):
    """The export's teacher is the dense model with all its blocks; the surgeon's `dense` (the
    model without the removed blocks, never fine-tuned) would teach the candidates its own errors."""
    import argparse
    import types

    import hilprune.train.distill
    import search.ridge
    from bench.proxy_fidelity import reference, reference_ridge
    from envs.evaluator import PolicyEvaluator
    from hilprune.data import load_dataset

    ev = PolicyEvaluator("resnet20", dataset="digits", device="sim-cpu", proxy="bn:2", val_size=120, lock=False, remove_blocks=1)
    assert ev.surgeon.full is not ev.surgeon.dense
    teachers = []

    def finetune_kd(model, teacher, data, **kw):
        teachers.append(teacher)
        return types.SimpleNamespace(steps=0)

    def settle_ridge(refitted, teacher, data, **kw):
        teachers.append(teacher)
        return 0.01, None

    monkeypatch.setattr(hilprune.train.distill, "finetune_kd", finetune_kd)
    monkeypatch.setattr(search.ridge, "settle_ridge", settle_ridge)
    args = argparse.Namespace(ref_refit=16, ref_lr=0.01, ref_batch=32, ref_epochs=1.0, ref_steps=3, seed=0, test_size=50,
                              ref_ridge="auto")  # fmt: skip
    ratios = [0.25] * ev.n_groups
    assert reference_ridge(ev, load_dataset("digits"), ratios, args)["ridge"] == 0.01
    reference(ev, load_dataset("digits"), ratios, args, ridge=0.01)
    assert len(teachers) == 2 and all(t is ev.surgeon.full for t in teachers)
