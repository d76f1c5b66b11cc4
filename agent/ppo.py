"""Try-and-learn search with stable-baselines3: PPO (default), SAC or AMC-style DDPG on `hilprune/LayerPrune-v0`.

One episode = one step per prunable group (forward order) = one policy = one evaluation = one
trial. The reward comes at the last step only (the env's `reward`, "constrained" by default: the
env raises actions AMC-style so every episode meets the budget by the LUT, and the reward is the
accuracy), so:

- PPO: `gamma=1` (no discount inside a fixed, short horizon), `gae_lambda=0.95`, `n_steps` a
  multiple of the episode length (whole episodes per rollout), a small batch (a couple of
  episodes), a small entropy bonus and a narrow initial action std (AMC's sigma 0.5), its first
  actions centred on the uniform policy that meets the budget (`start="uniform"`; `"center"`:
  the middle of the action range, ratio max_ratio / 2, as SB3 initializes it). Centred on the
  middle, PPO's 60-episode searches never came near the unpruned corner: with `--precision int8`
  at resnet20@0.5, where INT8 alone meets the budget at full widths (2.16x, -0.06 points), PPO's
  picks pruned 9 to 12 of 12 groups by 12-75% and lost 1.0-1.5 points after the same half-epoch
  fine-tune; started at the uniform policy, they pruned 3 to 5 groups and lost 0.26-0.40, and in
  fp32 the two starts did alike (docs/benchmarks.md, "ppo_start_resnet20");
- DDPG (AMC): `gamma=1`, random warm-up episodes, Gaussian action noise sigma 0.5 decayed per
  episode after the warm-up; SAC: the same set-up with its own entropy-driven exploration;
- observations are normalized by `VecNormalize` (observations only; the reward is already on an
  accuracy scale), whose statistics are saved with every checkpoint.

Environments: `n_envs` copies in one process (`DummyVecEnv`) sharing the context's
`PolicyEvaluator` (one model, one cache, one LUT; every episode recorded as it ends). With
several budgets, env i is given budget i mod len(budgets) (the observation holds the budget, so
one policy learns them all). `vec_env="subproc"` runs envs in worker processes instead (each
builds its own evaluator from the job; needs `ctx.job`).

Budget of evaluations: `run(ctx, n_evals)` makes exactly `n_evals` evaluations: `n_evals - k`
training episodes (training stops the moment the last one is recorded; an episode finishing past
the quota on the same step is neither evaluated nor recorded), then the trained agent's
*deterministic* policy, once per budget (k = number of budgets, at most n_evals), recorded with
user attr `deterministic=True` and reported beside the best trial found.

Checkpoints: every `checkpoint_every` recorded episodes and at the end, into
`<out>/agents/<name>/` (model zip, VecNormalize pickle, off-policy replay buffer, `latest.json`).
A later `run` on the same job resumes from the newest one. TensorBoard logs go to
`<out>/agents/<name>/tb` (`tensorboard --logdir ...`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hilprune.budget import Budget, smallest_ratio

from .callbacks import (
    CheckpointCallback,
    NoiseDecayCallback,
    RecordTrialsCallback,
    TensorBoardCallback,
    episode_result,
    find_checkpoint,
)

if TYPE_CHECKING:
    from search.context import SearchContext

log = logging.getLogger(__name__)

ALGOS = ("ppo", "sac", "ddpg", "td3")
OFF_POLICY = ("sac", "ddpg", "td3")
STARTS = ("uniform", "center")  # where a new PPO policy's first ratio actions are centred (see the module docstring)


def _algo_class(algo: str) -> Any:
    import stable_baselines3 as sb3

    return {"ppo": sb3.PPO, "sac": sb3.SAC, "ddpg": sb3.DDPG, "td3": sb3.TD3}[algo]


# --------------------------------------------------------------------------------------------
# the evaluator the training envs see
# --------------------------------------------------------------------------------------------
class QuotaEvaluator:
    """The shared evaluator, allowing only `quota` more evaluations.

    Past the quota (parallel envs finishing on the step that fills it) `evaluate` returns a
    placeholder (accuracy 0, LUT latency) without surgery; training stops at that very step, so
    the placeholder is never learned from nor recorded.
    """

    def __init__(self, evaluator: Any, quota: int) -> None:
        self._ev = evaluator
        self.quota = int(quota)
        self.calls = 0

    def __getattr__(self, name: str) -> Any:  # everything but `evaluate` is the shared evaluator's
        return getattr(self._ev, name)

    def __deepcopy__(self, memo: dict[int, Any]) -> QuotaEvaluator:  # a shared service, as the evaluator is
        return self

    def evaluate(self, ratios: Any, **kw: Any) -> Any:
        self.calls += 1
        if self.calls <= self.quota:
            return self._ev.evaluate(ratios, **kw)
        from envs.evaluator import EvalResult

        policy = self._ev.policy(ratios, kw.get("precision"))
        lat = float(self._ev.predict_latency(policy.requested()))
        return EvalResult(
            policy=policy, accuracy=0.0, latency_ms=lat, lut_latency_ms=lat / self._ev.lut_scale, live_latency_ms=None,
            macs=0, params=0, cached=True,
        )  # fmt: skip


# --------------------------------------------------------------------------------------------
# env factories
# --------------------------------------------------------------------------------------------
def uniform_ratio(evaluator: Any, budget_ms: float, high: float, tol: float = 1e-3) -> float:
    """The smallest ratio, the same for every group, whose predicted latency (the evaluator's LUT,
    as the environment clips with) meets the budget; 0 when the model meets it unpruned, `high`
    when nothing does."""
    names = [g.name for g in evaluator.groups]
    return smallest_ratio(lambda r: float(evaluator.predict_latency({n: r for n in names})), budget_ms, 0.0, high, tol=tol)[0]


def _make_env(evaluator: Any, budget: Budget, reward: str, grid_step: float, env_kwargs: Mapping[str, Any]) -> Any:
    import gymnasium as gym
    from stable_baselines3.common.monitor import Monitor

    import envs  # noqa: F401  (registers the ids)

    env = gym.make(
        envs.LAYER_PRUNE_ID,
        evaluator=evaluator,
        budget=budget,
        reward=reward,
        grid_step=grid_step,
        disable_env_checker=True,
        **dict(env_kwargs),
    )
    return Monitor(env)


def _make_subproc_env(
    factory: Callable[[], Any], reference_ms: float, budget: Budget, reward: str, grid_step: float, env_kwargs: Mapping[str, Any]
) -> Any:
    """Runs in a worker process: its own evaluator, built by the search's factory, in the job's
    dense reference frame."""
    import torch

    torch.set_num_threads(1)
    evaluator = factory()
    evaluator.use_reference(reference_ms)
    return _make_env(evaluator, budget, reward, grid_step, env_kwargs)


# --------------------------------------------------------------------------------------------
# the agent
# --------------------------------------------------------------------------------------------
class PPOAgent:
    """Try-and-learn pruning with an SB3 agent; see the module docstring.

    :param algo: "ppo" (default), "sac", "ddpg" (AMC) or "td3"
    :param n_envs: envs stepped together (default: 4 for PPO, 1 off-policy; rounded up to a multiple of the budgets)
    :param vec_env: "dummy" (in-process, shared evaluator) or "subproc"
    :param reward: the env's reward (default: the job's, i.e. ``ctx.reward_name``)
    :param episodes_per_rollout: PPO episodes per env per update (n_steps = this x groups)
    :param batch_episodes: PPO minibatch size in episodes (batch_size = this x groups)
    :param warmup_episodes: off-policy random episodes before learning (default: a fifth, 1..100)
    :param checkpoint_every: recorded episodes between checkpoints
    :param resume: continue from the newest checkpoint in ``<out>/agents/<name>/``
    :param deterministic_eval: evaluate the trained deterministic policy at the end (one per budget)
    :param start: "uniform" (a new PPO policy's ratio actions centred on the uniform policy that meets
        the budget) or "center" (the middle of the ratio range, SB3's initialization)
    :param algo_kwargs: overrides for the SB3 constructor (e.g. ``{"learning_rate": 1e-3}``)
    :param env_kwargs: extra keyword arguments for the env (e.g. ``{"accepted_drop": 0.02}``)
    """

    name = "ppo"
    supports_workers = False
    default_algo = "ppo"

    def __init__(
        self,
        algo: str | None = None,
        n_envs: int | None = None,
        vec_env: str = "dummy",
        reward: str | None = None,
        episodes_per_rollout: int = 2,
        batch_episodes: int = 2,
        n_epochs: int = 10,
        learning_rate: float | None = None,
        gamma: float = 1.0,
        gae_lambda: float = 0.95,
        ent_coef: float = 0.01,
        clip_range: float = 0.2,
        net_arch: Sequence[int] = (64, 64),
        log_std_init: float = -0.7,
        warmup_episodes: int | None = None,
        noise_sigma: float = 0.5,
        noise_decay: float = 0.95,
        checkpoint_every: int = 20,
        keep_checkpoints: int = 2,
        tensorboard: bool = True,
        resume: bool = True,
        deterministic_eval: bool = True,
        start: str = "uniform",
        algo_kwargs: Mapping[str, Any] | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        verbose: int = 0,
    ) -> None:
        from hilprune.errors import HilpruneError

        self.algo = (algo or self.default_algo).lower()
        if self.algo not in ALGOS:
            raise HilpruneError(f"unknown algo {algo!r}; choose one of {', '.join(ALGOS)}")
        if start not in STARTS:
            raise HilpruneError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
        if vec_env not in ("dummy", "subproc"):
            raise HilpruneError(f"vec_env must be 'dummy' or 'subproc', got {vec_env!r}")
        self.n_envs = n_envs
        self.vec_env = vec_env
        self.reward = reward
        self.episodes_per_rollout = max(1, int(episodes_per_rollout))
        self.batch_episodes = max(1, int(batch_episodes))
        self.n_epochs = int(n_epochs)
        self.learning_rate = learning_rate
        self.gamma = float(gamma)
        self.gae_lambda = float(gae_lambda)
        self.ent_coef = float(ent_coef)
        self.clip_range = float(clip_range)
        self.net_arch = [int(n) for n in net_arch]
        self.log_std_init = float(log_std_init)
        self.warmup_episodes = warmup_episodes
        self.noise_sigma = float(noise_sigma)
        self.noise_decay = float(noise_decay)
        self.checkpoint_every = int(checkpoint_every)
        self.keep_checkpoints = int(keep_checkpoints)
        self.tensorboard = bool(tensorboard)
        self.resume = bool(resume)
        self.deterministic_eval = bool(deterministic_eval)
        self.start = start
        self.start_ratio: float | None = None
        self.algo_kwargs = dict(algo_kwargs or {})
        self.env_kwargs = dict(env_kwargs or {})
        self.verbose = int(verbose)
        self.summary: dict[str, Any] = {}
        self.model: Any = None

    # -- paths and settings ------------------------------------------------------------------------
    def save_dir(self, ctx: SearchContext) -> Path:
        return Path(ctx.out_dir) / "agents" / self.name

    def _n_envs(self, n_budgets: int) -> int:
        n = self.n_envs if self.n_envs else (1 if self.algo in OFF_POLICY else 4)
        n = max(1, int(n))
        if n_budgets > 1 and n % n_budgets:
            n += n_budgets - n % n_budgets  # every budget gets the same number of envs
        return n

    def _reward_name(self, ctx: SearchContext) -> str:
        return self.reward or ctx.reward_name

    def hyperparameters(self, n_groups: int, n_envs: int, quota: int) -> dict[str, Any]:
        """The SB3 constructor arguments for an episode of `n_groups` steps."""
        L = max(1, int(n_groups))
        if self.algo == "ppo":
            n_steps = L * self.episodes_per_rollout
            batch = max(2, min(n_steps * n_envs, L * self.batch_episodes))
            kw: dict[str, Any] = dict(
                n_steps=n_steps,
                batch_size=batch,
                n_epochs=self.n_epochs,
                gamma=self.gamma,
                gae_lambda=self.gae_lambda,
                ent_coef=self.ent_coef,
                clip_range=self.clip_range,
                learning_rate=self.learning_rate or 3e-4,
                policy_kwargs=dict(net_arch=list(self.net_arch), log_std_init=self.log_std_init),
            )
        else:
            warm = self.warmup_episodes if self.warmup_episodes is not None else min(100, max(1, quota // 5))
            kw = dict(
                learning_rate=self.learning_rate or 1e-3,
                buffer_size=max(1000, 200 * L),
                learning_starts=int(warm) * L,
                # train after every L env steps (one episode per env, as AMC does), one gradient step per transition
                batch_size=64,
                tau=0.01,
                gamma=self.gamma,
                train_freq=(L, "step"),
                gradient_steps=-1,
                policy_kwargs=dict(net_arch=list(self.net_arch)),
            )
        kw.update(self.algo_kwargs)
        return kw

    # -- building ------------------------------------------------------------------------------------
    def _venv(self, ctx: SearchContext, evaluator: Any, budgets: list[Budget], n_envs: int) -> Any:
        from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

        reward = self._reward_name(ctx)
        if self.vec_env == "subproc":
            job = ctx.job
            if job is None:
                from hilprune.errors import HilpruneError

                raise HilpruneError("vec_env='subproc' needs the search job (run it through 'hilprune search')")
            ref = float(ctx.evaluator.dense_latency_ms)
            fns = [
                functools.partial(_make_subproc_env, job, ref, budgets[i % len(budgets)], reward, ctx.grid_step, self.env_kwargs)
                for i in range(n_envs)
            ]
            return SubprocVecEnv(fns, start_method="forkserver")
        fns = [
            functools.partial(_make_env, evaluator, budgets[i % len(budgets)], reward, ctx.grid_step, self.env_kwargs)
            for i in range(n_envs)
        ]
        return DummyVecEnv(fns)

    def _new_model(self, venv: Any, ctx: SearchContext, kw: dict[str, Any], tb: str | None) -> Any:
        cls = _algo_class(self.algo)
        if self.algo in ("ddpg", "td3") and "action_noise" not in kw:
            from stable_baselines3.common.noise import NormalActionNoise

            n_act = int(np.prod(venv.action_space.shape))
            kw["action_noise"] = NormalActionNoise(np.zeros(n_act), self.noise_sigma * np.ones(n_act))
        return cls("MlpPolicy", venv, seed=int(ctx.seed), device="cpu", tensorboard_log=tb, verbose=self.verbose, **kw)

    # -- the search ----------------------------------------------------------------------------------
    def run(self, ctx: SearchContext, n_evals: int) -> None:
        import torch
        from stable_baselines3.common.callbacks import CallbackList
        from stable_baselines3.common.vec_env import VecNormalize

        torch.set_num_threads(1)
        n_evals = int(n_evals)
        if n_evals <= 0:
            return
        ev = ctx.evaluator
        budgets = list(ctx.budgets) or [ev.resolve_budget(1.0)]
        n_det = min(len(budgets), n_evals) if self.deterministic_eval else 0
        quota = n_evals - n_det
        L = len(ev.groups)
        n_envs = self._n_envs(len(budgets))
        save_dir = self.save_dir(ctx)
        save_dir.mkdir(parents=True, exist_ok=True)
        tb = str(save_dir / "tb") if self.tensorboard else None
        quota_ev = QuotaEvaluator(ev, quota)
        raw = self._venv(ctx, quota_ev, budgets, n_envs)
        ckpt = find_checkpoint(save_dir) if self.resume else None
        if ckpt and ckpt.get("algo") not in (None, self.algo):
            log.warning(
                "%s: checkpoint %s is for %s, not %s; starting fresh", self.name, ckpt["model"], ckpt.get("algo"), self.algo
            )
            ckpt = None
        kw = self.hyperparameters(L, n_envs, quota)
        if ckpt:
            venv = (
                VecNormalize.load(ckpt["vecnormalize"], raw)
                if ckpt.get("vecnormalize")
                else VecNormalize(raw, norm_obs=True, norm_reward=False, gamma=self.gamma)
            )
            venv.training, venv.norm_reward = True, False
            model = _algo_class(self.algo).load(ckpt["model"], env=venv, device="cpu", tensorboard_log=tb)
            if ckpt.get("replay_buffer") and hasattr(model, "load_replay_buffer"):
                model.load_replay_buffer(ckpt["replay_buffer"])
            episodes_before = int(ckpt.get("episodes", 0))
            model.set_random_seed(int(ctx.seed) + episodes_before)
            venv.seed(int(ctx.seed) + episodes_before)
            log.info("%s: resumed from %s (%d episodes)", self.name, ckpt["model"], episodes_before)
        else:
            venv = VecNormalize(raw, norm_obs=True, norm_reward=False, gamma=self.gamma)
            venv.seed(int(ctx.seed))
            model = self._new_model(venv, ctx, kw, tb)
            if self.algo == "ppo" and self.start == "uniform":
                self._start_at_uniform(model, ev, budgets)
            episodes_before = 0
        self.model = model
        recorder = RecordTrialsCallback(
            ctx, self.name, quota, evaluator=None if self.vec_env == "subproc" else ev, extra_attrs={"algo": self.algo}
        )
        callbacks: list[Any] = [
            recorder,
            CheckpointCallback(
                save_dir, recorder, every=self.checkpoint_every, keep=self.keep_checkpoints, episodes_before=episodes_before
            ),
        ]
        if self.tensorboard:
            callbacks.append(TensorBoardCallback(recorder))
        if self.algo in ("ddpg", "td3"):
            warm = int(kw.get("learning_starts", 0)) // max(1, L)
            callbacks.append(NoiseDecayCallback(self.noise_decay, after_episodes=max(0, warm - episodes_before)))
        t0 = time.perf_counter()
        try:
            if quota > 0:
                steps = (quota + n_envs) * L + int(kw.get("n_steps", L)) * n_envs + int(kw.get("learning_starts", 0))
                for _attempt in range(4):  # learn() again if episodes ran longer than expected; never hang
                    model.learn(
                        total_timesteps=steps,
                        callback=CallbackList(callbacks),
                        reset_num_timesteps=False,
                        tb_log_name=self.name,
                        log_interval=1,
                        progress_bar=False,
                    )
                    if recorder.full:
                        break
                if not recorder.full:
                    log.warning("%s: recorded %d of %d episodes", self.name, recorder.recorded, quota)
            det = self._deterministic(ctx, model, venv, budgets[:n_det]) if n_det else []
        finally:
            venv.close()
        self.summary = self._summarize(ctx, recorder, det, time.perf_counter() - t0)
        _write_json(save_dir / "summary.json", self.summary)
        for d in det:
            best = self.summary["best"].get(d["budget_label"])
            log.info(
                "%s: deterministic policy at %s: accuracy %.4f, %.4g ms (trial %d); best found: %s",
                self.name,
                d["budget_label"],
                d["accuracy"],
                d["latency_ms"],
                d["trial"],
                f"accuracy {best['accuracy']:.4f}, {best['latency_ms']:.4g} ms (trial {best['trial']})" if best else "none",
            )

    def _start_at_uniform(self, model: Any, evaluator: Any, budgets: list[Budget]) -> None:
        """Centre a new PPO policy's ratio action on the uniform ratio that meets the budgets (their
        mean with several): the action head's bias, its weights being near zero at initialization."""
        import torch

        high = float(self.env_kwargs.get("max_ratio", evaluator.max_ratio))
        self.start_ratio = float(np.mean([uniform_ratio(evaluator, b.ms, high) for b in budgets]))
        with torch.no_grad():
            model.policy.action_net.bias[0] = 2.0 * self.start_ratio / high - 1.0
        log.info("%s: first actions centred on the uniform ratio %.3f", self.name, self.start_ratio)

    def _deterministic(self, ctx: SearchContext, model: Any, venv: Any, budgets: list[Budget]) -> list[dict[str, Any]]:
        """One episode per budget with the trained policy's mean action; each recorded as a trial."""
        from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

        out = []
        ev = ctx.evaluator
        for b in budgets:
            raw = DummyVecEnv([functools.partial(_make_env, ev, b, self._reward_name(ctx), ctx.grid_step, self.env_kwargs)])
            eval_env = VecNormalize(raw, norm_obs=True, norm_reward=False, training=False, gamma=self.gamma)
            if isinstance(venv, VecNormalize):
                eval_env.obs_rms = venv.obs_rms.copy() if hasattr(venv.obs_rms, "copy") else venv.obs_rms
            obs = eval_env.reset()
            info: dict[str, Any] = {}
            for _ in range(len(ev.groups) + 1):
                action, _ = model.predict(obs, deterministic=True)
                obs, _r, done, infos = eval_env.step(action)
                if done[0]:
                    info = infos[0]
                    break
            eval_env.close()
            if not info:
                log.warning("%s: the deterministic episode did not end", self.name)
                continue
            result = episode_result(info, ev)
            reward = (info.get("episode") or {}).get("r")
            number = ctx.record(
                self.name,
                result,
                reward=None if reward is None else float(reward),
                budget=b,
                extra_attrs={"deterministic": True, "algo": self.algo},
            )
            out.append(
                {
                    "trial": int(number),
                    "budget_ms": b.ms,
                    "budget_label": b.label,
                    "accuracy": float(result.accuracy),
                    "latency_ms": float(result.latency_ms),
                    "within_budget": b.met_by(result.latency_ms),
                    "ratios": result.policy.requested(),
                }
            )
        return out

    def _summarize(
        self, ctx: SearchContext, recorder: RecordTrialsCallback, det: list[dict[str, Any]], wall_s: float
    ) -> dict[str, Any]:
        best: dict[str, Any] = {}
        records = ctx.records(self.name)
        for b in ctx.budgets:
            ok = [r for r in records if b.met_by(r.latency_ms)]
            if ok:
                r = max(ok, key=lambda r: r.accuracy)
                best[b.label] = {"trial": r.number, "accuracy": r.accuracy, "latency_ms": r.latency_ms, "budget_ms": b.ms}
        spent = {e.key: e.proxy_s for e in recorder.episodes}  # each distinct policy once: repeats come from the cache
        known = all(e.proxy_s > 0 for e in recorder.episodes)
        return {
            "agent": self.name,
            "algo": self.algo,
            "proxy": ctx.evaluator.proxy,
            # seconds of accuracy proxy per recorded episode (None when envs ran in other processes)
            "proxy_s_per_episode": sum(spent.values()) / len(recorder.episodes) if recorder.episodes and known else None,
            "episodes_recorded": recorder.recorded,
            "start": {"mode": self.start, "ratio": self.start_ratio},
            "trials": len(records),
            "deterministic": det,
            "best": best,
            "wall_s": wall_s,
            "checkpoint": (find_checkpoint(self.save_dir(ctx)) or {}).get("model"),
        }


class SACAgent(PPOAgent):
    """SAC on the same environment and callbacks (`algo="sac"`)."""

    name = "sac"
    default_algo = "sac"


class DDPGAgent(PPOAgent):
    """AMC's agent: DDPG with decaying Gaussian exploration noise (`algo="ddpg"`)."""

    name = "ddpg"
    default_algo = "ddpg"


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_default) + "\n")
    tmp.replace(path)


def _default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


__all__ = ["ALGOS", "DDPGAgent", "PPOAgent", "QuotaEvaluator", "SACAgent"]
