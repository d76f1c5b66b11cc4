"""PPO (and SAC/DDPG) try-and-learn on digits-cnn / digits / sim-cpu: every episode becomes a
trial, the search stops exactly at its evaluation count, checkpoints resume, the trained agent's
deterministic policy is recorded and meets the budget."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

pytest.importorskip("envs.evaluator", reason="envs.evaluator (PolicyEvaluator) is not available")

from agent.callbacks import episode_result, find_checkpoint  # noqa: E402
from agent.ppo import PPOAgent, QuotaEvaluator  # noqa: E402
from hilprune.budget import within_budget  # noqa: E402
from search.agents import make_agent  # noqa: E402
from search.context import SearchContext  # noqa: E402

BUDGET = 0.65  # of dense (the simulated device's latencies are the same on every machine)


@pytest.fixture(scope="module")
def evaluator():  # noqa: ANN201
    from envs.evaluator import PolicyEvaluator

    return PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", latency_source="lut", val_size=360, proxy="bn")


def make_ctx(ev, out: Path, budgets: list[float] | None = None) -> SearchContext:  # noqa: ANN001
    resolved = [ev.check_budget(b) for b in (budgets or [BUDGET])]
    return SearchContext(ev, resolved, storage=str(out / "study.journal"), job_name="t", out_dir=out, seed=0)


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
    assert all(within_budget(t.values[1], budget) for t in ts)  # constrained reward: the env clips to the budget
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
    ctx = make_ctx(evaluator, tmp_path, [0.4, 0.7])
    make_agent("ppo", n_envs=2, tensorboard=False).run(ctx, 6)  # 4 episodes (2 per budget) + 2 deterministic
    ts = trials(ctx, "ppo")
    assert len(ts) == 6
    assert sorted(t.user_attrs["budget"] for t in ts if t.user_attrs["deterministic"]) == ["0.4", "0.7"]
    assert sorted(t.user_attrs["budget_ms"] for t in ts if t.user_attrs["deterministic"]) == pytest.approx(ctx.budgets_ms)
    assert {t.user_attrs["budget"] for t in ts if not t.user_attrs["deterministic"]} == {"0.4", "0.7"}
    for t in ts:
        assert within_budget(t.values[1], t.user_attrs["budget_ms"])


def test_quota_evaluator_and_episode_info(evaluator) -> None:  # noqa: ANN001
    q = QuotaEvaluator(evaluator, 1)
    names = [g.name for g in evaluator.groups]
    real = q.evaluate([0.5] * len(names))
    over = q.evaluate([0.25] * len(names))
    assert real.accuracy > 0.5 and over.accuracy == 0.0 and q.calls == 2
    assert q.groups is evaluator.groups  # everything else passes through
    info = {  # what an env in another process reports at an episode's end
        "policy": real.policy.to_dict(),
        "accuracy": real.accuracy,
        "latency_ms": real.latency_ms,
        "lut_latency_ms": real.lut_latency_ms,
        "live_latency_ms": None,
        "live_ratio": None,
        "latency_kind": "lut",
        "macs": real.macs,
        "params": real.params,
    }
    rebuilt = episode_result(info)
    assert (rebuilt.accuracy, rebuilt.latency_ms, rebuilt.key()) == (real.accuracy, real.latency_ms, real.key())
    assert episode_result(info, evaluator).cached  # in-process: the evaluator's cache answers


def test_ppo_repeats_under_a_seed(evaluator, tmp_path: Path) -> None:  # noqa: ANN001
    runs = []
    for k in range(2):
        ctx = make_ctx(evaluator, tmp_path / str(k))
        make_agent("ppo", tensorboard=False, episodes_per_rollout=1).run(ctx, 10)  # one PPO update happens in between
        runs.append([(t.params, t.values) for t in trials(ctx, "ppo")])
    assert runs[0] == runs[1]


def test_uniform_ratio_is_the_least_uniform_pruning_that_meets_the_budget(evaluator) -> None:  # noqa: ANN001
    from agent.ppo import uniform_ratio

    names = [g.name for g in evaluator.groups]
    budget_ms = evaluator.check_budget(BUDGET).ms
    r = uniform_ratio(evaluator, budget_ms, evaluator.max_ratio)
    assert 0 < r < evaluator.max_ratio
    assert within_budget(evaluator.predict_latency({n: r for n in names}), budget_ms)
    assert not within_budget(evaluator.predict_latency({n: max(0.0, r - 0.05) for n in names}), budget_ms)
    assert uniform_ratio(evaluator, evaluator.dense_latency_ms * 2, evaluator.max_ratio) == 0.0  # unpruned meets it


def test_ppo_starts_at_the_uniform_policy_not_the_middle_of_the_range(evaluator, tmp_path: Path) -> None:  # noqa: ANN001
    """Where the model meets the budget unpruned (INT8 alone often does), PPO's first episodes prune
    little when it starts at the uniform policy, and about max_ratio / 2 when it starts in the middle."""
    mean_ratio = {}
    for start in ("uniform", "center"):
        ctx = make_ctx(evaluator, tmp_path / start, [1.0])
        agent = make_agent("ppo", start=start, checkpoint_every=100, tensorboard=False, deterministic_eval=False)
        agent.run(ctx, 8)
        ratios = [v for t in trials(ctx, "ppo") for v in t.params.values()]
        mean_ratio[start] = sum(ratios) / len(ratios)
        summary = json.loads((tmp_path / start / "agents" / "ppo" / "summary.json").read_text())
        assert summary["start"]["mode"] == start
        assert summary["start"]["ratio"] == (0.0 if start == "uniform" else None)  # "center" computes none
    assert mean_ratio["uniform"] < 0.25 * evaluator.max_ratio < 0.35 * evaluator.max_ratio < mean_ratio["center"]


def test_ppo_refuses_an_unknown_start() -> None:
    from hilprune.errors import HilpruneError

    with pytest.raises(HilpruneError, match="start must be one of uniform, center"):
        PPOAgent(start="dense")
