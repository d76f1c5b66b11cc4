"""A search job: what to prune, on which device, under which budgets, with which agents.

A job comes from a TOML file (`--job`), from CLI flags, or both (flags win). The resolved
job is written to `<out>/job.toml`; rerunning the same command (or `hilprune search --job
<out>/job.toml`) continues the job until every agent has `evals` finished evaluations.

```toml
name = "digits"
model = "digits-cnn"
dataset = "digits"
device = "ort-cpu-1t"            # or several: ["ort-cpu-1t", "ov-cpu-1t"] searches once per device
budgets = ["0.5", "1.2ms"]      # fractions of the dense model's live latency, or milliseconds
agents = ["uniform", "random", "ppo"]
evals = 40                      # per agent, in total (resume continues up to this)
seed = 0
val_size = 5000                 # val images each evaluation scores on (default: all of Fashion-MNIST's val split)
latency_source = "lut"          # lut | live | hybrid  (the latency each trial is judged by)
proxy = "ls,kd:40"              # accuracy proxy: bn, bn:N, kd:N, a ladder bn:10,kd:20,kd:80; ls first refits (envs.fidelity)
precision = "int8"              # fp32 | int8 | mixed: the graph each policy is judged as (envs.precision)
remove_blocks = "6"             # residual blocks removed whole first: a count (the least harmful) or names
reward = "constrained"

[agent_options.ppo]             # keyword arguments passed to an agent's factory (agent.ppo.PPOAgent)
start = "uniform"               # first actions at the uniform policy that meets the budget, or "center"
episodes_per_rollout = 2
```
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from envs.errors import EnvConfigError
from envs.fidelity import DEFAULT_PROXY, DEFAULT_VAL_SIZE, LEGACY_PROXY, LEGACY_VAL_SIZE, canonical_proxy, split_reconstruct
from hilprune.budget import parse_budgets
from hilprune.errors import HilpruneError

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as _toml  # type: ignore[no-redef]

JOB_FILE = "job.toml"
LATENCY_SOURCES = ("lut", "live", "hybrid")
DEFAULT_AGENTS = ("uniform", "random")
# INT8 where the device runs it faster (envs.precision: a device whose precision table keeps fp32
# searches fp32, and a policy whose INT8 graph prices slower is judged as fp32): on an AMD EPYC the
# INT8 search's resnet56 pick at 2.55x was 3.1 points more accurate than the fp32 search's after the
# same fine-tune (docs/benchmarks.md, search_precision).
DEFAULT_PRECISION = "int8"
LEGACY_PRECISION = "fp32"  # run directories from before --precision
# The least-squares refit's ridge (hilprune.surgery.reconstruct.DEFAULT_RIDGE) that run directories
# from before it was recorded were scored with. It is not an option: a search refits with today's.
LEGACY_LS_RIDGE = 0.001

# Fields that define what a job's trials mean: changing one of them on an existing run
# directory would mix incomparable trials, so it is refused. Budgets, agents, evals and
# workers may change between runs (a trial's accuracy and latency do not depend on them).
IDENTITY_FIELDS = (
    "model",
    "dataset",
    "input_shape",
    "num_classes",
    "checkpoint",
    "device",
    "val_size",
    "latency_source",
    "proxy",
    "precision",
    "ls_ridge",
    "max_ratio",
    "round_to",
    "importance",
    "seed",
    "remove_blocks",
)


def split_list(values: Any) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values:
        for p in str(v).split(","):
            p = p.strip()
            if p and p not in out:
                out.append(p)
    return out


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "job"


# --- the job ------------------------------------------------------------------------------------
@dataclass
class Job:
    model: str
    name: str = ""
    dataset: str | None = None
    checkpoint: str | None = None
    input_shape: str | None = None
    num_classes: int | None = None
    data_dir: str | None = None
    device: str = "ort-cpu-1t"
    budgets: list[str] = field(default_factory=lambda: ["0.5"])
    agents: list[str] = field(default_factory=lambda: list(DEFAULT_AGENTS))
    evals: int = 20
    seed: int = 0
    val_size: int | None = None  # None: the run directory's (a resumed job keeps it), else DEFAULT_VAL_SIZE
    latency_source: str = "lut"
    proxy: str | None = None  # None: the run directory's (a resumed job keeps its proxy), else envs.fidelity.DEFAULT_PROXY
    reward: str = "constrained"
    precision: str | None = None  # fp32 | int8 | mixed (envs.precision); None: the run directory's, else DEFAULT_PRECISION
    ls_ridge: float | None = None  # recorded, not set: the refit's ridge when the proxy refits ("ls"), else None
    out: str = ""
    storage: str | None = None
    workers: int = 1
    max_ratio: float = 0.9
    round_to: int = 1
    importance: str = "l1"
    remove_blocks: str | None = None  # a count N (the N least harmful, by val accuracy) or block names, comma-separated
    agent_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    # --- paths -------------------------------------------------------------------------------
    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    @property
    def storage_url(self) -> str:
        from .store import default_storage_url

        return self.storage or default_storage_url(self.out_dir)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_toml(self) -> str:
        import tomli_w

        data = {k: v for k, v in self.to_dict().items() if v is not None and k != "agent_options"}
        text = "# Resolved hilprune search job: rerun with `hilprune search --job <this file>` to continue it.\n"
        text += tomli_w.dumps(data)
        if self.agent_options:
            text += "\n" + tomli_w.dumps({"agent_options": self.agent_options})
        return text

    def write(self, path: Path | None = None) -> Path:
        path = path or self.out_dir / JOB_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".toml.tmp")
        tmp.write_text(self.to_toml())
        tmp.replace(path)
        return path

    @property
    def devices(self) -> list[str]:
        """The job's devices: one, or several searched one after another (see `per_device`)."""
        return split_list(self.device)

    def per_device(self) -> list[Job]:
        """One job per device, each in its own run directory `<out>/<device>` (a job of one device
        is itself): the search, its study and its report are per device; `search.report`
        puts them side by side."""
        if len(self.devices) == 1:
            return [self]
        out = []
        for d in self.devices:
            tag = slug(Path(d).stem if d.endswith(".toml") else d.replace("remote:", ""))
            sub = replace(self, device=d, name=f"{self.name}-{tag}", out=str(Path(self.out) / tag), storage=None)
            if self.storage and "://" in self.storage:  # a shared database: studies are told apart by name
                sub.storage = self.storage
            out.append(sub)
        return out

    def identity(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in IDENTITY_FIELDS}


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise HilpruneError(f"job file not found: {path}")
    try:
        return _toml.loads(path.read_text())
    except _toml.TOMLDecodeError as exc:
        raise HilpruneError(f"{path}: not valid TOML ({exc})") from None


_KNOWN = {f.name for f in fields(Job)} | {"budget", "agent"}


def resolve_job(job_file: str | Path | None = None, **flags: Any) -> Job:
    """Merge a job file and CLI flags (flags that are not None win) into a validated Job."""
    data: dict[str, Any] = {}
    base = Path.cwd()
    if job_file is not None:
        data = read_toml(job_file)
        unknown = sorted(set(data) - _KNOWN)
        if unknown:
            raise HilpruneError(
                f"{job_file}: unknown job field(s) {', '.join(unknown)}; known: {', '.join(sorted(_KNOWN - {'budget', 'agent'}))}"
            )
        base = Path(job_file).resolve().parent
        if "budget" in data:
            data.setdefault("budgets", data.pop("budget"))
        if "agent" in data:
            data.setdefault("agents", data.pop("agent"))
        # relative paths in a job file are relative to the file
        for key in ("checkpoint", "data_dir", "out"):
            if data.get(key) and not Path(str(data[key])).is_absolute() and not _looks_remote(str(data[key])):
                data[key] = str((base / str(data[key])).resolve())
        st = data.get("storage")
        if st and "://" not in str(st) and not Path(str(st)).is_absolute():
            data["storage"] = str((base / str(st)).resolve())
    for k, v in flags.items():
        if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
            continue
        data[k] = v
    if not data.get("model"):
        raise HilpruneError("a search needs --model (or 'model' in the --job file)")
    job = Job(model=str(data.pop("model")))
    for k, v in data.items():
        if k not in _KNOWN:
            raise HilpruneError(f"unknown job field {k!r}")
        setattr(job, k, v)
    return _validate(job)


def _kept(job: Job, name: str, default: Any) -> Any:
    """A job field as given; unset: what the run directory's job recorded (a resumed job keeps it), or `default`."""
    value = getattr(job, name)
    if value is None:
        existing = Path(str(job.out)) / JOB_FILE if job.out else None
        value = getattr(load_run_job(existing.parent), name) if existing is not None and existing.is_file() else default
    return value


def _proxy(job: Job) -> str:
    """The job's accuracy proxy as its full ladder; unset: the run directory's, or the default."""
    proxy = _kept(job, "proxy", DEFAULT_PROXY)
    try:
        return canonical_proxy(str(proxy))
    except EnvConfigError as exc:
        raise HilpruneError(f"--proxy: {exc}") from None


def _val_size(job: Job) -> int:
    """Val images each evaluation scores on; unset: the run directory's (a resumed job keeps it), or the default."""
    return int(_kept(job, "val_size", DEFAULT_VAL_SIZE))


def _precision(job: Job) -> str:
    """The job's precision; unset: the run directory's (a resumed job keeps it), or the default."""
    from envs.precision import MODES as PRECISIONS

    precision = _kept(job, "precision", DEFAULT_PRECISION)
    if precision not in PRECISIONS:
        raise HilpruneError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return str(precision)


def _ls_ridge(proxy: str, ridge: float) -> float | None:
    """The refit ridge a proxy's trials are scored with: `ridge`, or None when the proxy does not refit."""
    return float(ridge) if split_reconstruct(proxy)[0] else None


def _remove_blocks(value: Any) -> str | None:
    """`remove_blocks` in one form: None (none), a count ("6") or block names ("layer3.7,layer2.8")."""
    if value is None or isinstance(value, bool):
        return None if not value else _bad_blocks(value)
    if isinstance(value, int):
        return None if value == 0 else (str(value) if value > 0 else _bad_blocks(value))
    names = split_list(value)
    if len(names) == 1 and names[0].lstrip("-").isdigit():
        return _remove_blocks(int(names[0]))
    if any(n.isdigit() for n in names):
        return _bad_blocks(value)
    return ",".join(names) or None


def _bad_blocks(value: Any) -> str:
    raise HilpruneError(f"--remove-blocks must be a count >= 0 or block names (layer3.7,layer2.8), got {value!r}")


def remove_blocks_arg(job: Job) -> int | list[str]:
    """The job's `remove_blocks` as the evaluator takes it: a count, or a list of names."""
    if not job.remove_blocks:
        return []
    return int(job.remove_blocks) if job.remove_blocks.isdigit() else split_list(job.remove_blocks)


def _looks_remote(text: str) -> bool:
    return "://" in text or text.startswith("remote:")


def _validate(job: Job) -> Job:
    job.budgets = parse_budgets(job.budgets) or ["0.5"]
    job.agents = split_list(job.agents) or list(DEFAULT_AGENTS)
    from .agents import REGISTRY

    bad = [a for a in job.agents if a not in REGISTRY]
    if bad:
        raise HilpruneError(f"unknown agent(s) {', '.join(bad)}; known: {', '.join(REGISTRY)}")
    try:
        job.evals = int(job.evals)
        job.seed = int(job.seed)
        job.workers = int(job.workers)
        job.round_to = int(job.round_to)
        job.max_ratio = float(job.max_ratio)
        job.val_size = int(job.val_size) if job.val_size is not None else None
        job.num_classes = int(job.num_classes) if job.num_classes is not None else None
    except (TypeError, ValueError) as exc:
        raise HilpruneError(f"bad job value: {exc}") from None
    job.remove_blocks = _remove_blocks(job.remove_blocks)
    if job.evals < 1:
        raise HilpruneError("--evals must be at least 1")
    if job.workers < 1:
        raise HilpruneError("--workers must be at least 1")
    if job.val_size is not None and job.val_size < 1:
        raise HilpruneError("--val-size must be at least 1")
    if not 0 < job.max_ratio < 1:
        raise HilpruneError("max_ratio must be in (0, 1)")
    if job.latency_source not in LATENCY_SOURCES:
        raise HilpruneError(f"--latency-source must be one of {', '.join(LATENCY_SOURCES)}, got {job.latency_source!r}")
    if job.input_shape is not None and not isinstance(job.input_shape, str):
        job.input_shape = ",".join(str(int(x)) for x in job.input_shape)
    if job.checkpoint:
        ck = Path(str(job.checkpoint)).expanduser()
        if not ck.is_file():
            raise HilpruneError(f"checkpoint not found: {ck}")
        from hilprune.models.checkpoints import load_state

        load_state(ck)  # a file that is no checkpoint is refused before the job starts
        job.checkpoint = str(ck.resolve())
    if job.data_dir:
        job.data_dir = str(Path(str(job.data_dir)).expanduser().resolve())
    if not job.dataset:
        raise HilpruneError(
            "a search needs --dataset (accuracy is measured on its validation split): digits, fashion-mnist or cifar10"
        )
    devices = split_list(job.device)
    if not devices:
        raise HilpruneError("a search needs a --device")
    job.device = ",".join(devices)
    if not job.name:
        model = Path(job.model.split(":")[0]).stem if ":" in job.model else job.model
        device = "-".join(Path(d).stem if d.endswith(".toml") else d for d in devices)
        job.name = Path(str(job.out)).name if job.out else slug(f"{model}-{job.dataset}-{device}")
    job.name = slug(str(job.name))
    if not job.out:
        job.out = str(Path("runs") / job.name)
    job.out = str(Path(str(job.out)).expanduser().resolve())
    job.proxy = _proxy(job)
    job.val_size = _val_size(job)
    job.precision = _precision(job)
    from hilprune.surgery.reconstruct import DEFAULT_RIDGE

    job.ls_ridge = _ls_ridge(job.proxy, DEFAULT_RIDGE)  # not an option: a search refits with today's ridge
    if job.storage:
        st = str(job.storage)
        if "://" not in st:
            st = str(Path(st).expanduser().resolve())
        job.storage = st
    if not isinstance(job.agent_options, dict):
        raise HilpruneError("agent_options must be a table of tables ([agent_options.ppo] ...)")
    return job


def load_run_job(run_dir: str | Path) -> Job:
    """The resolved job of an existing run directory."""
    run_dir = Path(run_dir)
    path = run_dir / JOB_FILE
    if not path.is_file():
        raise HilpruneError(f"{run_dir} is not a search run directory (no {JOB_FILE}); run 'hilprune search' first")
    data = read_toml(path)
    data.setdefault("out", str(run_dir.resolve()))
    data.setdefault("proxy", LEGACY_PROXY)  # runs from before proxies were scored by BN recalibration alone
    data.setdefault("precision", LEGACY_PRECISION)
    data.setdefault("val_size", LEGACY_VAL_SIZE)  # runs from before the default was the whole val split
    data["ls_ridge"] = _ls_ridge(str(data["proxy"]), data.get("ls_ridge", LEGACY_LS_RIDGE))
    model = data.pop("model", None)
    if not model:
        raise HilpruneError(f"{path}: no model")
    job = Job(model=model)
    for k, v in data.items():
        if k in _KNOWN and k not in ("budget", "agent"):
            setattr(job, k, v)
    # a moved run directory still works: its own files win over the recorded out path
    if Path(job.out).resolve() != run_dir.resolve():
        if job.storage and job.storage == str(Path(job.out) / "study.journal"):
            job.storage = None
        job.out = str(run_dir.resolve())
    return job


def check_compatible(new: Job, old: Job) -> None:
    """Refuse to continue a run directory with settings that change what its trials mean."""
    a, b = new.identity(), old.identity()
    diff = [k for k in IDENTITY_FIELDS if _norm(a[k]) != _norm(b[k])]
    if diff:
        detail = "; ".join(f"{k}: {b[k]!r} -> {a[k]!r}" for k in diff)
        if diff == ["ls_ridge"]:
            raise HilpruneError(
                f"{new.out} holds trials refitted by least squares with ridge {b['ls_ridge']!r}, and this hilprune "
                f"refits with {a['ls_ridge']!r}: their accuracies are not comparable; use another --out"
            )
        raise HilpruneError(
            f"{new.out} holds a job with other settings ({detail}); use another --out, or the same settings to continue it"
        )


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v]
    return v
