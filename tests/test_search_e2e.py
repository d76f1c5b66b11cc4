"""A short real search (digits-cnn on digits, uniform + random), then report, export and dashboard on it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("envs.evaluator", reason="envs.evaluator (PolicyEvaluator) is not available")

from hilprune.cli.main import main  # noqa: E402
from search import store  # noqa: E402
from search.job import load_run_job  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EVALS = 4
BUDGET = "0.5"  # of dense on the simulated device: the same on every machine
PROXY = "kd:5"  # a short distillation rung: the job field and flag end to end, at little cost
VAL_SIZE = 200  # of digits' 360 val images: the search scores on a subset, export on the whole split
TRIAL_ATTRS = {
    "macs",
    "params",
    "latency_source",
    "lut_latency_ms",
    "live_latency_ms",
    "reward",
    "agent",
    "seed",
    "device_fingerprint",
    "policy",
}


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> dict:
    capsys.readouterr()
    rc = main(list(args))
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("search") / "run"
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(
            [
                "search",
                "-m",
                "digits-cnn",
                "-d",
                "digits",
                "--device",
                "sim-cpu",
                "--budget",
                BUDGET,
                "--agent",
                "uniform,random",
                "--evals",
                str(EVALS),
                "--seed",
                "0",
                "--out",
                str(out),
                "--proxy",
                PROXY,
                "--val-size",
                str(VAL_SIZE),
                "--precision",
                "fp32",  # widths alone: the float path end to end (INT8 searches: tests/test_search_precision.py)
                "--no-progress",
                "--json",
            ]
        )
    assert rc == 0, buf.getvalue()
    return out, json.loads(buf.getvalue())


def test_search_records_trials_and_a_best_policy_within_budget(run: tuple[Path, dict]) -> None:
    out, summary = run
    job = load_run_job(out)
    assert job.proxy == "bn:10,kd:5" and summary["proxy"] == job.proxy
    assert set(summary["proxy_cost"]["all"]["by_fidelity"]) == {"kd:5"}
    storage = store.open_storage(job.storage_url, cache=False)
    assert set(store.study_names(storage, job.name)) == {"uniform", "random"}
    dists = None
    for agent in ("uniform", "random"):
        study = store.get_study(storage, store.study_name(job.name, agent), create=False)
        trials = study.get_trials(states=(store.TrialState.COMPLETE,))
        assert len(trials) == EVALS
        assert study.metric_names == ["accuracy", "latency_ms"]
        for t in trials:
            assert TRIAL_ATTRS <= set(t.user_attrs), set(TRIAL_ATTRS) - set(t.user_attrs)
            assert t.user_attrs["agent"] == agent and t.user_attrs["latency_source"] == "lut"
            assert t.user_attrs["fidelity"] == "kd:5" and t.user_attrs["fidelity_cost_s"] > 0  # uniform, random: the top rung
            policy = json.loads(t.user_attrs["policy"])
            assert policy["format"] == "hilprune.policy/v1"
            for g in policy["groups"]:  # params: the exact ratio snapped to the 0.05 grid
                assert t.params[g["name"]] == pytest.approx(store.snap(g["requested_ratio"], 0.9), abs=1e-9)
            dists = dists or t.distributions
            assert t.distributions == dists  # one search space for every agent
    budget_ms = summary["budgets_ms"][BUDGET]
    best = summary["best"][BUDGET]
    assert best is not None and best["latency_ms"] <= budget_ms
    assert Path(best["policy_path"]).is_file() and Path(best["policy_path"]).name == f"{BUDGET}.json"
    pol = json.loads(Path(best["policy_path"]).read_text())
    assert pol["metrics"]["latency_ms"] <= budget_ms and pol["metrics"]["agent"] == best["agent"]
    assert (out / "pareto.png").stat().st_size > 10_000 and (out / "report.md").is_file() and (out / "dense.json").is_file()
    measured_at = json.loads((out / "dense.json").read_text())["measured_at"]  # live checks refresh older cached times
    assert 0 < time.time() - measured_at < 3600
    # random search: every policy was clipped to the budget by predicted latency (in the dense reference's frame)
    rand = store.load_records(storage, job.name)["random"]
    assert all(r.lut_latency_ms is not None and r.latency_ms <= budget_ms * 1.0001 for r in rand)


def test_uniform_bisection_lands_within_2_percent(run: tuple[Path, dict]) -> None:
    out, summary = run
    job = load_run_job(out)
    storage = store.open_storage(job.storage_url, cache=False)
    study = store.get_study(storage, store.study_name(job.name, "uniform"), create=False)
    budget_ms = summary["budgets_ms"][BUDGET]
    hit = [t for t in study.trials if t.user_attrs.get("target_budget_ms") is not None]
    assert len(hit) == 1
    t = hit[0]
    ratios = {g["requested_ratio"] for g in json.loads(t.user_attrs["policy"])["groups"]}
    assert ratios == {t.user_attrs["uniform_ratio"]}  # one ratio for every group
    lat = json.loads(t.user_attrs["policy"])["metrics"]["latency_ms"]  # what the bisection used: the LUT, in the frame
    assert t.user_attrs["predicted_latency_ms"] == pytest.approx(lat, rel=1e-9)
    assert t.user_attrs["lut_latency_ms"] == pytest.approx(
        lat / (summary["dense"]["latency_ms"] / summary["dense"]["lut_latency_ms"])
    )
    assert lat <= budget_ms
    if t.user_attrs["within_tolerance"]:
        assert lat >= budget_ms * 0.98, (lat, budget_ms)
        return
    # The LUT's prediction is a noisy step function of the ratio: then no uniform ratio may land
    # within 2% under the budget (checked on every channel breakpoint).
    from envs.evaluator import PolicyEvaluator

    ev = PolicyEvaluator("digits-cnn", dataset="digits", device=job.device, proxy="bn", precision=job.precision)
    names = [g.name for g in ev.groups]
    keys, x = {}, 0.0
    while x <= 0.9:
        keys.setdefault(ev.kept({n: x for n in names}), x)
        x += 1 / 512
    preds = [ev.predict_latency({n: r for n in names}) for r in keys.values()]
    assert not any(budget_ms * 0.98 <= p <= budget_ms for p in preds)


def test_report_json(run: tuple[Path, dict], capsys: pytest.CaptureFixture) -> None:
    out, _ = run
    rep = run_cli(capsys, "report", str(out), "--json")
    assert {"accuracy", "latency_ms"} <= set(rep["dense"])
    assert rep["trials"] == {"uniform": EVALS, "random": EVALS}
    b = rep["best"][BUDGET]
    assert {"agent", "accuracy", "latency_ms", "speedup", "policy_path", "trial"} <= set(b)
    assert b["speedup"] == pytest.approx(rep["dense"]["latency_ms"] / b["latency_ms"])


def test_export_matches_torch_and_reports_test_accuracy(
    run: tuple[Path, dict], capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    import onnxruntime as ort
    import torch

    from hilprune.models import resolve_model
    from hilprune.policy import Policy
    from hilprune.surgery import load_pruned
    from search.ridge import PROBE_STEPS, RIDGES

    out, summary = run
    res = run_cli(
        capsys,
        "export",
        str(out),
        "--budget",
        BUDGET,
        "--finetune-epochs",
        "0.5",
        "--out",
        str(tmp_path / "exp"),
        "--precision",
        "fp32",  # the float graph, checked against torch below (INT8 exports: tests/test_cli_int8.py)
        "--json",
    )
    assert {"onnx", "test_accuracy", "latency_ms", "speedup", "policy"} <= set(res)
    assert res["max_abs_diff"] <= 1e-4 and res["latency_ms"] > 0
    assert res["meets_budget"] and res["latency_ms"] <= summary["budgets_ms"][BUDGET]  # paired with dense, live
    assert 0.5 < res["test_accuracy"] <= 1.0
    pol = Policy.load(res["policy"])
    m = pol.metrics
    assert {
        "accuracy_before_finetune",
        "accuracy_after_finetune",
        "predicted_latency_ms",
        "live_latency_ms",
        "speedup",
        "device_fingerprint",
    } <= set(m)
    assert m["accuracy_after_finetune"]["test"] == res["test_accuracy"]
    # --ridge auto (the default): each candidate ridge refitted and distilled briefly, the best kept
    probe = m["least_squares_ridge_probe"]
    assert set(probe["scores"]) == {f"{r:g}" for r in RIDGES} and probe["steps"] == PROBE_STEPS
    assert probe["scores"][f"{m['least_squares_ridge']:g}"] == max(probe["scores"].values())
    assert f"after {PROBE_STEPS} distillation steps from each" in (tmp_path / "exp" / "MODEL_CARD.md").read_text()
    # the default tie break: the pick is the most accurate trial or one within the margin of it (search.pick)
    assert m["pick"] == res["pick"] and res["pick"]["tie_break"] == "macs" and res["pick"]["ties"] >= 1
    assert m["accuracy_before_finetune"]["search_val"] >= res["pick"]["most_accurate_val"] - res["pick"]["tie_margin"] - 1e-9
    # one paired measurement, or the median of several when it landed near the budget
    assert res["live_measurements"] == len(m["live_ratios"]) in (1, 3)
    assert res["live_ratio"] == pytest.approx(float(np.median(m["live_ratios"])))
    assert m["finetune"]["distillation"]["teacher"] == "dense" and m["finetune"]["schedule"] == "cosine"
    assert "distilled from the dense model" in (tmp_path / "exp" / "MODEL_CARD.md").read_text()
    assert "that meets the budget live" in (tmp_path / "exp" / "MODEL_CARD.md").read_text()  # how it was chosen
    assert (tmp_path / "exp" / "MODEL_CARD.md").is_file()
    # the ONNX file computes what the saved pruned weights compute
    spec = resolve_model("digits-cnn", "digits")
    model, _ = load_pruned(spec, tmp_path / "exp" / "pruned.pt")
    x = torch.randn(1, *spec.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x).numpy()
    sess = ort.InferenceSession(res["onnx"], providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert float(np.max(np.abs(got - ref))) <= 1e-4


def test_export_refits_by_least_squares_unless_told_not_to(
    run: tuple[Path, dict], capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    import torch

    from hilprune.models import resolve_model
    from hilprune.policy import Policy
    from hilprune.surgery import load_pruned
    from hilprune.surgery.reconstruct import DEFAULT_RIDGE

    out, _ = run
    common = ["export", str(out), "--budget", BUDGET, "--finetune-epochs", "0", "--precision", "fp32", "--json"]
    plain = run_cli(capsys, *common, "--reconstruct", "0", "--out", str(tmp_path / "plain"))
    refit = run_cli(capsys, *common, "--out", str(tmp_path / "ls"))
    assert plain["least_squares_images"] == 0 and refit["least_squares_images"] == 64  # the default
    metrics = Policy.load(refit["policy"]).metrics
    assert metrics["least_squares_ridge"] == DEFAULT_RIDGE and metrics["accuracy_before_finetune"]["val_images"] == 360
    assert refit["trial"] == plain["trial"] and refit["agent"] == plain["agent"]
    assert Policy.load(refit["policy"]).metrics["least_squares_images"] == 64
    assert "refitted by least squares on 64 train images" in (tmp_path / "ls" / "MODEL_CARD.md").read_text()
    spec = resolve_model("digits-cnn", "digits")
    a, _ = load_pruned(spec, tmp_path / "plain" / "pruned.pt")
    b, _ = load_pruned(spec, tmp_path / "ls" / "pruned.pt")
    changed = [n for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()) if not torch.equal(p, q)]
    assert any(n.endswith("weight") for n in changed)  # the refitted layers' weights, not only BN statistics
    capsys.readouterr()
    assert main([*common, "--reconstruct", "-1", "--out", str(tmp_path / "bad")]) != 0
    assert "--reconstruct must be >= 0" in capsys.readouterr().err
    # with no fine-tune there is nothing for a probe to rank: auto refits with the default ridge (above);
    # a ridge given is used as it is, without a probe
    given = run_cli(capsys, *common, "--ridge", "0.01", "--out", str(tmp_path / "given"))
    assert given["least_squares_ridge"] == 0.01 and given["least_squares_ridge_probe"] is None
    assert metrics["least_squares_ridge_probe"] is None
    assert main([*common, "--ridge", "nope", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "--ridge must be 'auto' or a number > 0" in err and "Traceback" not in err


def test_export_of_a_pick_that_removes_no_channel_neither_refits_nor_probes(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    """At the dense latency, uniform's first trial keeps every channel (INT8 alone can meet a budget
    so): no layer loses inputs, so the refit and the ridge probe before the fine-tune are skipped."""
    from hilprune.policy import Policy

    out = tmp_path / "dense-budget"
    search = ["search", "-m", "digits-cnn", "-d", "digits", "--device", "sim-cpu", "--budget", "1.0", "--agent", "uniform"]
    assert main([*search, "--evals", "1", "--proxy", "bn", "--val-size", "100", "--out", str(out)]) == 0
    res = run_cli(
        capsys, "export", str(out), "--budget", "1.0", "--trial", "uniform:0", "--finetune-epochs", "0.05",
        "--precision", "fp32", "--out", str(tmp_path / "exp"), "--json",
    )  # fmt: skip
    policy = Policy.load(res["policy"])
    assert all(g.channels_after == g.channels_before for g in policy.groups)  # the trial prunes nothing
    assert res["least_squares_images"] == 0 and res["least_squares_ridge"] is None
    assert res["least_squares_ridge_probe"] is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_studies(run: tuple[Path, dict]) -> None:
    out, _ = run
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hilprune", "dashboard", str(out), "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 90
        studies = None
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"dashboard exited: {proc.stdout.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies = json.loads(r.read())["study_summaries"]
                break
            except OSError:
                time.sleep(0.5)
        assert studies is not None, "dashboard did not answer"
        job = load_run_job(out)
        by_name = {s["study_name"]: s for s in studies}
        assert set(by_name) == {f"{job.name}/uniform", f"{job.name}/random"}
        sid = by_name[f"{job.name}/random"]["study_id"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{sid}?after=0", timeout=10) as r:
            detail = json.loads(r.read())
        assert len(detail["trials"]) == EVALS
        names = {a["filename"] for a in detail["artifacts"]}
        assert {"pareto.png", f"best-{BUDGET}.json"} <= names
        assert all(any(a["filename"] == "policy.json" for a in t["artifacts"]) for t in detail["trials"])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_workers_share_one_study(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from search.agents import available

    if not available("tpe"):
        pytest.skip("search.agents.tpe is not available")
    out = tmp_path / "w"
    res = run_cli(
        capsys,
        "search",
        "-m",
        "digits-cnn",
        "-d",
        "digits",
        "--device",
        "sim-cpu",
        "--budget",
        BUDGET,
        "--agent",
        "tpe",
        "--evals",
        "6",
        "--workers",
        "2",
        "--out",
        str(out),
        "--proxy",
        "bn",
        "--no-progress",
        "--json",
    )
    assert res["trials"] == {"tpe": 6} and not res["failed"]
    job = load_run_job(out)
    study = store.get_study(store.open_storage(job.storage_url, cache=False), store.study_name(job.name, "tpe"), create=False)
    done = study.get_trials(states=(store.TrialState.COMPLETE,))
    assert len(done) == 6 and len(study.trials) == 6
    assert {t.user_attrs["seed"] for t in done} == {0, 1}  # the main process (seed 0) and one worker (seed + 1)


def test_a_job_of_several_devices_searches_each_and_reports_them_side_by_side(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`device = [...]`: one search per device, in its own run directory, and one table that puts
    each device's best policy and its speedup over that device's own dense model side by side."""
    fast = tmp_path / "fast-sim.toml"
    fast.write_text('name = "fast-sim"\nruntime = "simulated"\n[simulated]\ngmacs = 200.0\nplain_factor = 1.2\n')
    job = tmp_path / "job.toml"
    out = tmp_path / "multi"
    job.write_text(
        f'model = "digits-cnn"\ndataset = "digits"\ndevice = ["sim-cpu", "{fast}"]\nbudgets = ["0.7"]\n'
        f'agents = ["uniform"]\nevals = 2\nout = "{out}"\n'
    )
    res = run_cli(capsys, "search", "--job", str(job), "--no-progress", "--json")
    assert res["multi_device"] and set(res["devices"]) == {"sim-cpu", str(fast)}
    assert (out / "sim-cpu" / "report.md").is_file() and (out / "fast-sim" / "report.md").is_file()
    dense = {d: s["dense"]["latency_ms"] for d, s in res["devices"].items()}
    assert dense["sim-cpu"] > dense[str(fast)]  # each device measured its own dense model
    for d, best in res["side_by_side"]["0.7"].items():
        assert best is not None and best["latency_ms"] <= res["devices"][d]["budgets_ms"]["0.7"]
    table = (out / "devices.md").read_text()
    assert "`sim-cpu`" in table and "fast-sim" in table
    again = run_cli(capsys, "report", str(out), "--json")  # the parent directory reports the devices too
    assert again["side_by_side"] == res["side_by_side"]
    assert main(["export", str(out), "--budget", "0.7", "--out", str(tmp_path / "e")]) == 2  # export names one device


def test_without_a_terminal_progress_is_a_plain_line_per_tenth(tmp_path: Path) -> None:
    """In a log file rich draws no bars until the end: each agent prints a line at every tenth of its
    evaluations, in the order the agents run, with the time left until its last one."""
    import io
    import re

    from rich.console import Console

    from search.job import resolve_job
    from search.runner import run_search

    job = resolve_job(
        None,
        model="digits-cnn",
        dataset="digits",
        device="sim-cpu",
        budgets=["0.5"],
        agents=["uniform", "random"],
        evals=10,
        seed=0,
        proxy="bn",
        out=str(tmp_path / "run"),
    )
    log = io.StringIO()
    run_search(job, progress=True, console=Console(file=log, force_terminal=False, width=200))
    lines = [ln for ln in log.getvalue().splitlines() if re.match(r"(uniform|random): \d+/10, ", ln)]
    random_lines = [ln for ln in lines if ln.startswith("random:")]
    assert [ln.split(",")[0] for ln in random_lines] == [f"random: {n}/10" for n in range(1, 11)]
    assert all("left" in ln for ln in random_lines[:-1]) and "left" not in random_lines[-1]
    assert lines.index(random_lines[0]) > max(i for i, ln in enumerate(lines) if ln.startswith("uniform:"))


def test_settle_measures_again_only_near_the_budget() -> None:
    from search.export import SETTLE_BAND, SETTLE_MEASUREMENTS, settle

    def never() -> float:
        raise AssertionError("measured again far from the budget")

    assert settle(0.30, 0.50, never) == [0.30]  # clearly under
    assert settle(0.50 * (1 + 2 * SETTLE_BAND), 0.50, never) == [0.50 * (1 + 2 * SETTLE_BAND)]  # clearly over
    assert settle(0.30, None, never) == [0.30]  # no budget to judge against
    again = iter([0.49, 0.495])
    ratios = settle(0.507, 0.50, lambda: next(again))  # one reading 1.4% over, two under: the median meets it
    assert ratios == [0.507, 0.49, 0.495] and len(ratios) == SETTLE_MEASUREMENTS
    again = iter([0.52, 0.51])
    assert sorted(settle(0.49, 0.50, lambda: next(again)))[1] == 0.51  # one reading under, two over: refused


def test_export_live_rule_settles_a_search_measurement_near_the_budget(run: tuple[Path, dict], tmp_path: Path) -> None:
    from hilprune.models import resolve_model
    from hilprune.policy import Policy
    from hilprune.surgery import Surgeon
    from search.export import SETTLE_MEASUREMENTS, LiveLatency
    from search.rundir import read_dense

    out, summary = run
    dense = read_dense(out)
    budget_ms = summary["budgets_ms"][BUDGET]
    spec = resolve_model("digits-cnn", "digits")
    live = LiveLatency(
        out, Surgeon(spec.build(), spec.input_shape, spec.identity()), spec.input_shape, "sim-cpu", dense, budget_ms
    )
    live.path, live.cache, live.measurements = tmp_path / "live.json", {}, {}  # the run's own cache stays untouched
    readings: list[bool] = []

    class Pair:
        def __init__(self, ratio: float) -> None:
            self.ratio = ratio

    def scripted(onnx_bytes: bytes, *, fresh: bool = False, scheme: str | None = None) -> Pair:
        readings.append(fresh)
        return Pair(0.98 * budget_ms / live.reference_ms)

    live.measure_bytes = scripted  # type: ignore[method-assign]
    records = store.load_records(store.open_storage(load_run_job(out).storage_url), load_run_job(out).name)
    policy = Policy.from_dict(records["uniform"][0].policy)
    far = live(policy, recorded_ms=budget_ms * 1.5)
    assert far == pytest.approx(budget_ms * 1.5) and readings == []  # clearly over: the search's reading stands
    near = live(policy, recorded_ms=budget_ms * 1.014)  # 1.4% over in one reading: two fresh ones settle it
    assert readings == [True] * (SETTLE_MEASUREMENTS - 1)
    assert near == pytest.approx(0.98 * budget_ms) and live.measurements_of(policy) == SETTLE_MEASUREMENTS
    assert json.loads(live.path.read_text())["measurements"] == {live.key(policy): SETTLE_MEASUREMENTS}
    assert live(policy, recorded_ms=budget_ms * 1.014) == near and len(readings) == SETTLE_MEASUREMENTS - 1  # cached
