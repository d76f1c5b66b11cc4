"""Where a search keeps its trials: an Optuna storage chosen by URL.

- the default is a journal file `runs/<name>/study.journal` (`JournalStorage` over a
  `JournalFileBackend`): safe for several processes on one machine, readable by
  `optuna-dashboard` directly, and every finished evaluation is one appended line;
- any SQLAlchemy URL (`postgresql://...`, `mysql+pymysql://...`, `sqlite:///...`) gives an
  `RDBStorage` (use Postgres or MySQL for workers on several hosts).

One study per job and agent, named `<job>/<agent>`, directions `[maximize, minimize]`,
metric names `["accuracy", "latency_ms"]`. A trial's params are the per-group ratios snapped
to the grid `FloatDistribution(0, max_ratio, step=grid_step)` (so Optuna samplers can learn from
every agent's trials); the exact ratios live in the `policy` user attr.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from hilprune.errors import HilpruneError

DIRECTIONS = ["maximize", "minimize"]
METRIC_NAMES = ["accuracy", "latency_ms"]
JOURNAL_FILE = "study.journal"
GRID_STEP = 0.05

optuna.logging.set_verbosity(optuna.logging.WARNING)


def default_storage_url(out_dir: str | Path) -> str:
    return str(Path(out_dir) / JOURNAL_FILE)


def is_journal(url: str) -> bool:
    return "://" not in url


def journal_path(url: str) -> Path:
    return Path(url[len("journal:") :] if url.startswith("journal:") else url)


_STORAGES: dict[str, optuna.storages.BaseStorage] = {}


def open_storage(url: str, *, cache: bool = True) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url`: a journal file path, or an RDB URL."""
    if cache and url in _STORAGES:
        return _STORAGES[url]
    if is_journal(url):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = journal_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            storage: optuna.storages.BaseStorage = JournalStorage(JournalFileBackend(str(path)))
        except ValueError as exc:  # a corrupt line in the middle of the log
            raise HilpruneError(f"{path}: cannot read the journal ({exc})") from None
    elif url.startswith("redis://"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalRedisBackend

        storage = JournalStorage(JournalRedisBackend(url))
    else:
        engine_kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            engine_kwargs = {"connect_args": {"timeout": 60}}
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except ImportError as exc:
            raise HilpruneError(
                f"storage {url}: a database driver is missing ({exc}); install it, e.g. "
                "pip install 'hilprune[postgres]' (psycopg 3) for postgresql://"
            ) from None
        except Exception as exc:  # sqlalchemy errors: bad URL, unreachable server
            raise HilpruneError(f"storage {url}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if cache:
        _STORAGES[url] = storage
    return storage


def repair_journal(url: str) -> None:
    """Make a journal file safe to append to after a process was killed while writing.

    Called only by the process that holds the job's lock: drops a torn last line (a kill
    in the middle of a write) and a stale writer lock (a kill while holding it).
    """
    if not is_journal(url):
        return
    path = journal_path(url)
    if path.is_file() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.seek(0)
                data = f.read()
                cut = data.rfind(b"\n") + 1
                f.truncate(cut)
    lock = Path(str(path) + ".lock")
    if lock.is_symlink() or lock.exists():
        try:
            lock.unlink()
        except OSError:
            pass


def study_name(job: str, agent: str) -> str:
    return f"{job}/{agent}"


def get_study(
    storage: optuna.storages.BaseStorage | str, name: str, sampler: optuna.samplers.BaseSampler | None = None, create: bool = True
) -> optuna.Study:
    """Create (or load) the study `name` with the search's directions and metric names."""
    if isinstance(storage, str):
        storage = open_storage(storage)
    if not create:
        try:
            return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        except KeyError:
            raise HilpruneError(f"no study {name!r} in the storage") from None
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=DIRECTIONS, sampler=sampler, load_if_exists=True)
    except optuna.exceptions.DuplicatedStudyError:  # another worker created it in between
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    if [d.name.lower() for d in study.directions] != DIRECTIONS:
        raise HilpruneError(f"study {name!r} exists with directions {[d.name for d in study.directions]}, not {DIRECTIONS}")
    if study.metric_names != METRIC_NAMES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study.set_metric_names(METRIC_NAMES)
    return study


def study_names(storage: optuna.storages.BaseStorage, job: str) -> dict[str, str]:
    """agent -> study name, for the studies of `job` in `storage`."""
    prefix = f"{job}/"
    out = {}
    for s in optuna.get_all_study_names(storage):
        if s.startswith(prefix):
            out[s[len(prefix) :]] = s
    return out


# --- the grid -----------------------------------------------------------------------------------
def grid_high(max_ratio: float, step: float = GRID_STEP) -> float:
    return round(math.floor(max_ratio / step + 1e-9) * step, 10)


def distributions(group_names: Iterable[str], max_ratio: float, step: float = GRID_STEP) -> dict[str, FloatDistribution]:
    high = grid_high(max_ratio, step)
    return {n: FloatDistribution(0.0, high, step=step) for n in group_names}


PRECISION_PARAM = "precision:"  # a mixed-precision search's per-group param: precision:<group> = fp32 | int8


def precision_param(group: str) -> str:
    return PRECISION_PARAM + group


def precision_distributions(group_names: Iterable[str]) -> dict[str, CategoricalDistribution]:
    return {precision_param(n): CategoricalDistribution(("fp32", "int8")) for n in group_names}


def snap(ratio: float, max_ratio: float, step: float = GRID_STEP) -> float:
    high = grid_high(max_ratio, step)
    return min(high, max(0.0, round(round(float(ratio) / step) * step, 10)))


# --- artifacts ----------------------------------------------------------------------------------
ARTIFACT_DIR = "artifacts"


def artifact_store(out_dir: str | Path) -> Any:
    from optuna.artifacts import FileSystemArtifactStore

    path = Path(out_dir) / ARTIFACT_DIR
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def write_artifact(store_: Any, data: bytes, filename: str, mimetype: str = "application/json") -> tuple[str, str]:
    """Write `data` to the artifact store; returns the (system attr key, value) that links it to a
    study or trial (what `optuna.artifacts.upload_artifact` records), so it can go into the same
    journal line as the trial itself."""
    import io
    import uuid

    from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX

    artifact_id = str(uuid.uuid4())
    store_.write(artifact_id, io.BytesIO(data))
    meta = {"artifact_id": artifact_id, "filename": filename, "mimetype": mimetype, "encoding": None}
    return ARTIFACTS_ATTR_PREFIX + artifact_id, json.dumps(meta)


# --- trials -------------------------------------------------------------------------------------
def add_complete_trial(
    study: optuna.Study,
    values: list[float],
    params: Mapping[str, Any],
    dists: Mapping[str, FloatDistribution | CategoricalDistribution],
    user_attrs: Mapping[str, Any],
    system_attrs: Mapping[str, Any] | None = None,
) -> int:
    """Write one finished evaluation as a COMPLETE trial (one journal line); returns its number."""
    ft = optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        values=list(values),
        params=dict(params),
        distributions=dict(dists),
        user_attrs=dict(user_attrs),
        system_attrs=dict(system_attrs or {}),
    )
    ft._validate()
    storage = study._storage
    trial_id = storage.create_new_trial(study._study_id, template_trial=ft)
    return storage.get_trial_number_from_id(trial_id)


def finished_count(study: optuna.Study) -> int:
    """Policies the agent finished scoring: COMPLETE trials and those a pruner stopped at a cheap rung."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


# --- rung studies (multi-fidelity, search.agents.rungs) ------------------------------------------
RUNG_MARK = "#rungs"  # job names are slugs ([A-Za-z0-9_.-]): no job's studies can be named like these


def rung_study_name(job: str, agent: str, bucket: str) -> str:
    """`<job>#rungs/<agent>/<budget>`: never listed among the job's agent studies (`study_names`)."""
    return f"{job}{RUNG_MARK}/{agent}/{bucket}"


def get_rung_study(storage: optuna.storages.BaseStorage, name: str, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """A single-objective study (maximize accuracy) whose trials report one value per rung to `pruner`."""
    sampler = optuna.samplers.RandomSampler(seed=0)  # nothing is sampled: the policy comes from the agent's study
    try:
        return optuna.create_study(
            storage=storage, study_name=name, direction="maximize", pruner=pruner, sampler=sampler, load_if_exists=True
        )
    except optuna.exceptions.DuplicatedStudyError:  # another worker created it in between
        return optuna.load_study(study_name=name, storage=storage, pruner=pruner, sampler=sampler)


def fail_stale_running(study: optuna.Study) -> int:
    """Mark RUNNING trials left by killed processes as FAIL (only when no worker is alive)."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        try:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            n += 1
        except Exception:  # finished by its worker in between
            pass
    return n


@dataclass
class TrialRecord:
    """One finished evaluation, read back from the storage."""

    agent: str
    number: int
    accuracy: float
    latency_ms: float
    latency_source: str | None = None
    lut_latency_ms: float | None = None
    live_latency_ms: float | None = None
    live_ratio: float | None = None  # live / dense, measured interleaved: latency_ms is then in the dense frame
    macs: int | None = None
    params: int | None = None
    reward: float | None = None
    seed: int | None = None
    device_fingerprint: str | None = None
    policy: dict[str, Any] = field(default_factory=dict, repr=False)
    grid_params: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.agent}:{self.number}"

    def ratios(self) -> dict[str, float]:
        if self.policy.get("groups"):
            return {g["name"]: float(g.get("requested_ratio", g.get("ratio", 0.0))) for g in self.policy["groups"]}
        return {k: float(v) for k, v in self.grid_params.items() if not k.startswith(PRECISION_PARAM)}


def record_from_trial(agent: str, t: FrozenTrial) -> TrialRecord:
    ua = t.user_attrs
    policy = ua.get("policy") or {}
    if isinstance(policy, str):
        try:
            policy = json.loads(policy)
        except json.JSONDecodeError:
            policy = {}
    return TrialRecord(
        agent=str(ua.get("agent", agent)),
        number=t.number,
        accuracy=float(t.values[0]),
        latency_ms=float(t.values[1]),
        latency_source=ua.get("latency_source"),
        lut_latency_ms=_f(ua.get("lut_latency_ms")),
        live_latency_ms=_f(ua.get("live_latency_ms")),
        live_ratio=_f(ua.get("live_ratio")),
        macs=ua.get("macs"),
        params=ua.get("params"),
        reward=_f(ua.get("reward")),
        seed=ua.get("seed"),
        device_fingerprint=ua.get("device_fingerprint"),
        policy=policy,
        grid_params=dict(t.params),
    )


def _f(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def load_records(storage: optuna.storages.BaseStorage, job: str) -> dict[str, list[TrialRecord]]:
    """agent -> its COMPLETE trials, for every study of `job`."""
    out: dict[str, list[TrialRecord]] = {}
    for agent, name in study_names(storage, job).items():
        study = optuna.load_study(study_name=name, storage=storage)
        out[agent] = [
            record_from_trial(agent, t)
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values is not None and len(t.values) == 2
        ]
    return out


@dataclass
class CostRecord:
    """What scoring one policy cost an agent: the fidelity it reached and the seconds spent on its accuracy."""

    agent: str
    number: int
    state: str  # COMPLETE or PRUNED
    fidelity: str | None
    cost_s: float | None
    key: tuple[int, ...]


def load_costs(storage: optuna.storages.BaseStorage, job: str) -> dict[str, list[CostRecord]]:
    """agent -> the proxy cost of each of its finished policies (COMPLETE and PRUNED trials)."""
    out: dict[str, list[CostRecord]] = {}
    for agent, name in study_names(storage, job).items():
        study = optuna.load_study(study_name=name, storage=storage)
        recs = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            ua = t.user_attrs
            policy = ua.get("policy") or {}
            if isinstance(policy, str):
                try:
                    policy = json.loads(policy)
                except json.JSONDecodeError:
                    policy = {}
            key = tuple(int(g.get("channels_after", -1)) for g in policy.get("groups", []))
            recs.append(CostRecord(agent, t.number, t.state.name, ua.get("fidelity"), _f(ua.get("fidelity_cost_s")), key))
        out[agent] = recs
    return out
