"""Callbacks that turn RL episodes into search trials (stable-baselines3 hooks).

One episode of `hilprune/LayerPrune-v0` = one policy = one evaluation. Each callback here looks
at the episodes that finished at the current step (`EpisodeCallback`) and does one thing:

- `RecordTrialsCallback`: records each finished episode as a trial (`ctx.record`) and stops
  training (returns False) the moment the evaluation quota is reached;
- `CheckpointCallback`: every K recorded episodes, saves the agent, its `VecNormalize`
  statistics (and, off-policy, its replay buffer) to `<out>/agents/<name>/`, atomically, with a
  `latest.json` pointer that `find_checkpoint` reads on resume;
- `TensorBoardCallback`: per-episode accuracy, latency, reward and the best feasible accuracy
  under `hil/...` in the algorithm's logger (TensorBoard when `tensorboard_log` is set).

Compose them with SB3's `CallbackList` (recording first: the others read its count).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from envs.evaluator import EvalResult
from hilprune.budget import within_budget
from hilprune.policy import Policy

if TYPE_CHECKING:
    from envs.interface import Evaluator
    from search.context import SearchContext

log = logging.getLogger(__name__)

LATEST = "latest.json"


# --------------------------------------------------------------------------------------------
# episode -> EvalResult
# --------------------------------------------------------------------------------------------
def episode_result(info: Mapping[str, Any], evaluator: Evaluator | None = None) -> EvalResult:
    """The EvalResult of a finished episode, from its last step's info (`PruneEnvBase._final_info`).

    In-process, the shared evaluator answers from its cache (the env just evaluated that policy);
    for an env in another process the result is rebuilt from the info's fields.
    """
    policy = Policy.from_dict(dict(info["policy"]))
    if evaluator is not None:  # at the fidelity the env scored it (its proxy may differ from the evaluator's)
        return evaluator.evaluate(policy, fidelity=info.get("fidelity") or None)
    live = info.get("live_latency_ms")
    return EvalResult(
        policy=policy,
        accuracy=float(info["accuracy"]),
        latency_ms=float(info["latency_ms"]),
        lut_latency_ms=float(info["lut_latency_ms"]),
        live_latency_ms=None if live is None else float(live),
        macs=int(info["macs"]),
        params=int(info["params"]),
        cached=True,
        latency_kind=str(info["latency_kind"]),
        live_ratio=None if info.get("live_ratio") is None else float(info["live_ratio"]),
        fidelity=str(info.get("fidelity", "")),
        rungs=[(str(info.get("fidelity", "")), float(info["accuracy"]))],
    )


# --------------------------------------------------------------------------------------------
# the callbacks
# --------------------------------------------------------------------------------------------
class EpisodeCallback(BaseCallback):
    """Calls `_on_episode(info, env_index)` for every episode that ended at this step."""

    def _on_step(self) -> bool:
        dones = self.locals.get("dones")
        infos = self.locals.get("infos")
        if dones is None or infos is None:
            return True
        keep_going = True
        for i, done in enumerate(np.asarray(dones).reshape(-1)):
            if done:
                keep_going = self._on_episode(infos[i], i) and keep_going
        return keep_going

    def _on_episode(self, info: Mapping[str, Any], env_index: int) -> bool:
        return True


@dataclass
class EpisodeRecord:
    number: int  # trial number
    accuracy: float
    latency_ms: float
    reward: float | None
    feasible: bool
    proxy_s: float = 0.0  # seconds the evaluator spent on this policy's accuracy (0: unknown, an env in another process)
    key: tuple[int, ...] = ()  # the policy's kept channels (a repeated policy costs nothing the second time)


class RecordTrialsCallback(EpisodeCallback):
    """Record every finished episode as a trial of `ctx.study(agent_name)`; stop at `quota` episodes.

    Episodes that end after the quota is reached (parallel envs finishing on the same step) are
    not recorded, and training stops at that step, so exactly `quota` trials are written.

    :param evaluator: the shared in-process evaluator (None for envs in other processes)

    Each episode's budget is the one its env was given (its info's `budget_ms`, one of the job's).
    """

    def __init__(
        self,
        ctx: SearchContext,
        agent_name: str,
        quota: int,
        evaluator: Evaluator | None = None,
        extra_attrs: Mapping[str, Any] | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        self.ctx = ctx
        self.agent_name = agent_name
        self.quota = int(quota)
        self.evaluator = evaluator
        self.extra_attrs = dict(extra_attrs or {})
        self.recorded = 0
        self.episodes: list[EpisodeRecord] = []

    @property
    def full(self) -> bool:
        return self.recorded >= self.quota

    def _on_step(self) -> bool:
        if self.full:
            return False
        return super()._on_step() and not self.full

    def _on_episode(self, info: Mapping[str, Any], env_index: int) -> bool:
        if self.full:
            return False
        result = episode_result(info, self.evaluator)
        budget = self.ctx.budget_for(float(info["budget_ms"]))
        reward = (info.get("episode") or {}).get("r", info.get("reward"))  # Monitor's episode return
        attrs = dict(self.extra_attrs) | {
            "episode": self.recorded,
            "env_index": int(env_index),
            "num_timesteps": int(self.num_timesteps),
            "deterministic": False,
        }
        number = self.ctx.record(self.agent_name, result, reward=_num(reward), budget=budget, extra_attrs=attrs)
        lat = float(result.latency_ms)
        feasible = within_budget(lat, float(info["budget_ms"]))
        self.episodes.append(
            EpisodeRecord(
                int(number), float(result.accuracy), lat, _num(reward), feasible, float(result.fidelity_cost_s), result.key()
            )
        )
        self.recorded += 1
        return not self.full


class CheckpointCallback(EpisodeCallback):
    """Save the agent every `every` recorded episodes (and once more when training ends).

    Files in `save_dir`: `model_<episodes>.zip`, `vecnormalize_<episodes>.pkl`, off-policy
    `replay_<episodes>.pkl`, and `latest.json` naming the newest set (written last, atomically).
    The newest `keep` sets are kept.
    """

    def __init__(
        self,
        save_dir: str | Path,
        recorder: RecordTrialsCallback,
        every: int = 20,
        keep: int = 2,
        episodes_before: int = 0,
        save_replay_buffer: bool = True,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        self.save_dir = Path(save_dir)
        self.recorder = recorder
        self.every = max(1, int(every))
        self.keep = max(1, int(keep))
        self.episodes_before = int(episodes_before)  # recorded by earlier runs (the checkpoint we resumed)
        self.save_replay_buffer = save_replay_buffer
        self._last_saved = 0  # recorder count at the last save

    def _on_step(self) -> bool:
        if self.recorder.recorded - self._last_saved >= self.every:
            self.save()
        return True

    def _on_training_end(self) -> None:
        if self.recorder.recorded != self._last_saved:
            self.save()

    def save(self) -> Path:
        n = self.recorder.recorded
        total = self.episodes_before + n
        self.save_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{total:07d}"
        model_path = self.save_dir / f"model_{stem}.zip"
        _atomic(lambda p: self.model.save(p), model_path)
        entry: dict[str, Any] = {
            "episodes": total,
            "num_timesteps": int(self.model.num_timesteps),
            "model": model_path.name,
            "algo": type(self.model).__name__.lower(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        venv = self.model.get_vec_normalize_env()
        if venv is not None:
            vn_path = self.save_dir / f"vecnormalize_{stem}.pkl"
            _atomic(venv.save, vn_path)
            entry["vecnormalize"] = vn_path.name
        if (
            self.save_replay_buffer
            and hasattr(self.model, "save_replay_buffer")
            and getattr(self.model, "replay_buffer", None) is not None
        ):
            rb_path = self.save_dir / f"replay_{stem}.pkl"
            _atomic(self.model.save_replay_buffer, rb_path)
            entry["replay_buffer"] = rb_path.name
        _write_json(self.save_dir / LATEST, entry)
        self._last_saved = n
        self._prune()
        if self.verbose:
            log.info("checkpoint %s (%d episodes)", model_path, total)
        return model_path

    def _prune(self) -> None:
        stems = sorted({p.stem.split("_")[-1] for p in self.save_dir.glob("model_*.zip")})
        for stem in stems[: -self.keep]:
            for pat in (f"model_{stem}.zip", f"vecnormalize_{stem}.pkl", f"replay_{stem}.pkl"):
                try:
                    (self.save_dir / pat).unlink()
                except FileNotFoundError:
                    pass


class TensorBoardCallback(EpisodeCallback):
    """Log each recorded episode under `hil/` (accuracy, latency_ms, reward, feasible, best_feasible_accuracy)."""

    def __init__(self, recorder: RecordTrialsCallback, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.recorder = recorder
        self._seen = 0
        self.best = -math.inf

    def _on_step(self) -> bool:
        new = self.recorder.episodes[self._seen :]
        self._seen = len(self.recorder.episodes)
        for ep in new:
            self.logger.record_mean("hil/accuracy", ep.accuracy)
            self.logger.record_mean("hil/latency_ms", ep.latency_ms)
            if ep.reward is not None:
                self.logger.record_mean("hil/reward", ep.reward)
            self.logger.record_mean("hil/feasible", float(ep.feasible))
            if ep.feasible and ep.accuracy > self.best:
                self.best = ep.accuracy
        if new:
            self.logger.record("hil/episodes", self.recorder.recorded)
            if self.best > -math.inf:
                self.logger.record("hil/best_feasible_accuracy", self.best)
        return True


class NoiseDecayCallback(EpisodeCallback):
    """AMC's exploration schedule: after `after_episodes` warm-up episodes, multiply the action
    noise's sigma by `decay` at every finished episode (DDPG/TD3 `action_noise`)."""

    def __init__(self, decay: float = 0.95, after_episodes: int = 0, min_sigma: float = 0.0, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.decay = float(decay)
        self.after = int(after_episodes)
        self.min_sigma = float(min_sigma)
        self.episodes = 0

    def _on_episode(self, info: Mapping[str, Any], env_index: int) -> bool:
        self.episodes += 1
        noise = getattr(self.model, "action_noise", None)
        if noise is None or self.episodes <= self.after:
            return True
        for n in getattr(noise, "noises", [noise]):  # VectorizedActionNoise with several envs
            if hasattr(n, "_sigma"):
                n._sigma = np.maximum(n._sigma * self.decay, self.min_sigma)
        return True


# --------------------------------------------------------------------------------------------
# checkpoints on disk
# --------------------------------------------------------------------------------------------
def find_checkpoint(save_dir: str | Path) -> dict[str, Any] | None:
    """The newest checkpoint in `save_dir` (latest.json, with absolute paths), or None."""
    save_dir = Path(save_dir)
    path = save_dir / LATEST
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s is unreadable; starting without a checkpoint", path)
        return None
    for key in ("model", "vecnormalize", "replay_buffer"):
        if entry.get(key):
            entry[key] = str(save_dir / entry[key])
    if not Path(entry.get("model", "")).is_file():
        log.warning("%s names a missing model file; starting without a checkpoint", path)
        return None
    return entry


def _atomic(save: Any, path: Path) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    save(str(tmp))
    written = tmp if tmp.exists() else Path(str(tmp) + ".zip")  # SB3 adds .zip when the name lacks it
    shutil.move(str(written), str(path))


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


__all__ = [
    "CheckpointCallback",
    "EpisodeCallback",
    "EpisodeRecord",
    "NoiseDecayCallback",
    "RecordTrialsCallback",
    "TensorBoardCallback",
    "episode_result",
    "find_checkpoint",
]
