"""Device specs: how to run a model on one target, read from TOML.

A latency is only meaningful together with the settings that produced it, so everything that
changes it (the runtime and its settings: providers, threads, optimisation level; batch, dtype)
lives in one spec, and the measurement policy (how to time and read a latency) sits beside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from hwprofiler.errors import DeviceError

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as _toml  # type: ignore[no-redef]

REMOTE_PREFIX = "remote:"
OPT_LEVELS = ("disable", "basic", "extended", "all")
DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class MeasurePolicy:
    """How a live latency is taken: `warmup` discarded runs, then `rounds` windows of at least
    `round_s` seconds (and `min_round_runs` runs) each, read with `estimator`.

    Several short windows rather than one long one: on shared and virtual CPUs the speed changes
    for seconds at a time and other tenants add bursts, so the windows spread a measurement over
    time, and two models measured together alternate their windows (A B B A ...) to see the same
    conditions. The estimator is applied to all windows (`hwprofiler.stats.ESTIMATORS`): noise on
    a shared host only adds time, so the low end of the samples is what repeats.

    `chain` (kernel policies only) times each kernel as `chain` copies run back to back in one
    graph against the kernel alone (`hwprofiler.kernel_chain`), which takes the per-inference
    fixed cost out of its time: a runtime that reorders every graph's input and output into its
    own layout (OpenVINO) spends more on that than on a small kernel. 1: the kernel alone.
    """

    warmup: int = 10
    rounds: int = 5
    round_s: float = 0.05
    min_round_runs: int = 3
    max_round_runs: int = 100_000
    estimator: str = "min"
    chain: int = 1

    def __post_init__(self) -> None:
        from hwprofiler.stats import ESTIMATORS

        if not isinstance(self.chain, int) or isinstance(self.chain, bool) or self.chain < 1:
            raise DeviceError(f"bad measurement policy: chain must be a whole number >= 1, got {self.chain!r}")
        if self.warmup < 0 or self.rounds < 1 or self.min_round_runs < 1 or self.max_round_runs < self.min_round_runs:
            raise DeviceError(
                f"bad measurement policy {self}: need warmup >= 0, rounds >= 1 and 1 <= min_round_runs <= max_round_runs"
            )
        if not self.round_s >= 0:
            raise DeviceError(f"bad measurement policy {self}: need round_s >= 0")
        if self.estimator not in ESTIMATORS:
            raise DeviceError(f"bad measurement policy: unknown estimator {self.estimator!r}; known: {', '.join(ESTIMATORS)}")

    def to_dict(self) -> dict[str, Any]:
        """The policy's fields; `chain` only where it is on, so the fingerprints (and tables) of
        devices that time kernels alone stay what they were before chaining existed."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if d["chain"] == 1:
            del d["chain"]
        return d


# What a device file gets where it sets no policy (chosen by bench/live_estimator.py).
DEFAULT_POLICY = MeasurePolicy(warmup=10, rounds=5, round_s=0.05, min_round_runs=3, estimator="min")
DEFAULT_KERNEL_POLICY = MeasurePolicy(warmup=5, rounds=3, round_s=0.015, min_round_runs=3, estimator="min")


@dataclass(frozen=True)
class DeviceSpec:
    """One measurement target: a runtime configuration on this host, or a remote profiler.

    `runtime` names the runtime (`hwprofiler.runtimes`): onnxruntime's settings are the fields
    below; other runtimes keep theirs in `runtime_options` (their TOML table).
    `remote` is the base URL of a `hwprofiler serve` process; measurements for such a spec go
    through `hwprofiler.client` and the local runtime fields are ignored.
    """

    name: str
    description: str = ""
    runtime: str = "onnxruntime"
    runtime_options: dict[str, Any] = field(default_factory=dict)
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    provider_options: tuple[dict[str, str], ...] = ()
    intra_op_threads: int = 1
    graph_optimization_level: str = "all"
    session_config: dict[str, str] = field(default_factory=dict)
    batch: int = 1
    dtype: str = "float32"
    policy: MeasurePolicy = DEFAULT_POLICY
    kernel_policy: MeasurePolicy = DEFAULT_KERNEL_POLICY
    source: str = "builtin"
    remote: str | None = None
    token: str | None = field(default=None, repr=False, compare=False)

    def __hash__(self) -> int:  # dict fields are not hashable; name + remote identify a spec
        return hash((self.name, self.remote))

    @property
    def is_remote(self) -> bool:
        return self.remote is not None

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-able data (no token)."""
        return {
            "name": self.name,
            "description": self.description,
            "runtime": self.runtime,
            "runtime_options": dict(self.runtime_options),
            "providers": list(self.providers),
            "provider_options": [dict(o) for o in self.provider_options],
            "intra_op_threads": self.intra_op_threads,
            "graph_optimization_level": self.graph_optimization_level,
            "session_config": dict(self.session_config),
            "batch": self.batch,
            "dtype": self.dtype,
            "policy": self.policy.to_dict(),
            "kernel_policy": self.kernel_policy.to_dict(),
            "remote": self.remote,
        }


def _builtin_dir() -> Path:
    return Path(str(resources.files("hwprofiler") / "devices"))


def list_devices() -> list[str]:
    """Names of the built-in device specs (`hwprofiler/devices/*.toml`)."""
    return sorted(p.stem for p in _builtin_dir().glob("*.toml"))


_RUNTIME_TABLES = ("onnxruntime", "simulated", "openvino")
_TOP_KEYS = {"name", "description", "runtime", "batch", "dtype", "policy", "kernel_policy", *_RUNTIME_TABLES}
_ORT_KEYS = {"providers", "provider_options", "intra_op_threads", "graph_optimization_level", "session_config"}


def _policy(data: Any, where: str, default: MeasurePolicy) -> MeasurePolicy:
    if data is None:
        return default
    if not isinstance(data, dict):
        raise DeviceError(f"{where}: must be a table")
    known = {f.name for f in fields(MeasurePolicy)}
    unknown = set(data) - known
    if unknown:
        raise DeviceError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    try:
        return MeasurePolicy(**{**default.to_dict(), **data})
    except TypeError as e:
        raise DeviceError(f"{where}: {e}") from None


def _round_override(policy: MeasurePolicy, source: str) -> MeasurePolicy:
    """`$HWPROFILER_ROUND_S` replaces every policy's `round_s`: 0 for quick, noisier runs (the test
    suite, smoke runs). It changes the fingerprint, so such numbers stay apart."""
    value = os.environ.get("HWPROFILER_ROUND_S")
    if value is None or value == "":
        return policy
    try:
        seconds = float(value)
    except ValueError:
        raise DeviceError(f"{source}: $HWPROFILER_ROUND_S must be a number of seconds, got {value!r}") from None
    if not seconds >= 0:
        raise DeviceError(f"{source}: $HWPROFILER_ROUND_S must be >= 0, got {value!r}")
    return replace(policy, round_s=seconds)


def spec_from_dict(data: dict[str, Any], source: str) -> DeviceSpec:
    """Build and validate a spec from parsed TOML; every mistake becomes one `DeviceError` line."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise DeviceError(f"{source}: unknown keys {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise DeviceError(f"{source}: needs a non-empty string `name`")
    runtime_name = data.get("runtime", "onnxruntime")
    from hwprofiler.runtimes import RUNTIMES, get_runtime

    if runtime_name not in RUNTIMES:
        raise DeviceError(f"{source}: unknown runtime {runtime_name!r}; known: {', '.join(RUNTIMES)}")
    for table in _RUNTIME_TABLES:
        if table in data and table != runtime_name:
            raise DeviceError(f"{source}: has a [{table}] table but runtime = {runtime_name!r}")
    options = data.get(runtime_name, {}) if runtime_name != "onnxruntime" else {}
    if not isinstance(options, dict):
        raise DeviceError(f"{source}: [{runtime_name}] must be a table")
    runtime_options = get_runtime(runtime_name).check_options(dict(options), source)
    ort_cfg = data.get("onnxruntime", {})
    unknown = set(ort_cfg) - _ORT_KEYS
    if unknown:
        raise DeviceError(f"{source}: unknown [onnxruntime] keys {sorted(unknown)}; known: {sorted(_ORT_KEYS)}")
    providers = tuple(ort_cfg.get("providers", ["CPUExecutionProvider"]))
    provider_options = tuple({str(k): str(v) for k, v in o.items()} for o in ort_cfg.get("provider_options", []))
    if provider_options and len(provider_options) != len(providers):
        raise DeviceError(f"{source}: provider_options needs one table per provider ({len(providers)})")
    level = ort_cfg.get("graph_optimization_level", "all")
    if level not in OPT_LEVELS:
        raise DeviceError(f"{source}: graph_optimization_level {level!r} is not one of {OPT_LEVELS}")
    threads = ort_cfg.get("intra_op_threads", 1)
    batch = data.get("batch", 1)
    dtype = data.get("dtype", "float32")
    if not isinstance(threads, int) or threads < 0:
        raise DeviceError(f"{source}: intra_op_threads must be an integer >= 0 (0 lets onnxruntime choose)")
    if not isinstance(batch, int) or batch < 1:
        raise DeviceError(f"{source}: batch must be an integer >= 1")
    if dtype not in DTYPES:
        raise DeviceError(f"{source}: dtype {dtype!r} is not one of {DTYPES}")
    policy = _policy(data.get("policy"), f"{source} [policy]", DEFAULT_POLICY)
    if policy.chain != 1:
        raise DeviceError(f"{source} [policy]: chain times kernels, so it belongs in [kernel_policy]")
    kpolicy = _policy(data.get("kernel_policy"), f"{source} [kernel_policy]", DEFAULT_KERNEL_POLICY)
    policy, kpolicy = _round_override(policy, source), _round_override(kpolicy, source)
    return DeviceSpec(
        name=data["name"],
        description=str(data.get("description", "")),
        runtime=runtime_name,
        runtime_options=runtime_options,
        providers=providers,
        provider_options=provider_options,
        intra_op_threads=threads,
        graph_optimization_level=level,
        session_config={str(k): str(v) for k, v in ort_cfg.get("session_config", {}).items()},
        batch=batch,
        dtype=dtype,
        policy=policy,
        kernel_policy=kpolicy,
        source=source,
    )


def _load_toml(path: Path) -> DeviceSpec:
    try:
        with path.open("rb") as f:
            data = _toml.load(f)
    except OSError as e:
        raise DeviceError(f"cannot read device file {path}: {e.strerror}") from None
    except _toml.TOMLDecodeError as e:
        raise DeviceError(f"device file {path} is not valid TOML: {e}") from None
    return spec_from_dict(data, str(path))


def _remote_spec(target: str, token: str | None) -> DeviceSpec:
    url = target[len(REMOTE_PREFIX) :].rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url.split("//", 1)[1]) == 0:
        raise DeviceError(f"bad remote device {target!r}: use remote:http://HOST:PORT")
    if token is None:
        token = os.environ.get("HWPROFILER_TOKEN")
    if token is None and os.environ.get("HWPROFILER_TOKEN_FILE"):
        try:
            token = Path(os.environ["HWPROFILER_TOKEN_FILE"]).read_text().strip()
        except OSError as e:
            raise DeviceError(f"cannot read HWPROFILER_TOKEN_FILE: {e.strerror}") from None
    return DeviceSpec(name=target, description=f"profiler server at {url}", source="remote", remote=url, token=token)


def load_device(target: str | os.PathLike[str] | DeviceSpec, *, token: str | None = None) -> DeviceSpec:
    """Resolve a built-in name, a path to a TOML file, or `remote:http://HOST:PORT`.

    For a remote device the bearer token is `token`, else `$HWPROFILER_TOKEN`, else the
    contents of `$HWPROFILER_TOKEN_FILE`.
    """
    if isinstance(target, DeviceSpec):
        return target
    text = os.fspath(target)
    if text.startswith(REMOTE_PREFIX):
        return _remote_spec(text, token)
    if text in list_devices():
        return _load_toml(_builtin_dir() / f"{text}.toml")
    path = Path(text).expanduser()
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise DeviceError(f"device file {path} does not exist")
        return _load_toml(path)
    raise DeviceError(
        f"unknown device {text!r}: not a built-in ({', '.join(list_devices())}), "
        "not a .toml file, and not remote:http://HOST:PORT"
    )
