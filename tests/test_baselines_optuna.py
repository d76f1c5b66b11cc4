"""Optuna baselines (TPE, NSGA-II) and AutoPrune on digits-cnn / digits / sim-cpu: each records
its trials in the shared form, finds a policy within the budget and repeats itself under a seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

pytest.importorskip("envs.evaluator", reason="envs.evaluator (PolicyEvaluator) is not available")

from search.agents import make_agent  # noqa: E402
from search.agents.autoprune import ChannelGates, channel_costs, fit_to_budget, gate_sites, gates_to_ratios  # noqa: E402
from search.agents.tpe import CONSTRAINT, HAS_SET_CONSTRAINT, snap_up, uniform_for_budget  # noqa: E402
from search.context import SearchContext  # noqa: E402

BUDGET = 0.65  # of dense (the simulated device's latencies are the same on every machine)


@pytest.fixture(scope="module")
def evaluator():  # noqa: ANN201
    from envs.evaluator import PolicyEvaluator

    return PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", latency_source="lut", val_size=360, proxy="bn")


def make_ctx(ev, out: Path, seed: int = 0, worker_index: int = 0, storage: str | None = None) -> SearchContext:  # noqa: ANN001
    return SearchContext(
        ev,
        [ev.check_budget(BUDGET)],
        storage=storage or str(out / "study.journal"),
        job_name="t",
        out_dir=out,
        seed=seed + worker_index,
        worker_index=worker_index,
    )


def run_agent(ev, out: Path, name: str, n: int, **options) -> tuple[SearchContext, list[optuna.trial.FrozenTrial]]:  # noqa: ANN001, ANN003
    out.mkdir(parents=True, exist_ok=True)
    ctx = make_ctx(ev, out)
    make_agent(name, **options).run(ctx, n)
    return ctx, ctx.study(name).get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def check_trials(ctx: SearchContext, name: str, trials: list[optuna.trial.FrozenTrial], n: int) -> None:
    assert len(trials) == n == ctx.finished(name)
    dists = ctx.distributions()
    for t in trials:
        assert set(t.params) == set(ctx.group_names)
        for g, v in t.params.items():
            assert t.distributions[g] == dists[g]
            assert abs(v / ctx.grid_step - round(v / ctx.grid_step)) < 1e-6  # on the grid
        assert t.user_attrs["agent"] == name and t.user_attrs["policy"] and t.user_attrs["latency_source"] == "lut"
        assert len(t.values) == 2
    budget = ctx.budgets_ms[0]
    feasible = [t for t in trials if t.values[1] <= budget]
    assert feasible, "no trial within the budget"
    best = max(feasible, key=lambda t: t.values[0])
    assert best.values[0] > 0.5  # a real model, not a collapsed one


@pytest.mark.parametrize("name", ["tpe", "nsga2"])
def test_optuna_baseline_meets_budget_and_repeats(evaluator, tmp_path: Path, name: str) -> None:  # noqa: ANN001
    n = 12
    ctx, first = run_agent(evaluator, tmp_path / "a", name, n)
    check_trials(ctx, name, first, n)
    budget = ctx.budgets_ms[0]
    for t in first:  # the budget is the trial's constraint (Optuna 5 API; a user attr on Optuna 4)
        value = t.constraints[CONSTRAINT] if HAS_SET_CONSTRAINT else t.user_attrs["constraints"][0]
        assert value == pytest.approx(t.values[1] - budget)
        assert t.user_attrs["constraint_budget_ms"] == pytest.approx(budget)
    # warm start: the uniform policy that meets the budget comes first
    r = uniform_for_budget(ctx, budget)
    assert r is not None and set(first[0].params.values()) == {r}
    _, second = run_agent(evaluator, tmp_path / "b", name, n)
    assert [t.params for t in first] == [t.params for t in second]


def test_tpe_workers_share_one_study(evaluator, tmp_path: Path) -> None:  # noqa: ANN001
    storage = str(tmp_path / "study.journal")
    a = make_ctx(evaluator, tmp_path, worker_index=0, storage=storage)
    b = make_ctx(evaluator, tmp_path, worker_index=1, storage=storage)
    make_agent("tpe").run(a, 3)
    make_agent("tpe").run(b, 3)  # a second worker: no second warm start, continues the same study
    trials = a.study("tpe").get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 6 == b.finished("tpe")
    assert sum(1 for t in trials if t.user_attrs.get("warm_start")) == 1


def test_autoprune_meets_budget_and_repeats(evaluator, tmp_path: Path) -> None:  # noqa: ANN001
    n = 4
    opts = dict(steps_range=(20, 30), n_startup_trials=2, train_samples=512)
    ctx, first = run_agent(evaluator, tmp_path / "a", "autoprune", n, **opts)
    check_trials(ctx, "autoprune", first, n)
    for t in first:
        for k in ("lam", "tau", "lr", "steps", "budget_ms", "fitted", "open_gates"):
            assert f"autoprune_{k}" in t.user_attrs
        assert t.values[1] <= ctx.budgets_ms[0] * (1 + 1e-9)  # fitted to the budget by the LUT
    _, second = run_agent(evaluator, tmp_path / "b", "autoprune", n, **opts)
    assert [t.params for t in first] == [t.params for t in second]
    assert [t.user_attrs["autoprune_lam"] for t in first] == [t.user_attrs["autoprune_lam"] for t in second]


@pytest.mark.parametrize("model_name", ["digits-cnn", "resnet20", "mobilenetv2"])
def test_closed_gates_match_pruning(model_name: str) -> None:
    """Closing a group's gates on the channels the surgeon removes gives the pruned model's output,
    also for coupled (residual) groups: the gates sit where pruning cuts."""
    from hilprune.models import resolve_model
    from hilprune.surgery import Surgeon

    torch.manual_seed(0)
    spec = resolve_model(model_name, "digits" if model_name == "digits-cnn" else "cifar10", use_shipped=False)
    model = spec.build(with_weights=False).eval()
    for m in model.modules():  # non-trivial BN statistics, so a gate before a BN would not cancel
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    surgeon = Surgeon(model, spec.input_shape, spec.identity())
    groups = surgeon.groups
    example = torch.zeros(1, *spec.input_shape)
    sites = gate_sites(model, groups, example)
    assert {s.group for s in sites} == {g.name for g in groups}
    ratios = {g.name: 0.5 if i % 2 == 0 else 0.25 for i, g in enumerate(groups)}
    policy = surgeon.policy(ratios)
    pruned = surgeon.apply(policy).model.eval()
    gates = ChannelGates(model, groups, example, init=1.0, sites=sites)
    gates.tau = 0.5
    with torch.no_grad():
        for g, gr in zip(groups, policy.groups):
            n_cut = gr.channels_before - gr.channels_after
            gates.gates[g.name.replace(".", "__")][surgeon.ranking[g.name][:n_cut]] = 0.0
    x = torch.randn(4, *spec.input_shape)
    gates.attach()
    try:
        with torch.no_grad():
            gated = model(x)
    finally:
        gates.detach()
    with torch.no_grad():
        assert torch.allclose(gated, pruned(x), atol=1e-4)
        assert not torch.allclose(model(x), pruned(x), atol=1e-4)  # the hooks are gone again


def test_gate_ratios_and_budget_fit(evaluator) -> None:  # noqa: ANN001
    groups = evaluator.groups
    costs = channel_costs(evaluator, groups)
    assert sum(costs[g.name] * g.channels for g in groups) == pytest.approx(1.0)
    assert all(c > 0 for c in costs.values())
    rng = np.random.default_rng(0)
    values = {g.name: rng.uniform(0, 1, g.channels) for g in groups}
    ratios = gates_to_ratios(values, groups, tau=0.3, max_ratio=0.9, grid_step=0.05)
    for g in groups:
        closed = (values[g.name] <= 0.3).sum() / g.channels
        assert ratios[g.name] == snap_up(closed, 0.05, 0.9) >= closed - 1e-9
    budget = evaluator.check_budget(0.5).ms
    fitted, changed = fit_to_budget(values, groups, {g.name: 0.0 for g in groups}, evaluator.predict_latency, budget, 0.9, 0.05)
    assert changed and evaluator.predict_latency(fitted) <= budget
    assert snap_up(0.3333, 0.05, 0.9) == 0.35 and snap_up(0.35, 0.05, 0.9) == 0.35 and snap_up(0.97, 0.05, 0.93) == 0.9
