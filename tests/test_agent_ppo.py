"""PPO (and SAC/DDPG) try-and-learn on digits-cnn / digits / ort-cpu-1t: every episode becomes a
trial, the search stops exactly at its evaluation count, checkpoints resume, the trained agent's
deterministic policy is recorded and meets the budget."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

pytest.importorskip("envs.evaluator", reason="envs.evaluator (PolicyEvaluator) is not available")

from helpers import reachable_budget_ms  # noqa: E402

from agent.callbacks import episode_ratios, find_checkpoint  # noqa: E402
from agent.ppo import PPOAgent, QuotaEvaluator  # noqa: E402
from search.agents import make_agent  # noqa: E402
from search.context import SearchContext  # noqa: E402

BUDGET = 0.65  # of dense, or more where a loaded CPU lifts the floor (helpers.reachable_budget_ms)


@pytest.fixture(scope="module")
def evaluator():  # noqa: ANN201
    from envs.evaluator import PolicyEvaluator

    return PolicyEvaluator("digits-cnn", dataset="digits", device="ort-cpu-1t", latency_source="lut", val_size=360)


def make_ctx(ev, out: Path, budgets: list[float] | None = None) -> SearchContext:  # noqa: ANN001
    budgets = budgets or [reachable_budget_ms(ev, BUDGET)]
    return SearchContext(ev, budgets, storage=str(out / "study.journal"), job_name="t", out_dir=out, seed=0)


def trials(ctx: SearchContext, name: str) -> list[optuna.trial.FrozenTrial]:
    return ctx.study(name).get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def test_ppo_search_records_episodes_and_a_deterministic_policy(evaluator, tmp_path: Path) -> None:  # noqa: ANN001
    ctx = make_ctx(evaluator, tmp_path)
    agent = make_agent("ppo", checkpoint_every=4)
    n = 10  # 9 training episodes on 4 envs: the last round stops mid-way
    agent.run(ctx, n)
    ts = trials(ctx, "ppo")
    assert len(ts) == n == ctx.finished("ppo")
    budget = ctx.budgets_ms[0]
    assert all(t.values[1] <= budget * (1 + 1e-9) for t in ts)  # constrained reward: the env clips to the budget
    det = [t for t in ts if t.user_attrs.get("deterministic")]
    assert len(det) == 1 and det[0].number == ts[-1].number
    assert all(t.user_attrs["agent"] == "ppo" and t.user_attrs["algo"] == "ppo" for t in ts)
    assert [t.user_attrs["episode"] for t in ts[:-1]] == list(range(n - 1))
    assert ts[0].distributions == {k: v for k, v in ctx.distributions().items()}
    summary = json.loads((tmp_path / "agents" / "ppo" / "summary.json").read_text())
    assert summary["deterministic"][0]["trial"] == det[0].number and summary["deterministic"][0]["within_budget"]
    assert summary["best"] and max(summary["best"].values(), key=lambda b: b["accuracy"])["accuracy"] >= det[0].values[0]
    assert list((tmp_path / "agents" / "ppo" / "tb").rglob("events.out.tfevents*"))


def test_ppo_checkpoint_resume(evaluator, tmp_path: Path) -> None:  # noqa: ANN001
    ctx = make_ctx(evaluator, tmp_path)
    save = tmp_path / "agents" / "ppo"
    PPOAgent(checkpoint_every=3, tensorboard=False).run(ctx, 7)
    first = find_checkpoint(save)
    assert first and first["episodes"] == 6 and Path(first["vecnormalize"]).is_file()
    assert len(list(save.glob("model_*.zip"))) == 2  # the newest two are kept
    agent = PPOAgent(checkpoint_every=3, tensorboard=False)
    agent.run(ctx, 7)  # a resumed job: 7 more evaluations, from the checkpoint
    second = find_checkpoint(save)
    assert second["episodes"] == 12 and second["num_timesteps"] > first["num_timesteps"]
    assert agent.model.get_vec_normalize_env().obs_rms.count > 6 * len(evaluator.groups)  # statistics were carried over
    assert len(trials(ctx, "ppo")) == 14
    assert sum(1 for t in trials(ctx, "ppo") if t.user_attrs.get("deterministic")) == 2


@pytest.mark.parametrize("algo", ["sac", "ddpg"])
def test_off_policy_algorithms_share_the_code_path(evaluator, tmp_path: Path, algo: str) -> None:  # noqa: ANN001
    ctx = make_ctx(evaluator, tmp_path)
    name = "sac" if algo == "sac" else "ppo"
    agent = make_agent(name, algo=algo, tensorboard=False, warmup_episodes=2)
    agent.run(ctx, 5)
    ts = trials(ctx, name)
    assert len(ts) == 5 and {t.user_attrs["algo"] for t in ts} == {algo}
    assert find_checkpoint(tmp_path / "agents" / name)["algo"] == algo


def test_two_budgets_one_policy(evaluator, tmp_path: Path) -> None:  # noqa: ANN001
    budgets = [reachable_budget_ms(evaluator, 0.4, 0.2), reachable_budget_ms(evaluator, 0.7, 0.7)]
    ctx = make_ctx(evaluator, tmp_path, budgets)
    make_agent("ppo", n_envs=2, tensorboard=False).run(ctx, 6)  # 4 episodes (2 per budget) + 2 deterministic
    ts = trials(ctx, "ppo")
    assert len(ts) == 6
    assert sorted(t.user_attrs["budget_ms"] for t in ts if t.user_attrs["deterministic"]) == pytest.approx(budgets)
    for t in ts:
        assert t.values[1] <= t.user_attrs["budget_ms"] * (1 + 1e-9)


def test_quota_evaluator_and_episode_info(evaluator) -> None:  # noqa: ANN001
    q = QuotaEvaluator(evaluator, 1)
    names = [g.name for g in evaluator.groups]
    real = q.evaluate([0.5] * len(names))
    over = q.evaluate([0.25] * len(names))
    assert real.accuracy > 0.5 and over.accuracy == 0.0 and q.calls == 2
    assert q.groups is evaluator.groups  # everything else passes through
    assert episode_ratios({"policy": real.policy.to_dict()}) == pytest.approx({n: 0.5 for n in names})
    assert episode_ratios({"ratios": {"a": 0.1}}) == {"a": 0.1}
    assert episode_ratios({"policy": json.dumps({"a": 0.2})}) == {"a": 0.2}


def test_ppo_repeats_under_a_seed(evaluator, tmp_path: Path) -> None:  # noqa: ANN001
    runs = []
    for k in range(2):
        ctx = make_ctx(evaluator, tmp_path / str(k))
        make_agent("ppo", tensorboard=False, episodes_per_rollout=1).run(ctx, 10)  # one PPO update happens in between
        runs.append([t.params for t in trials(ctx, "ppo")])
    assert runs[0] == runs[1]
