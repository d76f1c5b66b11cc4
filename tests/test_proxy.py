"""The accuracy proxy's ladder on digits-cnn / digits / sim-cpu: BN and distillation rungs, the
cache that keeps a policy's highest fidelity, seeded repeats, and successive halving stopping a
weak policy at the cheap rung."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import torch

from envs.errors import EnvConfigError
from envs.evaluator import PolicyEvaluator
from envs.fidelity import Fidelity, canonical_proxy, parse_fidelity, parse_ladder, split_reconstruct
from hilprune.train.distill import KDConfig, SharedBatches, distill, kd_loss

POLICY = [0.5, 0.6, 0.5, 0.7]


@pytest.fixture(scope="module")
def ev() -> PolicyEvaluator:
    return PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", val_size=300, proxy="bn:10,kd:10")


def test_proxy_strings() -> None:
    assert canonical_proxy("kd:40") == "bn:10,kd:40"
    assert canonical_proxy("bn") == "bn:10"
    assert parse_ladder("bn:40,kd:20") == ([Fidelity("bn", 40), Fidelity("kd", 20)], 40)
    assert parse_ladder("kd:80, kd:20", bn_batches=4)[0] == [Fidelity("bn", 4), Fidelity("kd", 20), Fidelity("kd", 80)]
    assert parse_fidelity("bn", 7) == Fidelity("bn", 7) and Fidelity("bn", 500) < Fidelity("kd", 1) < Fidelity("kd", 2)
    for bad in ("", "kd", "kd:0", "ft:10", "bn:10,bn:20", "kd:5,kd:5", "kd:-1", "ls,ls:8,kd:4", "ls:0,bn"):
        with pytest.raises(EnvConfigError):
            parse_ladder(bad)
    assert canonical_proxy("ls,kd:40") == "ls:64,bn:10,kd:40" and canonical_proxy("ls:16") == "ls:16,bn:10"
    assert split_reconstruct("ls:32,bn:4,kd:8") == (32, "bn:4,kd:8") and split_reconstruct("kd:8") == (0, "kd:8")
    assert parse_ladder("ls:32,kd:8")[0] == [Fidelity("bn", 10), Fidelity("kd", 8)]  # ls is not a rung


def test_least_squares_reconstruction_refits_the_layers_that_lost_inputs(ev: PolicyEvaluator) -> None:
    """Each refitted layer reproduces the dense layer's kept outputs on the images far more
    closely than the pruned layer did, and a proxy with ``ls`` scores the refitted model."""
    from hilprune.surgery.reconstruct import reconstruct, reconstructable

    policy = ev.policy(POLICY)
    dense = ev.surgeon.dense
    images = ev.train.x[:64]
    removed = ev.surgeon.removed_out_channels(policy)

    def errors(model: torch.nn.Module) -> dict[str, float]:
        got, want = {}, {}
        mods, dmods = dict(model.named_modules()), dict(dense.named_modules())
        hooks = [mods[n].register_forward_hook(lambda m, i, o, n=n: got.__setitem__(n, o)) for n in names]
        hooks += [dmods[n].register_forward_hook(lambda m, i, o, n=n: want.__setitem__(n, o)) for n in names]
        with torch.no_grad():
            model.eval()(images), dense(images)
        for h in hooks:
            h.remove()
        out = {}
        for n in names:
            keep = [o for o in range(want[n].shape[1]) if o not in removed.get(n, set())]
            target = want[n][:, keep]
            out[n] = float(((got[n] - target) ** 2).mean() / (target**2).mean())
        return out

    pruned = ev.surgeon.apply(policy, count=False).model
    names = reconstructable(pruned, dense)
    assert names and all(n not in removed or len(removed[n]) for n in names)
    before = errors(pruned)
    assert reconstruct(pruned, dense, images, removed) == names
    after = errors(pruned)
    assert all(after[n] < 0.5 * before[n] for n in names), (before, after)
    # the ridge bounds the refitted weights (an unbounded refit doubled mobilenetv2's weight norm and a
    # fine-tune from it diverged): a stronger ridge never gives a layer larger weights
    loose = ev.surgeon.apply(policy, count=False).model
    reconstruct(loose, dense, images, removed, ridge=1e-6)
    norms = {
        m: {n: float(dict(net.named_modules())[n].weight.detach().norm()) for n in names}
        for m, net in (("loose", loose), ("default", pruned))
    }
    assert all(norms["default"][n] <= norms["loose"][n] + 1e-6 for n in names), norms
    assert sum(norms["default"].values()) < sum(norms["loose"].values())
    assert reconstructable(ev.surgeon.apply(ev.policy([0.0] * len(POLICY)), count=False).model, dense) == []

    refit = PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", val_size=300, proxy="ls:64,bn:10")
    assert refit.proxy == "ls:64,bn:10" and refit.describe()["proxy"] == "ls:64,bn:10"
    res = refit.evaluate(POLICY)
    assert res.fidelity == "bn:10" and res.phases["ls"] > 0 and res.rung_cost_s["bn:10"] >= res.phases["ls"]


def test_kd_loss_is_finite_and_decreases(ev: PolicyEvaluator) -> None:
    student = ev.surgeon.apply(ev.policy(POLICY), count=False).model
    teacher = ev.surgeon.dense
    x, y = ev.train.x[:32], ev.train.y[:32]
    with torch.no_grad():
        same = kd_loss(teacher(x), teacher(x), y, 4.0, 1.0)
    assert float(same) == pytest.approx(0.0, abs=1e-5)  # the soft term vanishes on the teacher itself
    batches = SharedBatches(teacher, ev.train, 64, seed=0)
    state = distill(student, batches, 30, KDConfig(lr=0.02), seed=0)
    assert state.step == 30 and len(state.losses) == 30 and all(math.isfinite(v) for v in state.losses)
    assert sum(state.losses[-5:]) / 5 < 0.8 * sum(state.losses[:5]) / 5
    assert not student.training and len(batches) == 30  # one batch (and teacher pass) per step, kept


def test_each_rung_records_its_fidelity_and_cost(ev: PolicyEvaluator) -> None:
    ev.clear_cache()
    bn = ev.evaluate(POLICY, fidelity="bn")
    assert bn.fidelity == "bn:10" and bn.rungs == [("bn:10", bn.accuracy)] and "kd" not in bn.phases
    assert bn.fidelity_cost_s > 0 and bn.rung_cost_s["bn:10"] > 0
    bn40 = ev.evaluate(POLICY, fidelity="bn:40")  # a dearer BN rung: scored again
    assert not bn40.cached and bn40.fidelity == "bn:40" and [f for f, _ in bn40.rungs] == ["bn:10", "bn:40"]
    kd = ev.evaluate(POLICY)  # the ladder's top
    assert kd.fidelity == "kd:10" and {"kd", "bn_after_kd"} <= set(kd.phases) and 0.0 <= kd.accuracy <= 1.0
    assert [f for f, _ in kd.rungs] == ["bn:10", "bn:40", "kd:10"] and kd.accuracy_at("bn:10") == bn.accuracy
    assert kd.fidelity_cost_s > bn40.fidelity_cost_s > bn.fidelity_cost_s  # every rung's seconds, summed
    assert kd.rung_cost_s["kd:10"] > kd.phases["kd"]  # from scratch: surgery, BN, distillation, its eval
    assert kd.policy.metrics["fidelity"] == "kd:10"
    assert kd.accuracy > bn.accuracy  # ten distillation steps recover a heavily pruned digits-cnn


def test_cache_keeps_the_highest_fidelity(ev: PolicyEvaluator) -> None:
    ev.clear_cache()
    n0 = ev.n_evaluations
    top = ev.evaluate(POLICY, fidelity="kd:10")
    cheap = ev.evaluate(POLICY, fidelity="bn")  # lower request: the higher result, from the cache
    assert cheap.cached and cheap.fidelity == "kd:10" and cheap.accuracy == top.accuracy
    assert cheap.fidelity_cost_s == top.fidelity_cost_s and ev.n_evaluations == n0 + 1
    higher = ev.evaluate(POLICY, fidelity="kd:20")  # higher request: scored again, continuing kd:10
    assert not higher.cached and higher.fidelity == "kd:20" and ev.n_evaluations == n0 + 2
    assert [f for f, _ in higher.rungs] == ["kd:10", "kd:20"] and higher.phases.keys() >= {"kd", "eval"}
    assert "surgery" not in higher.phases  # continued from where kd:10 stopped
    assert ev.evaluate(POLICY, fidelity="kd:10").fidelity == "kd:20"


def test_a_seeded_rung_repeats_exactly(ev: PolicyEvaluator) -> None:
    ev.clear_cache()
    for f in ("bn", "kd:5", "kd:10"):  # climbing: each rung continues the previous
        climbed = ev.evaluate(POLICY, fidelity=f)
    ev.clear_cache()
    direct = ev.evaluate(POLICY, fidelity="kd:10")
    assert direct.accuracy == climbed.accuracy and direct.rungs[-1] == climbed.rungs[-1]
    fresh = PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", val_size=300, proxy="kd:10")
    again = fresh.evaluate(POLICY)
    assert again.accuracy == direct.accuracy and again.fidelity == "kd:10"
    # The caller's random state is untouched by distillation (torch's global generator).
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fresh.evaluate([0.3] * 4)
    assert torch.equal(torch.rand(3), expected)


def test_successive_halving_stops_a_bad_policy_at_the_first_rung(ev: PolicyEvaluator, tmp_path: Path) -> None:
    from search import store
    from search.agents import make_agent
    from search.agents.tpe import uniform_for_budget
    from search.context import SearchContext
    from search.costs import proxy_costs

    ev.clear_cache()
    ctx = SearchContext(ev, [ev.check_budget(0.65)], storage=str(tmp_path / "s.journal"), job_name="t", out_dir=tmp_path)
    good = uniform_for_budget(ctx, ctx.budgets_ms[0])
    assert good is not None and good < 0.8
    agent = make_agent("tpe", warm_start=False, pruner="sh")
    study = ctx.study("tpe")
    study.enqueue_trial({n: good for n in ctx.group_names})  # a sound policy, scored first: promoted
    study.enqueue_trial({n: 0.9 for n in ctx.group_names})  # everything pruned at max_ratio: within budget, weak
    agent.run(ctx, 2)
    first, second = ctx.study("tpe").get_trials()
    assert first.state == optuna.trial.TrialState.COMPLETE and first.user_attrs["fidelity"] == "kd:10"
    assert second.state == optuna.trial.TrialState.PRUNED and second.values is None
    assert second.user_attrs["fidelity"] == "bn:10" and second.user_attrs["pruned_at"] == "bn:10"
    assert second.user_attrs["rungs"][0][1] < first.user_attrs["rungs"][0][1]
    # never distilled: the evaluator holds it at the cheap rung
    weak = ev.evaluate({n: 0.9 for n in ctx.group_names}, fidelity="bn")
    assert weak.cached and weak.fidelity == "bn:10"
    assert ctx.finished("tpe") == 2  # --evals counts policies, pruned ones too
    rung = optuna.load_study(study_name=store.rung_study_name("t", "tpe", "0.65"), storage=ctx.storage)
    assert [t.state for t in rung.trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert set(store.study_names(ctx.storage, "t")) == {"tpe"}  # rung studies are not agents
    assert [r.number for r in ctx.records("tpe")] == [0]  # best policies and fronts: top-rung trials only
    costs = proxy_costs(store.load_costs(ctx.storage, "t"))["tpe"]
    assert costs["pruned"] == 1 and costs["policies"] == 2 and set(costs["by_fidelity"]) == {"bn:10", "kd:10"}


def test_env_scores_its_reward_by_its_proxy(ev: PolicyEvaluator) -> None:
    import gymnasium as gym

    import envs

    env = gym.make(envs.POLICY_PRUNE_ID, evaluator=ev, budget=0.65, proxy="kd:5", disable_env_checker=True)
    env.reset(seed=0)
    _, reward, done, _, info = env.step(env.action_space.sample())
    assert done and info["fidelity"] == "kd:5" and reward == pytest.approx(info["accuracy"])


@pytest.mark.parametrize("pruner", ["sh", "hyperband"])
def test_a_seeded_multi_fidelity_search_repeats(ev: PolicyEvaluator, tmp_path: Path, pruner: str) -> None:
    from search.agents import make_agent
    from search.context import SearchContext

    runs = []
    for name in ("a", "b"):
        ev.clear_cache()  # scored anew, not answered from the first run's cache
        ctx = SearchContext(
            ev, [ev.check_budget(0.65)], storage=str(tmp_path / f"{name}.journal"), job_name="t", out_dir=tmp_path
        )
        make_agent("tpe", pruner=pruner, n_startup_trials=4).run(ctx, 8)
        runs.append([(t.state, t.params, t.values, t.user_attrs["fidelity"]) for t in ctx.study("tpe").get_trials()])
    assert runs[0] == runs[1]
    states = {s for s, *_ in runs[0]}
    assert optuna.trial.TrialState.COMPLETE in states and len(runs[0]) == 8
