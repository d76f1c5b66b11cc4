"""search/: jobs, budgets, the trial store, clipping, the agent registry (no model, no evaluator)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from hilprune.budget import lowest_budget, parse_budget, parse_budgets
from hilprune.errors import HilpruneError
from search import store
from search.agents import REGISTRY, make_agent
from search.agents.uniform import sweep_order
from search.clip import sequential_clip, smallest_ratio
from search.job import check_compatible, load_run_job, resolve_job


def test_budgets_parse_fractions_and_milliseconds() -> None:
    assert parse_budgets(["0.5,0.25", "1.2ms", "0.50"]) == ["0.5", "0.25", "1.2ms"]
    assert parse_budget(" 3 ms") == "3ms"
    assert parse_budget(1) == "1"
    for bad in ("2", "0", "fast", "-1ms", "0ms"):
        with pytest.raises(HilpruneError):
            parse_budget(bad)


def test_lowest_budget_rounds_the_floor_up() -> None:
    """The budget offered when one cannot be met is never below the floor (0.5706 is not met by 0.57)."""
    assert [lowest_budget(f) for f in (0.5706, 0.57, 0.57 + 1e-12, 0.001)] == ["0.58", "0.57", "0.57", "0.01"]
    assert parse_budget(lowest_budget(0.5706)) == "0.58"


def test_job_from_toml_and_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "j.toml").write_text(
        'model = "digits-cnn"\ndataset = "digits"\nbudgets = ["0.5", "2ms"]\n'
        'agents = ["uniform", "random"]\nevals = 7\n[agent_options.random]\nclip = true\n'
    )
    job = resolve_job(tmp_path / "j.toml", evals=9, agents=["uniform"])
    assert job.evals == 9 and job.agents == ["uniform"] and job.budgets == ["0.5", "2ms"]
    assert job.name == "digits-cnn-digits-ort-cpu-1t"
    assert Path(job.out) == tmp_path / "runs" / job.name
    assert job.storage_url == str(Path(job.out) / "study.journal")
    assert job.agent_options == {"random": {"clip": True}}
    job.write()
    again = load_run_job(job.out)
    assert again.identity() == job.identity() and again.agent_options == job.agent_options
    check_compatible(resolve_job(Path(job.out) / "job.toml", evals=20, budgets=["0.3"]), again)  # more evals, other budgets: fine
    with pytest.raises(HilpruneError, match="other settings"):
        check_compatible(resolve_job(Path(job.out) / "job.toml", device="ort-cpu-2t"), again)


def test_the_job_files_documented_example_loads_and_its_agent_options_build_agents(tmp_path: Path) -> None:
    import search.job

    example = search.job.__doc__.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "j.toml").write_text(example)
    job = resolve_job(tmp_path / "j.toml")
    assert job.agent_options and job.model == "digits-cnn"
    for name, options in job.agent_options.items():
        assert make_agent(name, **options).name == name  # a documented option the agent does not take fails here


def test_job_proxy_default_legacy_and_resume(tmp_path: Path) -> None:
    from envs.fidelity import DEFAULT_PROXY, LEGACY_PROXY, canonical_proxy

    job = resolve_job(None, model="digits-cnn", dataset="digits", out=str(tmp_path / "new"))
    assert job.proxy == canonical_proxy(DEFAULT_PROXY) and "proxy" in job.identity()
    assert resolve_job(None, model="digits-cnn", dataset="digits", out=str(tmp_path / "x"), proxy="kd:20").proxy == "bn:10,kd:20"
    with pytest.raises(HilpruneError, match="--proxy"):
        resolve_job(None, model="digits-cnn", dataset="digits", out=str(tmp_path / "y"), proxy="kd")
    # A run directory from before proxies (no proxy in job.toml) was scored by BN recalibration alone:
    old = tmp_path / "old"
    old.mkdir()
    (old / "job.toml").write_text(f'model = "digits-cnn"\ndataset = "digits"\nname = "old"\nout = "{old}"\n')
    assert load_run_job(old).proxy == LEGACY_PROXY
    resumed = resolve_job(None, model="digits-cnn", dataset="digits", out=str(old), name="old")
    assert resumed.proxy == LEGACY_PROXY  # continuing it without --proxy keeps its proxy
    with pytest.raises(HilpruneError, match="proxy"):
        check_compatible(resolve_job(None, model="digits-cnn", dataset="digits", out=str(old), proxy="kd:40"), load_run_job(old))


def test_job_val_size_default_legacy_and_resume(tmp_path: Path) -> None:
    from envs.fidelity import DEFAULT_VAL_SIZE, LEGACY_VAL_SIZE

    job = resolve_job(None, model="digits-cnn", dataset="digits", out=str(tmp_path / "new"))
    assert job.val_size == DEFAULT_VAL_SIZE and job.identity()["val_size"] == DEFAULT_VAL_SIZE
    job.write()
    assert load_run_job(job.out).val_size == DEFAULT_VAL_SIZE  # recorded, so a later default cannot change it
    assert resolve_job(None, model="digits-cnn", dataset="digits", out=str(tmp_path / "x"), val_size=300).val_size == 300
    # A run directory from before the default was the whole val split scored on the first 1000 images:
    old = tmp_path / "old"
    old.mkdir()
    (old / "job.toml").write_text(f'model = "digits-cnn"\ndataset = "digits"\nname = "old"\nout = "{old}"\n')
    resumed = resolve_job(None, model="digits-cnn", dataset="digits", out=str(old), name="old")
    assert resumed.val_size == load_run_job(old).val_size == LEGACY_VAL_SIZE
    check_compatible(resumed, load_run_job(old))  # continuing it without --val-size keeps its subset
    with pytest.raises(HilpruneError, match="val_size"):
        check_compatible(resolve_job(None, model="digits-cnn", dataset="digits", out=str(old), val_size=5000), load_run_job(old))


def test_job_records_the_refit_ridge_and_refuses_to_mix_ridges(tmp_path: Path) -> None:
    from hilprune.surgery.reconstruct import DEFAULT_RIDGE
    from search.job import LEGACY_LS_RIDGE

    job = resolve_job(None, model="digits-cnn", dataset="digits", out=str(tmp_path / "new"), proxy="ls,kd:40")
    assert job.ls_ridge == DEFAULT_RIDGE != LEGACY_LS_RIDGE and job.identity()["ls_ridge"] == DEFAULT_RIDGE
    job.write()
    assert load_run_job(job.out).ls_ridge == DEFAULT_RIDGE  # recorded, so a later default cannot change it
    check_compatible(resolve_job(None, model="digits-cnn", dataset="digits", out=job.out), load_run_job(job.out))
    # A proxy that does not refit has no ridge, recorded or not:
    assert resolve_job(None, model="digits-cnn", dataset="digits", out=str(tmp_path / "bn"), proxy="kd:40").ls_ridge is None
    # A run directory that refitted before the ridge was recorded refitted with the old one, and cannot be continued:
    old = tmp_path / "old"
    old.mkdir()
    (old / "job.toml").write_text(
        f'model = "digits-cnn"\ndataset = "digits"\nname = "old"\nout = "{old}"\nproxy = "ls:64,bn:10,kd:40"\n'
    )
    assert load_run_job(old).ls_ridge == LEGACY_LS_RIDGE
    with pytest.raises(HilpruneError, match=r"ridge 0\.001.*use another --out"):
        check_compatible(resolve_job(None, model="digits-cnn", dataset="digits", out=str(old), name="old"), load_run_job(old))
    # ...while an old one scored by BN recalibration alone continues as before:
    bn = tmp_path / "oldbn"
    bn.mkdir()
    (bn / "job.toml").write_text(f'model = "digits-cnn"\ndataset = "digits"\nname = "oldbn"\nout = "{bn}"\n')
    check_compatible(resolve_job(None, model="digits-cnn", dataset="digits", out=str(bn), name="oldbn"), load_run_job(bn))


@pytest.mark.parametrize(
    "flags, match",
    [
        ({}, "--model"),
        ({"model": "digits-cnn", "dataset": "digits", "val_size": 0}, "--val-size"),
        ({"model": "digits-cnn", "agents": ["nope"]}, "unknown agent"),
        ({"model": "digits-cnn"}, "--dataset"),
        ({"model": "digits-cnn", "latency_source": "x"}, "latency-source"),
        ({"model": "digits-cnn", "evals": 0}, "evals"),
    ],
)
def test_job_mistakes_are_user_errors(flags: dict, match: str) -> None:
    with pytest.raises(HilpruneError, match=match):
        resolve_job(None, **flags)


def test_store_grid_trials_and_records(tmp_path: Path) -> None:
    dists = store.distributions(["a", "b"], 0.9)
    assert dists["a"] == optuna.distributions.FloatDistribution(0.0, 0.9, step=0.05)
    assert store.snap(0.333, 0.9) == 0.35 and store.snap(0.97, 0.9) == 0.9 and store.snap(-0.1, 0.9) == 0.0
    assert store.grid_high(0.93) == 0.9
    url = str(tmp_path / "study.journal")
    study = store.get_study(url, "job/random")
    assert study.metric_names == ["accuracy", "latency_ms"]
    n = store.add_complete_trial(
        study,
        [0.9, 1.5],
        {"a": 0.35, "b": 0.0},
        dists,
        {
            "agent": "random",
            "latency_source": "lut",
            "policy": json.dumps({"groups": [{"name": "a", "requested_ratio": 0.3333}, {"name": "b", "requested_ratio": 0.0}]}),
        },
    )
    assert n == 0
    fresh = store.open_storage(url, cache=False)  # what another process sees
    recs = store.load_records(fresh, "job")
    assert list(recs) == ["random"]
    r = recs["random"][0]
    assert (r.accuracy, r.latency_ms, r.grid_params) == (0.9, 1.5, {"a": 0.35, "b": 0.0})
    assert r.ratios() == {"a": 0.3333, "b": 0.0}


def test_torn_journal_line_is_dropped(tmp_path: Path) -> None:
    url = str(tmp_path / "study.journal")
    study = store.get_study(store.open_storage(url, cache=False), "j/uniform")
    store.add_complete_trial(study, [0.5, 1.0], {"a": 0.1}, store.distributions(["a"], 0.9), {})
    with open(url, "ab") as f:
        f.write(b'{"op_code": 4, "worker_id": "x", "study_id": 0, "sta')  # kill -9 in the middle of a write
    Path(url + ".lock").symlink_to(url)  # and while holding the writer lock
    store.repair_journal(url)
    assert not Path(url + ".lock").exists()
    study = store.get_study(store.open_storage(url, cache=False), "j/uniform")
    store.add_complete_trial(study, [0.6, 0.9], {"a": 0.2}, store.distributions(["a"], 0.9), {})
    assert store.finished_count(store.get_study(store.open_storage(url, cache=False), "j/uniform")) == 2


def _toy_predict(names: list[str]):
    weights = {n: w for n, w in zip(names, (4.0, 2.0, 1.0, 3.0))}

    def predict(ratios: dict) -> float:  # monotone, decreasing in every ratio
        return 0.1 + sum(w * (1 - ratios[n]) ** 2 for n, w in weights.items())

    return predict


def test_sequential_clip_meets_the_budget() -> None:
    names = ["g0", "g1", "g2", "g3"]
    predict = _toy_predict(names)
    dense = predict({n: 0.0 for n in names})
    for budget in (0.3 * dense, 0.5 * dense, 0.9 * dense):
        clipped = sequential_clip(predict, names, [0.0, 0.1, 0.0, 0.2], budget, 0.9)
        assert predict(dict(zip(names, clipped))) <= budget
        assert all(c >= r - 1e-12 for c, r in zip(clipped, [0.0, 0.1, 0.0, 0.2]))  # ratios only go up
    loose = sequential_clip(predict, names, [0.1, 0.2, 0.3, 0.4], dense * 2, 0.9)
    assert loose == [0.1, 0.2, 0.3, 0.4]  # already within: untouched


def test_smallest_ratio_bisection() -> None:
    r, f = smallest_ratio(lambda x: 10 * (1 - x), 4.0, 0.0, 0.9, tol=1e-6)
    assert abs(r - 0.6) < 1e-5 and f <= 4.0
    r, f = smallest_ratio(lambda x: 10 * (1 - x), 0.5, 0.0, 0.9)
    assert r == 0.9 and f > 0.5  # out of reach: the max ratio, flagged by f > budget


def test_uniform_sweep_order_is_coarse_to_fine() -> None:
    order = sweep_order(18)
    assert sorted(order) == list(range(1, 19))
    assert order[0] in (9, 10) and set(order[:3]) <= {4, 5, 9, 10, 14, 15}


def test_registry_names_and_missing_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    import search.agents as agents

    assert set(REGISTRY) == {"uniform", "random", "tpe", "nsga2", "autoprune", "ppo", "sac"}
    assert make_agent("uniform").name == "uniform"
    assert make_agent("random", clip=False).clip is False
    monkeypatch.setitem(agents.AGENT_PATHS, "ppo", "agent.no_such_module:PPOAgent")
    with pytest.raises(HilpruneError, match="agent 'ppo' is not available: module agent.no_such_module"):
        make_agent("ppo")
    with pytest.raises(HilpruneError, match="bad options"):
        make_agent("uniform", nope=1)


def test_cli_user_mistakes_exit_2(capsys: pytest.CaptureFixture) -> None:
    from hilprune.cli.main import main

    assert main(["search", "--budget", "0.5"]) == 2
    assert main(["search", "-m", "digits-cnn", "-d", "digits", "--budget", "3"]) == 2
    assert main(["report", "/nonexistent/run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)


def test_resume_refuses_other_weights(tmp_path: Path) -> None:
    """A run started on one checkpoint (or random init) must not silently continue on another."""
    from types import SimpleNamespace

    from hilprune.errors import HilpruneError
    from search.rundir import dense_reference

    job = resolve_job(None, model="digits-cnn", dataset="digits", out=str(tmp_path / "run"), agents=["uniform"])
    Path(job.out).mkdir(parents=True)
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"weights v1")

    def evaluator(checkpoint: str | None) -> SimpleNamespace:
        return SimpleNamespace(  # the part of envs.interface.Evaluator that dense.json reads
            spec=SimpleNamespace(checkpoint=checkpoint),
            fingerprint={},
            fingerprint_id="0123456789abcdef",
            groups=[],
            dense_accuracy=0.9,
            dense_latency_ms=1.0,
            dense_lut_latency_ms=1.0,
            dense_macs=1,
            dense_measured_at=1.0,
            removed_blocks=[],
            block_ranking=[],
            check_budget=lambda b: b,
            use_reference=lambda ms: None,
        )

    first = dense_reference(job, evaluator(str(ckpt)))
    assert first["weights"].startswith("sha256:")
    assert dense_reference(job, evaluator(str(ckpt)))["weights"] == first["weights"]  # same weights: resumes
    ckpt.write_bytes(b"weights v2")
    with pytest.raises(HilpruneError, match="other weights"):
        dense_reference(job, evaluator(str(ckpt)))
    with pytest.raises(HilpruneError, match="other weights"):
        dense_reference(job, evaluator(None))


def test_demo_falls_back_to_a_reachable_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """On a CPU where half of digits-cnn's latency is out of reach, the demo still searches and ends well."""
    import json

    from envs.errors import BudgetError
    from envs.evaluator import PolicyEvaluator
    from hilprune.cli.main import main
    from hilprune.cli.search_cmd import DEMO_FALLBACK_BUDGET

    original = PolicyEvaluator.check_budget

    def check_budget(self, budget):  # noqa: ANN001, ANN202
        if budget.label == "0.5":
            raise BudgetError("budget 0.5 cannot be met (simulated slow CPU)")
        return original(self, budget)

    monkeypatch.setattr(PolicyEvaluator, "check_budget", check_budget)
    out = tmp_path / "demo"
    assert main(["demo", "--evals", "4", "--device", "sim-cpu", "--out", str(out), "--json"]) == 0
    printed = capsys.readouterr()
    summary = json.loads(printed.out)
    assert list(summary["best"]) == [DEMO_FALLBACK_BUDGET] and summary["best"][DEMO_FALLBACK_BUDGET] is not None
    assert "simulated slow CPU" in printed.err


def test_dense_measured_at_reads_the_time_or_the_creation_date():
    """Live checks of a job's policies refresh cached times older than its dense reference."""
    import time

    from search.rundir import CREATED_FORMAT, dense_measured_at

    assert dense_measured_at({"measured_at": 123.5, "created": "2026-01-01T00:00:00"}) == 123.5
    created = "2026-11-22T10:11:12"
    assert dense_measured_at({"created": created}) == time.mktime(time.strptime(created, CREATED_FORMAT))
    assert dense_measured_at({}) is None and dense_measured_at({"created": "yesterday"}) is None
