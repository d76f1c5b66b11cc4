"""Search agents judged after fine-tuning, at equal evaluations and equal live latency (Fashion-MNIST, ort-cpu-1t).

    python bench/compare_agents.py [--full | --quick] [--models resnet20,resnet56] [--budgets 0.5,0.3]
                                   [--agents uniform,random,tpe,ppo] [--evals 60] [--seeds N]
                                   [--finetune-epochs 0.25] [--ridge auto] [--skip-finetune] [--no-peer] [--jobs 2]
                                   [--latency-source hybrid] [--round-to 8] [--proxy ls,kd:40] [--precision fp32]
                                   [--results-name compare_agents_ft] [--out-dir runs/bench/compare_agents_ft]
                                   [--no-doc] [--markdown-only]

Protocol (the accuracy-proxy issue's). resnet20 at budgets 0.5 and 0.3 of the dense model's live
latency and resnet56 at 0.4, 3 seeds each, 60 evaluations per agent (uniform stops early when it has
nothing new to try), the search settings the README recommends (`--latency-source hybrid
--round-to 8`) and `hilprune search`'s accuracy proxy (`ls,kd:40`; runs before compare_agents_ls used kd:40). Each (model, budget, seed)
is one search job, run through the same code as `hilprune search` (`search.runner.run_search`, one
call per agent so each agent's wall time is its own) in `<out-dir>/<model>-b<budget>-s<seed>-...`;
rerunning the same command resumes it (a larger `--evals` extends it).

Per agent and job, the pick is the rule of `hilprune export`: the most accurate trial (by the proxy)
whose *live* latency, paired with the dense model, meets the budget. It is exported by
`search.export.export_run` with `--finetune-epochs` of distillation from the dense model (the same
steps, lr and seed for every agent), after the least-squares refit with `--ridge` (default auto:
chosen per pick by the export's short distillation probe, as `hilprune export` does), and its TEST
accuracy after that fine-tune is what the targets compare. Exports are kept in each run directory by
pick, epochs and ridge, so a rerun with another `--ridge` re-exports without searching again.
Beside the agents stands the peer a user would pick instead, `tp-global` (`bench/tp_global.py`):
Torch-Pruning's global magnitude pruner with round_to 8, its ratio searched until its export meets
the budget live, refitted and fine-tuned the same way (`--no-peer` leaves it out; a rerun with
another `--ridge` keeps its bisection).

`--precision int8` (or `mixed`) searches width and precision together (`hilprune search --precision`)
and exports each pick with `--precision auto`, so a pick marked INT8 ships INT8 in the scheme chosen by
measurement; the peer's architecture is then bisected on its INT8 graph (the scheme the agents' searches
measured) and its fine-tuned model is quantized the same way. The run directories and the results'
settings carry the precision, so an INT8 run never resumes an fp32 one. `--remove-blocks N` has every
search remove N residual blocks whole first (`hilprune search --remove-blocks`: the way to budgets that
widths cannot reach, such as resnet20 at 0.3 on a CPU where its narrowest widths still take 0.32 of
dense); the peer stays Torch-Pruning's width pruner.

Rows also keep the search's own view (`val_accuracy`, `latency_ms`: the best trial within the budget
by the latency the search recorded, measured live) for comparison with earlier runs.

Cost: ls,kd:40 on 5000 val images scores a resnet20 policy in about 5 s on one core (TPE and NSGA-II
stop weak ones at the bn:10 rung), resnet56 about 3x; an export with 0.25 epoch of fine-tuning takes
about 45 s for resnet20. The default run has not been timed as one. Its cells, each run alone with 3
seeds and the peer on this project's 2-vCPU AMD EPYC (2026-11-30 and 12-01, other work on the machine
at times): resnet56@0.4 131 min and resnet20@0.5 58 min with `--jobs 2`, resnet20@0.3 (with
`--remove-blocks 3`) 49 min with `--jobs 1`, all with ridge 0.1; `--ridge auto`'s probe adds about
20 s per resnet20 pick and a minute per resnet56 pick (15 picks per cell). About 4 hours in all, more
than the three hours the issue asks for. `--full` fine-tunes 1 epoch instead of 0.25. `--quick`:
resnet20 at 0.5, 1 seed, 16 evaluations per agent, 0.1 epoch (minutes; a smoke run of the protocol,
not its result). Models without a shipped Fashion-MNIST checkpoint run with random weights (the
table says so): their accuracies mean nothing.

Writes bench/results/<results-name>.json (a list of rows), bench/results/<results-name>.meta.json
(machine, arguments, dense references, targets), docs/img/<results-name>_pareto.png and the
`<results-name>` section of docs/benchmarks.md. The `compare_agents` section there is the earlier
protocol (accuracy before fine-tuning, bn:10 proxy, 150 evaluations).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DATASET = "fashion-mnist"
DEFAULT_AGENTS = "uniform,random,tpe,ppo"  # nsga2 and autoprune run when named
DEFAULT_BUDGETS = {"resnet20": "0.5,0.3", "resnet56": "0.4"}
DEFAULT_SEEDS = {"resnet20": 3, "resnet56": 3}
FULL_SEEDS = DEFAULT_SEEDS
TIMING_FILE = "bench_timing.json"
EXPORT_FILE = "bench_export.json"
RESULTS_NAME = "compare_agents_ft"  # `compare_agents`: the earlier protocol (accuracy before fine-tuning)
# The issue's targets, on test accuracy after the same fine-tune: PPO >= uniform + 2 points in these cells,
# >= random and TPE and >= Torch-Pruning's global pruner + 1 point in every cell, and within 0.3 point of
# the dense model at >= 2x live speedup.
PPO_VS_UNIFORM = (("resnet20", "0.5"), ("resnet20", "0.3"), ("resnet56", "0.4"))
PPO_VS_UNIFORM_POINTS = 2.0
PEER = "tp-global"  # bench.tp_global: Torch-Pruning's global magnitude pruner, held to the budget live
PEER_POINTS = 1.0
NEAR_DENSE_POINTS = 0.3
NEAR_DENSE_MAX_BUDGET = 0.5  # cells with >= 2x speedup by their budget
ISSUE_EVALS = 60  # evaluations per agent of the default run
COST_WEIGHT = {"resnet56": 3.0, "mobilenetv2": 2.0}  # relative cost per evaluation, to order --jobs work

log = logging.getLogger("compare_agents")


# --- helpers ------------------------------------------------------------------------------------
def _quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("search", "agent", "envs", "hwprofiler", "hilprune"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def _write(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


def weights_of(model: str, dataset: str = DATASET) -> tuple[str, str | None]:
    """('w<sha8>' or 'random', checkpoint path): the run directory name carries the weights, so a
    checkpoint shipped (or retrained) later never resumes a job searched on other weights."""
    from hilprune.models import resolve_model

    spec = resolve_model(model, dataset)
    if not spec.checkpoint:
        return "random", None
    h = hashlib.sha256(Path(spec.checkpoint).read_bytes()).hexdigest()[:8]
    return f"w{h}", str(spec.checkpoint)


def cells(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(model, budget, seed) jobs: `--cells model@budget[/seeds],...`, else every model at its budgets."""
    from hilprune.budget import parse_budgets

    def n_seeds(model: str) -> int:
        return args.seeds if args.seeds is not None else (FULL_SEEDS if args.full else DEFAULT_SEEDS).get(model, 1)

    wanted: list[tuple[str, str, int]] = []
    if args.cells:
        for item in [c.strip() for c in args.cells.split(",") if c.strip()]:
            model, _, rest = item.partition("@")
            budget, _, seeds = rest.partition("/")
            if not model or not budget or (seeds and not seeds.isdigit()):
                raise SystemExit(f"error: --cells takes model@budget[/seeds], got {item!r}")
            wanted.append((model, budget, int(seeds) if seeds else n_seeds(model)))
    else:
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            for b in args.budgets.split(",") if args.budgets else DEFAULT_BUDGETS.get(model, "0.5").split(","):
                wanted.append((model, b.strip(), n_seeds(model)))
    out = []
    for model, b, seeds in wanted:
        for budget in parse_budgets(b):
            out += [(model, budget, s) for s in range(seeds)]
    return out


# Settings that make two runs' rows comparable: rows of cells an earlier run measured with the same
# ones are kept in the results (and the table) when a later run adds other cells.
SAME_SETTINGS = ("evals", "proxy", "latency_source", "round_to", "finetune_epochs", "device", "agents", "skip_finetune", "peer")
# Settings earlier results did not record, at the value they ran with (the ridge varied with the
# run directory's era: such rows are never kept beside rows of a run that chose one).
DEFAULTS_BEFORE = {"precision": "fp32", "remove_blocks": "", "ridge": "not recorded"}


def ridge_tag(ridge: str, before: float | None) -> str:
    """What an export's cache key adds for `--ridge`: nothing for `before`, the ridge the exports of
    a run directory refitted with before `--ridge` existed (its job's `ls_ridge`: the search's
    proxy and the export shared one ridge then), so earlier run directories keep their exports."""
    from search.ridge import parse_ridge

    value = parse_ridge(ridge)
    if value is not None and value == before:
        return ""
    return "~ridge=auto" if value is None else f"~ridge={value:g}"


def earlier_rows(name: str, args: argparse.Namespace, todo: list[tuple[str, str, int]]) -> tuple[list, dict]:
    """Rows and meta of an earlier run under the same results name and settings, for cells not in `todo`."""
    from bench.common import RESULTS

    rows, meta = _read_list(RESULTS / f"{name}.json"), _read(RESULTS / f"{name}.meta.json")
    old = meta.get("args", {})
    keys = SAME_SETTINGS + tuple(DEFAULTS_BEFORE)
    if not rows or any(old.get(k, DEFAULTS_BEFORE.get(k)) != getattr(args, k) for k in keys):
        return [], {}
    mine = {(m, float(b), s) for m, b, s in todo}
    return [r for r in rows if (r["model"], r["budget"], r["seed"]) not in mine], meta


def _run_of(meta: dict[str, Any]) -> dict[str, Any]:
    """What the table says about an earlier run whose rows it keeps."""
    m = meta.get("machine", {})
    return {"command": m.get("command"), "date": m.get("date"), "cpu": m.get("cpu"), "wall_s": meta.get("total_wall_s")}


def _read_list(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text()) if path.is_file() else []
    except json.JSONDecodeError:
        return []
    return data if isinstance(data, list) else []


# --- one (model, budget, seed) job --------------------------------------------------------------
def run_dir_for(args: argparse.Namespace, model: str, budget: str, seed: int, wtag: str) -> Path:
    """One directory per job; the search settings are part of the name, so another setting never
    resumes (and mixes into) a job searched under other ones (`lut`, round_to 1: no suffix)."""
    settings = "" if (args.latency_source, args.round_to) == ("lut", 1) else f"-{args.latency_source}-r{args.round_to}"
    from envs.fidelity import LEGACY_PROXY, canonical_proxy

    proxy = canonical_proxy(args.proxy)
    if proxy != LEGACY_PROXY:
        settings += "-p" + proxy.replace(":", "").replace(",", "_")
    if args.precision != "fp32":
        settings += f"-{args.precision}"
    if args.remove_blocks:
        settings += f"-blocks{args.remove_blocks.replace(',', '_')}"
    return Path(args.out_dir) / f"{model}-b{budget}-s{seed}-{wtag}{settings}"


def search_cell(model: str, budget: str, seed: int, args: argparse.Namespace, wtag: str) -> Path:
    """Run (or resume) the job's search, one `run_search` call per agent, timing each."""

    from search.job import resolve_job
    from search.runner import run_search

    run_dir = run_dir_for(args, model, budget, seed, wtag)
    agents = [a.strip() for a in args.agents.split(",") if a.strip()]
    job = resolve_job(
        model=model,
        dataset=DATASET,
        device=args.device,
        precision=args.precision,  # fp32: widths alone; int8/mixed: width and precision (bench/search_precision.py)
        budgets=[budget],
        agents=agents,
        evals=args.evals,
        seed=seed,
        out=str(run_dir),
        val_size=args.val_size,
        latency_source=args.latency_source,
        round_to=args.round_to,
        proxy=args.proxy,
        remove_blocks=args.remove_blocks or None,
    )
    timing_path = run_dir / TIMING_FILE
    run_dir.mkdir(parents=True, exist_ok=True)
    timing = _read(timing_path)
    for agent in agents:
        t = timing.get(agent, {})
        done = scored(run_dir, job, agent)
        if done >= args.evals or (t.get("complete") and t.get("evals") == args.evals):
            print(
                f"  [{model}@{budget}/s{seed}] {agent:<10} {done} evaluations already done ({t.get('wall_s', 0):.0f} s)",
                flush=True,
            )
            continue
        w0, c0 = time.perf_counter(), time.process_time()
        outcome = run_search(dataclasses.replace(job, agents=[agent]), progress=False)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        ran = outcome.ran.get(agent, 0)
        t = {
            "wall_s": t.get("wall_s", 0.0) + wall,
            "cpu_s": t.get("cpu_s", 0.0) + cpu,
            "runs": t.get("runs", 0) + 1,
            "evals": args.evals,
            "complete": agent not in outcome.failed,
            "error": outcome.failed.get(agent),
        }
        timing[agent] = t
        _write(timing_path, timing)
        note = f" FAILED: {outcome.failed[agent]}" if agent in outcome.failed else ""
        print(f"  [{model}@{budget}/s{seed}] {agent:<10} +{ran} evaluations in {wall:.0f} s (CPU {cpu:.0f} s){note}", flush=True)
    job.write()  # job.toml lists every agent again (each run_search call wrote its own one-agent job)
    return run_dir


def scored(run_dir: Path, job: Any, agent: str) -> int:
    """Policies an agent finished scoring (complete, or stopped by a pruner at a cheap rung): `--evals`' unit."""
    import optuna

    from search import store

    if not (run_dir / "study.journal").is_file():
        return 0
    try:
        st = store.open_storage(job.storage_url)
        names = store.study_names(st, job.name)
        if agent not in names:
            return 0
        return store.finished_count(optuna.load_study(study_name=names[agent], storage=st))
    except Exception:  # noqa: BLE001 - a fresh or unreadable store: let run_search sort it out
        return 0


def results_cell(
    run_dir: Path, model: str, budget: str, seed: int, args: argparse.Namespace, wtag: str, dense_test: dict[str, float]
) -> list[dict[str, Any]]:
    """One row per agent: its search's own pick (best within the budget by the latency the search
    recorded) for the record, and the export rule's pick (best whose live latency meets the budget),
    fine-tuned the same way for every agent; then the peer's row (`--no-peer` leaves it out)."""
    from envs.fidelity import DEFAULT_VAL_SIZE
    from hilprune.models import resolve_model
    from hilprune.policy import Policy
    from hilprune.surgery import Surgeon
    from search import store
    from search.export import LiveLatency, export_run
    from search.job import load_run_job
    from search.report import best_within
    from search.ridge import parse_ridge
    from search.runner import read_dense

    job = load_run_job(run_dir)
    dense = read_dense(run_dir)
    if dense is None:
        raise SystemExit(f"error: {run_dir} has no readable dense.json; rerun this cell's search")
    budget_ms = float(dense["budgets_ms"][budget])
    dense_ms = float(dense["latency_ms"])
    records = store.load_records(store.open_storage(job.storage_url), job.name)
    timing = _read(run_dir / TIMING_FILE)
    spec = resolve_model(job.model, job.dataset, job.input_shape, job.num_classes, job.checkpoint)
    surgeon = Surgeon(
        spec.build(),
        spec.input_shape,
        spec.identity(),
        importance=job.importance,
        removed_blocks=dense.get("removed_blocks", []),  # as export_run builds it
    )
    live = LiveLatency(run_dir, surgeon, spec.input_shape, job.device, dense, budget_ms)
    exports = _read(run_dir / EXPORT_FILE)
    val_images = job.val_size or DEFAULT_VAL_SIZE  # what the proxy scored on (Fashion-MNIST's val split holds 5000)

    def policy_of(r: Any) -> Policy:
        return Policy.from_dict(r.policy, source=f"trial {r.ref}")

    rows = []
    for agent in [a.strip() for a in args.agents.split(",") if a.strip()]:
        recs = records.get(agent, [])
        t = timing.get(agent, {})
        row: dict[str, Any] = {
            "model": model,
            "budget": float(budget),
            "agent": agent,
            "seed": seed,
            "val_accuracy": None,
            "test_accuracy_finetuned": None,
            "latency_ms": None,
            "speedup": None,
            "evaluations": scored(run_dir, job, agent),
            "completed": len(recs),
            "wall_s": round(float(t.get("wall_s", float("nan"))), 2),
            "cpu_s": round(float(t.get("cpu_s", float("nan"))), 2),
            "budget_ms": budget_ms,
            "meets_budget_live": None,
            "trial": None,
            "lut_latency_ms": None,
            "macs": None,
            "val_accuracy_live_rule": None,
            "trial_live_rule": None,
            "latency_ms_live_rule": None,
            "test_accuracy_before_finetune": None,
            "finetune_epochs": None if args.skip_finetune else args.finetune_epochs,
            "export_latency_ms": None,
            "dense_latency_ms": dense_ms,
            "dense_val_accuracy": float(dense["accuracy"]),
            "dense_test_accuracy": dense_test.get(model),
            "weights": "random weights" if wtag == "random" else f"checkpoint {wtag[1:]}",
            "run_dir": str(run_dir),
            "quick": bool(args.quick),
            "error": t.get("error"),
        }
        rec = best_within(recs, budget_ms)  # what the search itself reports for the budget (its recorded latency)
        if rec is None:
            row["error"] = row["error"] or "no trial within the budget"
            rows.append(row)
            continue
        live_ms = live(policy_of(rec))
        row |= {
            "val_accuracy": rec.accuracy,
            "trial": rec.number,
            "lut_latency_ms": rec.lut_latency_ms,
            "macs": rec.macs,
            "latency_ms": live_ms,
            "speedup": dense_ms / live_ms if live_ms > 0 else None,
            "meets_budget_live": bool(live_ms <= budget_ms),
        }
        picked = pick_live(
            recs, budget_ms, live, policy_of, args.live_candidates, val_images, args.tie_break
        )  # `hilprune export`'s rule
        if picked is not None:
            row |= {
                "val_accuracy_live_rule": picked.record.accuracy,
                "trial_live_rule": picked.record.number,
                "latency_ms_live_rule": picked.live_ms,
                "pick": picked.to_dict(),
            }
        if picked is None:
            row["error"] = row["error"] or "no trial meets the budget live"
        elif not args.skip_finetune:  # the pick that meets the budget live is the one fine-tuned and compared
            pick = picked.record
            tag = f"@{args.finetune_epochs:g}{ridge_tag(args.ridge, job.ls_ridge)}"
            key, pkey = f"{agent}:{pick.number}{tag}", f"{','.join(map(str, policy_of(pick).key()))}{tag}"
            res = exports.get(key) or exports.get(pkey)  # the same policy fine-tunes to the same model (same seed)
            if res is None:
                w0 = time.perf_counter()
                res = export_run(
                    run_dir,
                    budget,
                    run_dir / "export" / agent,
                    trial=f"{agent}:{pick.number}",
                    finetune_epochs=args.finetune_epochs,
                    progress=False,
                    precision="auto",  # a pick marked INT8 ships INT8, as `hilprune export` does by default for it
                    ridge=parse_ridge(args.ridge),
                )
                res = {
                    k: res[k]
                    for k in (
                        "test_accuracy",
                        "test_accuracy_before_finetune",
                        "dense_test_accuracy",
                        "latency_ms",
                        "dense_latency_ms",
                        "val_accuracy",
                        "meets_budget",
                    )
                } | {
                    "precision": res.get("precision", "fp32"),
                    "scheme": res.get("scheme"),
                    "ridge": res.get("least_squares_ridge"),
                    "ridge_probe": res.get("least_squares_ridge_probe"),
                }
                res |= {"wall_s": time.perf_counter() - w0, "agent": agent, "trial": pick.number}
                exports[key] = exports[pkey] = res
                _write(run_dir / EXPORT_FILE, exports)
                print(
                    f"  [{model}@{budget}/s{seed}] {agent:<10} fine-tuned trial {pick.number}: test {res['test_accuracy']:.4f} "
                    f"(before {res['test_accuracy_before_finetune']:.4f}) in {res['wall_s']:.0f} s",
                    flush=True,
                )
            row |= {
                "test_accuracy_finetuned": res["test_accuracy"],
                "test_accuracy_before_finetune": res["test_accuracy_before_finetune"],
                "export_latency_ms": res["latency_ms"],
                "export_speedup": dense_ms / res["latency_ms"] if res["latency_ms"] > 0 else None,
                "export_meets_budget": res["meets_budget"],
                "finetune_wall_s": round(res["wall_s"], 1),
                "dense_test_accuracy": res["dense_test_accuracy"],
                "shipped": res.get("precision", "fp32"),
                "scheme": res.get("scheme"),
                "ridge": res.get("ridge", job.ls_ridge),  # exports cached before --ridge: the job's ridge
            }
        rows.append(row)
    if args.peer:
        scheme = None
        if args.precision != "fp32":  # the scheme the agents' searches priced INT8 graphs in
            marked = (policy_of(r) for recs in records.values() for r in recs if r.policy)
            scheme = next((live.scheme(p) for p in marked if p.int8_groups()), "qdq-u8s8")
        rows.append(peer_row(run_dir, job, spec, dense_ms, budget_ms, live, exports, rows[0], args, scheme))
    return rows


def peer_row(
    run_dir: Path,
    job: Any,
    spec: Any,
    dense_ms: float,
    budget_ms: float,
    live: Any,
    exports: dict,
    template: dict,
    args: Any,
    int8_scheme: str | None = None,
) -> dict[str, Any]:
    """Torch-Pruning's global pruner for this job's budget (bench.tp_global), refitted, fine-tuned
    (and with `int8_scheme` quantized) as the agents' picks are."""
    from bench.tp_global import run_peer
    from envs.fidelity import DEFAULT_LS_IMAGES, LEGACY_PROXY, split_reconstruct
    from hilprune.data import load_dataset
    from search.ridge import parse_ridge

    base = f"{PEER}@{args.finetune_epochs:g}"
    key = base + ridge_tag(args.ridge, job.ls_ridge)
    earlier = exports.get(base) if key != base else None  # refitted with another ridge: its bisection holds
    res = exports.get(key)
    if res is None:
        data = load_dataset(job.dataset, job.data_dir)  # the search's splits (job.val_size is a subset of val)
        res = run_peer(
            spec.build(),
            data,
            spec.input_shape,
            job.dataset,
            live.in_frame,
            budget_ms,
            finetune_epochs=0.0 if args.skip_finetune else args.finetune_epochs,
            seed=job.seed,
            round_to=args.round_to,
            refit_images=split_reconstruct(job.proxy or LEGACY_PROXY)[0] or DEFAULT_LS_IMAGES,  # as export_run refits
            int8_scheme=int8_scheme,
            device=job.device,
            ridge=parse_ridge(args.ridge),
            bisected=(earlier["ratio"], earlier["tried"], earlier["architectures"]) if earlier else None,
        ).to_dict()
        exports[key] = res
        _write(run_dir / EXPORT_FILE, exports)
        print(
            f"  [{job.model}@{template['budget']:g}/s{job.seed}] {PEER:<10} ratio {res['ratio']:.2f} "
            f"({res['architectures']} architectures, {len(res['tried'])} measured): {res['latency_ms']:.3f} ms, "
            f"test {res['test_accuracy']:.4f} (before {res['test_accuracy_before_finetune']:.4f})",
            flush=True,
        )
    row = {k: None for k in template} | {
        k: template[k] for k in ("model", "budget", "seed", "budget_ms", "dense_latency_ms", "dense_val_accuracy", "weights")
    }
    row |= {
        "agent": PEER,
        "run_dir": str(run_dir),
        "quick": bool(args.quick),
        "dense_test_accuracy": template.get("dense_test_accuracy"),
        "finetune_epochs": None if args.skip_finetune else args.finetune_epochs,
        "val_accuracy": res["val_accuracy"],
        "val_accuracy_live_rule": res["val_accuracy"] if res["meets_budget"] else None,
        "latency_ms": res["latency_ms"],
        "latency_ms_live_rule": res["latency_ms"] if res["meets_budget"] else None,
        "speedup": dense_ms / res["latency_ms"],
        "meets_budget_live": res["meets_budget"],
        "export_meets_budget": res["meets_budget"],
        "export_latency_ms": res["latency_ms"],
        "export_speedup": dense_ms / res["latency_ms"],
        "macs": res["macs"],
        "evaluations": len(res["tried"]),
        "wall_s": (earlier or res)["search_wall_s"],  # the bisection's cost where it was measured
        "peer": res,
        "shipped": res.get("shipped", "fp32"),
        "scheme": res.get("scheme"),
        "error": None if res["meets_budget"] else "no pruning ratio meets the budget live",
    }
    if not args.skip_finetune and res["meets_budget"]:
        row |= {
            "test_accuracy_finetuned": res["test_accuracy"],
            "test_accuracy_before_finetune": res["test_accuracy_before_finetune"],
            "finetune_wall_s": res["finetune_wall_s"],
        }
    return row


def run_cell(
    model: str, budget: str, seed: int, args: argparse.Namespace, wtag: str, dense_test: dict[str, float]
) -> list[dict[str, Any]]:
    """Search one (model, budget, seed) job and read its rows; the unit a `--jobs` worker runs."""
    from hilprune.errors import HilpruneError

    _worker_setup()
    try:
        run_dir = search_cell(model, budget, seed, args, wtag)
    except HilpruneError as exc:  # e.g. a budget below this CPU's LUT floor: the cell is reported, the run goes on
        print(f"  [{model}@{budget}/s{seed}] cannot run: {exc}", flush=True)
        return failed_rows(model, budget, seed, args, wtag, dense_test, str(exc))
    rows = results_cell(run_dir, model, budget, seed, args, wtag, dense_test)
    for r in rows:
        va = "-" if r["val_accuracy"] is None else f"{100 * r['val_accuracy']:.2f}%"
        te = "-" if r["test_accuracy_finetuned"] is None else f"{100 * r['test_accuracy_finetuned']:.2f}%"
        lat = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.3f} ms ({r['speedup']:.2f}x)"
        print(
            f"  [{model}@{budget}/s{seed}] -> {r['agent']:<10} val {va:>7}  live {lat}  test(FT) {te}  {r['evaluations']} evals  "
            f"{r['wall_s']:.0f} s" + (f"  [{r['error']}]" if r.get("error") else ""),
            flush=True,
        )
    return rows


def failed_rows(
    model: str, budget: str, seed: int, args: argparse.Namespace, wtag: str, dense_test: dict[str, float], error: str
) -> list[dict[str, Any]]:
    """A row per agent (and the peer) for a job that could not search, with the one-line reason."""
    agents = [a.strip() for a in args.agents.split(",") if a.strip()] + ([PEER] if args.peer else [])
    keys = ("val_accuracy", "test_accuracy_finetuned", "latency_ms", "speedup", "budget_ms", "dense_latency_ms")
    return [
        dict.fromkeys(keys)
        | {
            "model": model,
            "budget": float(budget),
            "agent": agent,
            "seed": seed,
            "evaluations": 0,
            "wall_s": 0.0,
            "dense_val_accuracy": None,
            "dense_test_accuracy": dense_test.get(model),
            "weights": "random weights" if wtag == "random" else f"checkpoint {wtag[1:]}",
            "quick": bool(args.quick),
            "error": error,
        }
        for agent in agents
    ]


def _worker_setup() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    _quiet()


def pick_live(
    recs: list[Any], budget_ms: float, live: Any, policy_of: Any, max_measured: int, val_images: int, tie_break: str
) -> Any:
    """`hilprune export`'s rule (`search.pick.pick_trial`), measuring at most `max_measured` trials the
    search did not measure live; None when no trial meets the budget live."""
    from hilprune.errors import HilpruneError
    from search.pick import pick_trial

    try:
        return pick_trial(recs, budget_ms, live, policy_of, val_images=val_images, tie_break=tie_break, max_measured=max_measured)
    except HilpruneError:
        return None


def dense_test_accuracy(model: str) -> float:
    from hilprune.data import load_dataset
    from hilprune.models import resolve_model
    from hilprune.train import evaluate

    spec = resolve_model(model, DATASET)
    return float(evaluate(spec.build(), load_dataset(DATASET).test))


# --- aggregation, targets, plot, markdown --------------------------------------------------------
def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from bench.common import mean_std

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["budget"], r["agent"]), []).append(r)
    out = []
    for (model, budget, agent), rs in groups.items():
        a: dict[str, Any] = {
            "model": model,
            "budget": budget,
            "agent": agent,
            "seeds": len(rs),
            "weights": rs[0]["weights"],
            "budget_ms": mean_std([r["budget_ms"] for r in rs])[0],
            "dense_test_accuracy": rs[0].get("dense_test_accuracy"),
            "dense_val_accuracy": mean_std([r["dense_val_accuracy"] for r in rs])[0],
            "dense_latency_ms": mean_std([r["dense_latency_ms"] for r in rs])[0],
        }
        for k in (
            "val_accuracy",
            "val_accuracy_live_rule",
            "test_accuracy_finetuned",
            "latency_ms",
            "speedup",
            "evaluations",
            "wall_s",
            "cpu_s",
            "export_speedup",
            "latency_ms_live_rule",
            "test_accuracy_before_finetune",
        ):
            m, sd, n = mean_std([r.get(k) for r in rs])
            a[k], a[k + "_std"], a[k + "_n"] = m, sd, n
        a["could_not_run"] = next((r["error"] for r in rs if r.get("run_dir") is None and r.get("error")), None)
        a["meets_live"] = sum(1 for r in rs if r.get("meets_budget_live"))
        a["missing"] = sum(1 for r in rs if r.get("val_accuracy") is None)
        a["live_rule_missing"] = sum(1 for r in rs if r.get("val_accuracy_live_rule") is None)
        a["int8_shipped"] = sum(1 for r in rs if r.get("shipped") == "int8")
        a["exported"] = sum(1 for r in rs if r.get("shipped"))
        out.append(a)
    return out


def _versus(p: dict[str, Any], q: dict[str, Any], margin: float, qname: str) -> dict[str, Any]:
    """PPO (p) against another agent or the peer (q) on test accuracy after the same fine-tune, each
    agent's pick being its most accurate trial that meets the budget live (mean over seeds). Met
    only when PPO has such a pick in every seed and its mean leads by `margin` points; a seed where
    the other has none counts for PPO."""
    pa, qa = p.get("test_accuracy_finetuned"), q.get("test_accuracy_finetuned")
    p_missing = p["seeds"] - int(p.get("test_accuracy_finetuned_n") or 0)
    q_missing = q["seeds"] - int(q.get("test_accuracy_finetuned_n") or 0)
    if pa is None or p_missing:
        return {
            "measured": f"PPO has no fine-tuned pick meeting the budget live in {p_missing} of {p['seeds']} seed(s)",
            "met": False,
            "weights": p["weights"],
            "seeds": p["seeds"],
        }
    if qa is None:
        return {
            "measured": f"PPO {100 * pa:.2f}; {qname} met the budget live in no seed",
            "met": True,
            "weights": p["weights"],
            "seeds": p["seeds"],
        }
    d = 100 * (pa - qa)
    note = f"; {qname} had no pick meeting the budget live in {q_missing} seed(s)" if q_missing else ""
    return {
        "measured": f"PPO {100 * pa:.2f}, {qname} {100 * qa:.2f}: {d:+.2f} points ({p['evaluations']:.0f} vs "
        f"{q['evaluations']:.0f} evaluations, {p['seeds']} seed(s){note})",
        "met": bool(d >= margin),
        "weights": p["weights"],
        "seeds": p["seeds"],
    }


def targets(agg: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, all on test accuracy after the same distillation fine-tune."""
    by = {(a["model"], a["budget"], a["agent"]): a for a in agg}
    cells_seen = sorted({(a["model"], a["budget"]) for a in agg}, key=lambda c: (c[0], -c[1]))
    out = []

    def versus(model: str, b: float, other: str, margin: float, label: str) -> None:
        p, q = by.get((model, b, "ppo")), by.get((model, b, other))
        t: dict[str, Any] = {"target": f"PPO >= {label}" + (f" + {margin:g} point(s)" if margin else "") + f", {model} at {b:g}"}
        if p and p.get("could_not_run"):
            t |= {"measured": f"the job could not search: {p['could_not_run']}", "met": None}
        else:
            t |= _versus(p, q, margin, label) if p and q else {"measured": "not run", "met": None}
        out.append(t)

    for model, b in PPO_VS_UNIFORM:
        versus(model, float(b), "uniform", PPO_VS_UNIFORM_POINTS, "uniform")
    for model, b in cells_seen:
        for other in ("random", "tpe"):
            versus(model, b, other, 0.0, other)
        versus(model, b, PEER, PEER_POINTS, "Torch-Pruning global")
    for model, b in cells_seen:
        p = by.get((model, b, "ppo"))
        if not p or b > NEAR_DENSE_MAX_BUDGET or p.get("could_not_run"):
            continue
        t: dict[str, Any] = {
            "target": f"PPO's pick (>= 2x live) fine-tuned within {NEAR_DENSE_POINTS} point of dense test accuracy, {model} at {b:g}"
        }
        if p["test_accuracy_finetuned"] is not None and p.get("dense_test_accuracy") is not None:
            d = 100 * (p["test_accuracy_finetuned"] - p["dense_test_accuracy"])
            sp = p.get("export_speedup")
            t |= {
                "measured": f"PPO {100 * p['test_accuracy_finetuned']:.2f}, dense {100 * p['dense_test_accuracy']:.2f}: "
                f"{d:+.2f} points at {f'{sp:.2f}x' if sp is not None else 'an unmeasured speedup'} live "
                f"({p['test_accuracy_finetuned_n']} of {p['seeds']} seed(s) fine-tuned)",
                "met": bool(d >= -NEAR_DENSE_POINTS and sp is not None and sp >= 2.0),
                "weights": p["weights"],
                "seeds": p["seeds"],
            }
        else:
            t |= {"measured": "no fine-tuned pick", "met": None if p["missing"] == p["seeds"] else False}
        out.append(t)
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Accuracy vs latency of every trial of the first seed, one panel per (model, budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from search import store
    from search.job import load_run_job
    from search.report import pareto_front, pareto_staircase
    from search.runner import read_dense

    rows = [r for r in rows if r.get("run_dir")]  # jobs that searched
    panels = sorted({(r["model"], r["budget"]) for r in rows}, key=lambda x: (x[0], -x[1]))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6), dpi=110, squeeze=False)
    agents = list(dict.fromkeys(r["agent"] for r in rows))
    cmap = plt.get_cmap("tab10")
    colors = {a: cmap(i % 10) for i, a in enumerate(agents)}
    for ax, (model, budget) in zip(axes[0], panels):
        first = min((r for r in rows if r["model"] == model and r["budget"] == budget), key=lambda r: r["seed"])
        run_dir = Path(first["run_dir"])
        job = load_run_job(run_dir)
        dense = read_dense(run_dir)
        if dense is None:
            continue  # a cell whose search left no dense.json has nothing to plot
        records = store.load_records(store.open_storage(job.storage_url), job.name)
        bms = float(dense["budgets_ms"][f"{budget:g}"])
        for agent in agents:
            c = colors[agent]
            recs = [r for r in records.get(agent, []) if r.latency_ms <= 1.6 * bms]
            if recs:
                ax.scatter([r.latency_ms for r in recs], [r.accuracy for r in recs], s=9, alpha=0.35, color=c)
                xs, ys = pareto_staircase(pareto_front(recs))
                ax.plot(xs, ys, "-", color=c, lw=1.4, label=f"{agent} ({len(records.get(agent, []))} completed)")
            picks = [
                r
                for r in rows
                if (r["model"], r["budget"], r["seed"], r["agent"]) == (model, budget, first["seed"], agent)
                and r.get("test_accuracy_finetuned") is not None
            ]
            if picks:  # the pick fine-tuned: test accuracy at its exported live latency
                ax.scatter(
                    [picks[0]["export_latency_ms"]],
                    [picks[0]["test_accuracy_finetuned"]],
                    marker="*",
                    s=110,
                    color=c,
                    edgecolor="black",
                    lw=0.6,
                    label=None if recs else f"{agent} (fine-tuned)",
                )
        ax.axvline(bms, ls="--", color="tab:red", lw=1)
        ax.annotate(
            f"budget {budget:g}",
            (bms, 0.02),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            color="tab:red",
            ha="right",
            va="bottom",
        )
        recorded = "LUT" if job.latency_source == "lut" else "LUT, or live where measured"
        ax.set_xlabel(f"latency on {job.device}, ms (dots: {recorded}; stars: live at export)", fontsize=8)
        ax.set_ylabel(f"dots: val acc. ({job.proxy or 'search'} proxy); stars: test acc. after FT", fontsize=8)
        ax.set_title(f"{model} ({first['weights']}), budget {budget:g} = {bms:.3f} ms, seed {first['seed']}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(
        "dots: trials at the latency their search recorded; lines: each agent's Pareto front;\n"
        "stars: each agent's pick (best meeting the budget live), fine-tuned, at its live latency",
        fontsize=8,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _pm(m: float | None, sd: float | None, n: int, scale: float = 1.0, digits: int = 2) -> str:
    if m is None:
        return "-"
    s = f"{scale * m:.{digits}f}"
    if n > 1 and sd is not None:
        s += f" ± {scale * sd:.{digits}f}"
    return s


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    from bench.common import header, load_line

    args = meta["args"]
    agg = aggregate(rows)
    tg = meta.get("targets") or targets(agg)
    quick = bool(args.get("quick"))
    source, round_to = args.get("latency_source", "lut"), args.get("round_to", 1)
    title = (
        f"## Search agents judged after fine-tuning ({args['evals']} evaluations per agent, proxy `{args.get('proxy')}`, "
        f"Fashion-MNIST, `{args.get('device', 'ort-cpu-1t')}`, round_to {round_to}{_extra_settings(args, ', ')})"
    )
    lines = [title + (" — QUICK RUN (reduced protocol)" if quick else "") + "\n", header(meta["machine"])]
    for e in meta.get("earlier", []):
        lines.append(
            f"Rows of other cells come from an earlier run with the same settings: `{e['command']}` ({e['date']}, {e['cpu']}, "
            f"{(e.get('wall_s') or 0) / 60:.0f} min).\n"
        )
    if meta.get("note"):
        lines.append(meta["note"] + "\n")
    n_cells = len({(r["model"], r["budget"], r["seed"]) for r in rows})
    load = meta.get("loadavg")
    if load:
        own = max(1, min(int(args.get("jobs") or 1), n_cells))
        lines.append(load_line(load, meta["machine"]["cores"], own))
    if quick:
        lines.append(
            f"**This is a `--quick` run, not the benchmark's protocol:** {args['models']}, budget(s) "
            f"{args.get('budgets') or 'per-model default'}, {args.get('seeds')} seed(s), {args['evals']} evaluations per agent, "
            f"fine-tune {args['finetune_epochs']:g} epoch. It shows the machinery end to end; it does not rank the agents. "
            "The benchmark is `python bench/compare_agents.py` (resnet20 at 0.5 and 0.3, resnet56 at 0.4, 3 seeds each, "
            f"{ISSUE_EVALS} evaluations per agent, 0.25 epoch of fine-tuning).\n"
        )
    else:
        lines.append(
            f"{n_cells} (model, budget, seed) job(s), {args['evals']} evaluations per agent, {args['finetune_epochs']:g} epoch of "
            f"fine-tuning per pick, {args.get('jobs', 1)} job(s) at once (one process and one thread each).\n"
        )
    ft = (
        "not fine-tuned (--skip-finetune)"
        if args.get("skip_finetune")
        else f"{args['finetune_epochs']:g} epoch of distillation from the dense model (batch 128, lr 0.01 cosine, T 4, "
        "alpha 0.9, seed = the job's seed): the same steps for every agent and the peer" + _ridge_words(args.get("ridge"))
    )
    lines.append(
        "**Protocol.** Each (model, budget, seed) is one `hilprune search` job (`search.runner.run_search`, one call per "
        f"agent, `--evals {args['evals']} --latency-source {source} --round-to {round_to} --proxy {args.get('proxy')}"
        f"{_extra_flags(args)}`); "
        "budgets are fractions of the dense model's live latency. Compared **at equal evaluations** (policies scored per "
        "agent; wall time differs and is shown). Each agent's pick is the rule of `hilprune export`: its most accurate trial "
        "(by the search's proxy on the validation subset) whose **live** latency, paired with the dense model, meets the "
        f"budget (up to {args.get('live_candidates', 10)} candidates measured)"
        + (
            ", or among the trials within one standard error of its accuracy the one keeping the most MACs that meets it too "
            "(`--tie-break macs`)"
            if args.get("tie_break") == "macs"
            else ""
        )
        + f". That pick is exported by `hilprune export`'s "
        f"code ({ft}) and its **test** accuracy is the number compared, so agents are judged at equal live latency "
        "(all within the budget) and equal fine-tuning. **tp-global** is the peer a user would pick instead: Torch-Pruning's "
        "global magnitude pruner (`BasePruner`, formerly `MetaPruner`, `global_pruning=True`, round_to "
        f"{round_to}, at most 0.9 of a layer), its ratio searched to the budget live (`bench/tp_global.py`: its answer is not "
        "monotone in the ratio, so the distinct architectures of a 0.01 grid are bisected by MACs), then "
        + ("refitted by least squares, " if _peer_refits(rows) else "")
        + "BN-recalibrated and fine-tuned the same way"
        + ("; it prunes widths only, without removing blocks" if args.get("remove_blocks") else "")
        + (
            "; its architecture is judged by its INT8 graph and its fine-tuned model quantized as the export quantizes "
            "an agent's pick"
            if _quantized(args)
            else ""
        )
        + "; its *evals* are its live measurements.\n"
    )
    lines += [
        "| model | weights | budget (ms) | agent | seeds | evals | val acc % (proxy) | live ms | speedup (export) | "
        "test acc % before FT | test acc % after FT | Δ dense | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in sorted(agg, key=lambda a: (a["model"], -a["budget"], _agent_order(a["agent"]))):
        dt = a.get("dense_test_accuracy")
        ft_acc = a["test_accuracy_finetuned"]
        delta = "-" if ft_acc is None or dt is None else f"{100 * (ft_acc - dt):+.2f}"
        none = a["seeds"] - int(a.get("test_accuracy_finetuned_n") or 0)
        after = _pm(ft_acc, a["test_accuracy_finetuned_std"], a["test_accuracy_finetuned_n"], 100)
        if a.get("could_not_run"):
            after = f"could not search: {a['could_not_run']}"
        elif none and not args.get("skip_finetune"):
            after = (after + "; " if ft_acc is not None else "") + f"no pick meets the budget live in {none} seed(s)"
        speed = _pm(a["export_speedup"], a["export_speedup_std"], a["export_speedup_n"], 1, 2)
        if speed != "-":
            speed += "x" + (f" ({a['int8_shipped']}/{a['exported']} INT8)" if _quantized(args) else "")
        lines.append(
            f"| {a['model']} | {a['weights']} | {a['budget']:g} ({_pm(a['budget_ms'], None, 1, 1, 3)}) | {a['agent']} | {a['seeds']} | "
            f"{a['evaluations']:.0f} | "
            f"{_pm(a['val_accuracy_live_rule'], a['val_accuracy_live_rule_std'], a['val_accuracy_live_rule_n'], 100)} | "
            f"{_pm(a['latency_ms_live_rule'], a['latency_ms_live_rule_std'], a['latency_ms_live_rule_n'], 1, 3)} | "
            f"{speed} | "
            f"{_pm(a['test_accuracy_before_finetune'], None, a['test_accuracy_before_finetune_n'], 100)} | {after} | {delta} | "
            f"{_pm(a['wall_s'], a['wall_s_std'], a['wall_s_n'], 1, 0)} |"
        )
    lines.append(
        "\n*val acc (proxy)*: the pick's accuracy by the search's proxy on the validation subset (tp-global's: after "
        + ("least-squares refitting and BN recalibration" if _peer_refits(rows) else "BN recalibration alone")
        + ", it has no proxy); *live ms*: the pick's "
        "live latency in the job's frame when it was picked; *speedup (export)*: dense over the exported model's live "
        "latency, measured again at export"
        + (
            " (of the shipped graph: INT8 where the export kept a scheme, with how many picks shipped INT8)"
            if _quantized(args)
            else ""
        )
        + ". Mean ± sample std over seeds (no ± with one seed)."
    )
    dense_lines = []
    for model in sorted({a["model"] for a in agg}):
        d = meta.get("dense", {}).get(model, {})
        dense_lines.append(
            f"{model} ({d.get('weights', '?')}): val {100 * d['val_accuracy']:.2f}% (search subset), "
            f"test {100 * d['test_accuracy']:.2f}%, live {d['latency_ms']:.3f} ms"
            if d
            else model
        )
    lines.append("\nDense models: " + "; ".join(dense_lines) + ".")
    if any(a["weights"] == "random weights" for a in agg):
        lines.append(
            "\n**random weights**: no shipped Fashion-MNIST checkpoint for that model when this ran, so its "
            "accuracies (and the targets judged on them) mean nothing; its latencies are real."
        )
    lines += ["", "### Targets", "", "| target | measured | met? |", "|---|---|---|"]
    for t in tg:
        met = "not run" if t["met"] is None else ("yes" if t["met"] else "**no**")
        caveats = [c for c, on in (("random weights", t.get("weights") == "random weights"), ("quick run", quick)) if on]
        if t["met"] is not None and caveats:
            met += f" ({', '.join(caveats)}: not the real verdict)"
        lines.append(f"| {t['target']} | {t['measured']} | {met} |")
    if meta.get("findings"):  # written by whoever ran it, from the rows above (the script does not interpret)
        lines += ["", "### What limits these numbers", "", *[f"- {f}" for f in meta["findings"]]]
    if meta.get("plot"):
        name = Path(meta["plot"]).name
        lines += [
            "",
            f"![accuracy vs latency per agent](img/{name})",
            "",
            f"`docs/img/{name}`: every trial of the first seed (dots; x is the latency the search recorded, y its proxy "
            "accuracy), each agent's Pareto front (lines), and each agent's pick fine-tuned (stars: test accuracy after "
            "fine-tuning at its live latency).",
        ]
    wall = meta.get("wall_note") or f"Total wall time of the command: {meta.get('total_wall_s', 0) / 60:.0f} min."
    lines.append(
        f"\n{wall} Rows per agent and seed: "
        f"`bench/results/{args.get('results_name') or RESULTS_NAME}.json`; run directories (reports, Pareto plots, optuna-dashboard): "
        f"`{os.path.relpath(args['out_dir'], Path(__file__).resolve().parent.parent)}/`."
    )
    return "\n".join(lines)


def _quantized(args: dict[str, Any]) -> bool:
    """Whether a run searched precision too (results from before the option ran fp32)."""
    return args.get("precision", "fp32") != "fp32"


def _extra_flags(args: dict[str, Any]) -> str:
    """The search flags beyond the protocol's defaults (precision, blocks), as `hilprune search` takes them."""
    out = f" --precision {args['precision']}" if _quantized(args) else ""
    return out + (f" --remove-blocks {args['remove_blocks']}" if args.get("remove_blocks") else "")


def _extra_settings(args: dict[str, Any], sep: str) -> str:
    """The same, for the section's title."""
    parts = [f"precision {args['precision']}"] if _quantized(args) else []
    parts += [f"{args['remove_blocks']} residual blocks removed"] if args.get("remove_blocks") else []
    parts += [f"export ridge {args['ridge']}"] if args.get("ridge") else []  # recorded since --ridge
    return "".join(sep + p for p in parts)


def _ridge_words(ridge: str | None) -> str:
    """How the refit before the fine-tune chose its ridge (`--ridge`), for the protocol (runs
    before the option did not record it: nothing is said)."""
    from search.ridge import PROBE_STEPS, RIDGES, parse_ridge

    if ridge is None:
        return ""
    value = parse_ridge(ridge)
    if value is None:
        return (
            f", after a least-squares refit whose ridge is chosen per pick among {', '.join(f'{r:g}' for r in RIDGES)} by a "
            f"{PROBE_STEPS}-step distillation probe scored on validation images (`--ridge auto`, as `hilprune export`)"
        )
    return f", after a least-squares refit with ridge {value:g}"


def _peer_refits(rows: list[dict[str, Any]]) -> bool:
    """Whether this run's peer went through the least-squares refit (runs before it did not record
    `refitted`; 0 layers where its architecture lost no channels)."""
    return any("refitted" in (r.get("peer") or {}) for r in rows)


def _agent_order(a: str) -> int:
    order = DEFAULT_AGENTS.split(",")
    return order.index(a) if a in order else len(order)


# --- main ---------------------------------------------------------------------------------------
def main() -> None:
    from envs.fidelity import DEFAULT_PROXY
    from envs.precision import MODES
    from search.pick import DEFAULT_TIE_BREAK, TIE_BREAKS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20,resnet56")
    ap.add_argument("--budgets", default=None, help="budgets for every model (default: resnet20 0.5,0.3; resnet56 0.4)")
    ap.add_argument(
        "--cells",
        default=None,
        help="jobs as model@budget[/seeds],... (e.g. resnet20@0.5/3,resnet56@0.4/1); overrides --models and --budgets",
    )
    ap.add_argument("--agents", default=DEFAULT_AGENTS)
    ap.add_argument("--evals", type=int, default=ISSUE_EVALS, help=f"evaluations per agent (default {ISSUE_EVALS})")
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 for every model (default 3)")
    ap.add_argument("--finetune-epochs", type=float, default=0.25, help="fine-tuning epochs per exported policy (--full: 1)")
    ap.add_argument("--jobs", type=int, default=2, help="cells searched at once, one process each")
    ap.add_argument("--full", action="store_true", help="1 epoch of fine-tuning per export instead of 0.25")
    ap.add_argument("--skip-finetune", action="store_true")
    ap.add_argument("--device", default="ort-cpu-1t")
    ap.add_argument(
        "--latency-source",
        choices=("lut", "hybrid", "live"),
        default="hybrid",
        help="the searches' latency (default hybrid: LUT, plus live for candidates of the best/Pareto set)",
    )
    ap.add_argument("--round-to", type=int, default=8, help="kept channels rounded to a multiple of this (default 8)")
    ap.add_argument(
        "--precision",
        choices=MODES,
        default="fp32",
        help="the searches' precision (default fp32: widths alone; int8/mixed: width and precision, picks exported "
        "with --precision auto, the peer quantized alike)",
    )
    ap.add_argument(
        "--remove-blocks",
        default="",
        help="residual blocks every search removes whole first, a count or names (hilprune search --remove-blocks); "
        "the peer prunes widths only, as Torch-Pruning's global pruner does",
    )
    ap.add_argument(
        "--proxy",
        default=DEFAULT_PROXY,
        help=f"the searches' accuracy proxy (default {DEFAULT_PROXY}, hilprune search's; runs in docs/benchmarks.md "
        "record theirs: kd:40 until compare_agents_ls, bn:10 before the accuracy-proxy issue)",
    )
    ap.add_argument(
        "--no-peer", dest="peer", action="store_false", help="leave out Torch-Pruning's global pruner (bench.tp_global)"
    )
    ap.add_argument(
        "--results-name",
        default=RESULTS_NAME,
        help="bench/results/<name>.json, docs/img/<name>_pareto.png and the docs section's name",
    )
    ap.add_argument("--live-candidates", type=int, default=10, help="trials measured live per agent for the export rule")
    ap.add_argument(
        "--ridge",
        default="auto",
        help="the least-squares refit's ridge for every export and the peer (hilprune export --ridge; default auto: "
        "chosen per pick by a short distillation probe; runs before it refitted with their search job's ridge)",
    )
    ap.add_argument(
        "--tie-break",
        choices=TIE_BREAKS,
        default=DEFAULT_TIE_BREAK,
        help="the export rule's tie break (hilprune export --tie-break; accuracy: the rule before)",
    )
    ap.add_argument(
        "--val-size",
        type=int,
        default=None,
        help="validation images per evaluation (default: hilprune search's, 5000; a resumed run keeps its own)",
    )
    ap.add_argument(
        "--out-dir", default=None, help="run directories (default: runs/bench/compare_agents; -quick, -full for --quick, --full)"
    )
    ap.add_argument("--quick", action="store_true", help="resnet20, budget 0.5, 1 seed, 16 evaluations, fine-tune 0.1 epoch")
    ap.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    ap.add_argument(
        "--markdown-only", action="store_true", help="rewrite the docs section from bench/results/<results-name>.json"
    )
    args = ap.parse_args()

    from bench.common import RESULTS, ROOT, preset, write_json, write_section
    from hilprune.errors import HilpruneError
    from search.ridge import parse_ridge

    try:
        parse_ridge(args.ridge)  # a bad value stops here, in one line, before any search
    except HilpruneError as exc:
        ap.error(str(exc))

    name = args.results_name

    if args.markdown_only:
        rows: list[dict[str, Any]] = json.loads((RESULTS / f"{name}.json").read_text())
        meta: dict[str, Any] = json.loads((RESULTS / f"{name}.meta.json").read_text())
        if not meta["args"].get("proxy"):
            raise SystemExit(
                f"error: {name} ran under the earlier protocol (agents judged before fine-tuning); "
                "its docs section stays as it was written, this template does not render it"
            )
        meta["targets"] = targets(aggregate(rows))  # the current rules, on the recorded rows
        write_json(f"{name}.meta", meta)
        write_section(name, markdown(rows, meta))
        print(f"wrote docs/benchmarks.md ({name} section)")
        return
    if args.full and args.quick:
        ap.error("--full and --quick exclude each other")
    if args.full:
        preset(ap, args, finetune_epochs=1.0)
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    if args.round_to < 1:
        ap.error("--round-to must be at least 1")
    if args.quick:
        preset(ap, args, models="resnet20", budgets="0.5", seeds=1, evals=16, finetune_epochs=0.1)
    if args.out_dir is None:
        # --full in its own folder: its exports are fine-tuned longer
        args.out_dir = str(
            ROOT
            / "runs"
            / "bench"
            / ("compare_agents_ft-quick" if args.quick else "compare_agents_ft-full" if args.full else "compare_agents_ft")
        )
    _worker_setup()  # this process evaluates too (the dense test accuracy; every cell with --jobs 1)
    from bench.common import machine

    info = machine()
    load_start = os.getloadavg()[0]
    t_start = time.perf_counter()
    todo = cells(args)
    models = list(dict.fromkeys(m for m, _, _ in todo))
    wtags = {m: weights_of(m) for m in models}
    kept, earlier = earlier_rows(name, args, todo)
    dense: dict[str, dict[str, Any]] = dict(earlier.get("dense", {}))
    if kept:
        print(f"keeping {len(kept)} row(s) of other cells from the earlier run with the same settings", flush=True)
    dense_test = {}
    for m in models:
        dense_test[m] = dense_test_accuracy(m)
        if wtags[m][0] == "random":
            print(
                f"note: no shipped {DATASET} checkpoint for {m}: random weights (accuracies are meaningless, latencies are real)",
                flush=True,
            )
    print(
        f"{len(todo)} job(s): "
        + ", ".join(f"{m}@{b}/s{s}" for m, b, s in todo)
        + f"; agents {args.agents}; {args.evals} evals each",
        flush=True,
    )
    rows_by_cell: dict[tuple[str, str, int], list[dict[str, Any]]] = {}

    def collect(cell: tuple[str, str, int], cell_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows_by_cell[cell] = cell_rows
        first = cell_rows[0]
        if first["dense_latency_ms"] is not None:  # a cell that could not search measured no dense reference
            dense.setdefault(
                cell[0],
                {
                    "weights": first["weights"],
                    "val_accuracy": first["dense_val_accuracy"],
                    "test_accuracy": dense_test[cell[0]],
                    "latency_ms": first["dense_latency_ms"],
                    "checkpoint": wtags[cell[0]][1],
                },
            )
        done = [r for c in todo if c in rows_by_cell for r in rows_by_cell[c]]
        write_json(name, kept + done)  # after every job: a long run shows its progress
        return kept + done

    rows = []
    if args.jobs == 1:
        for cell in todo:
            print(
                f"[{time.perf_counter() - t_start:6.0f} s] {cell[0]} budget {cell[1]} seed {cell[2]} ({wtags[cell[0]][0]})",
                flush=True,
            )
            rows = collect(cell, run_cell(*cell, args, wtags[cell[0]][0], dense_test))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # The costliest cells first (resnet56 is ~3x resnet20 per evaluation), so the pool ends together.
        order = sorted(todo, key=lambda c: -COST_WEIGHT.get(c[0], 1.0))
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_cell, *cell, args, wtags[cell[0]][0], dense_test): cell for cell in order}
            print(f"{len(order)} cell(s) on {args.jobs} worker processes", flush=True)
            for fut in as_completed(futures):
                cell = futures[fut]
                rows = collect(cell, fut.result())
                print(f"[{time.perf_counter() - t_start:6.0f} s] done {cell[0]} budget {cell[1]} seed {cell[2]}", flush=True)
    meta = {
        "machine": info,
        "args": vars(args),
        "dense": dense,
        "total_wall_s": time.perf_counter() - t_start,
        "loadavg": {"start": load_start, "end": os.getloadavg()[0]},
        "dense_measured_fresh": True,
        "earlier": (earlier.get("earlier", []) + [_run_of(earlier)]) if kept else [],
    }  # envs.latency measures the dense reference, not the cache
    meta["targets"] = targets(aggregate(rows))
    try:
        p = plot(rows, ROOT / "docs" / "img" / f"{name}_pareto.png")
        meta["plot"] = str(p) if p else None
    except Exception as exc:  # noqa: BLE001 - a plot must not lose the numbers
        print(f"could not draw the plot: {exc}", flush=True)
    path = write_json(name, rows)
    write_json(f"{name}.meta", meta)
    print(f"wrote {path} and {RESULTS / f'{name}.meta.json'}")
    for t in meta["targets"]:
        print(f"target: {t['target']}: {t['measured']} -> {t['met']}")
    if not args.no_doc:
        write_section(name, markdown(rows, meta))
        print(f"wrote docs/benchmarks.md ({name} section)")
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
