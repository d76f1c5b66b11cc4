"""The results of a search job: best policy per budget, a Pareto plot and a markdown report.

The best policy for a budget is the most accurate trial (any agent) whose latency is within the
budget, judged by the latency the trial was recorded with (the job's latency source); ties go to
the faster one. Everything is read back from the storage and `dense.json`, so `hilprune report`
works on a finished or interrupted run without evaluating anything.

Files (in the run directory): `best/<budget>.json` (policy JSON, `hilprune.policy/v1`, with the
trial's metrics), `pareto.png`, `report.md`, `summary.json`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from hilprune.budget import within_budget
from hilprune.errors import HilpruneError

from . import store
from .costs import markdown_costs, proxy_costs
from .job import Job, load_run_job
from .rundir import job_budgets, read_dense, write_json
from .store import TrialRecord

log = logging.getLogger(__name__)

BEST_DIR = "best"
PLOT_FILE = "pareto.png"
REPORT_FILE = "report.md"
SUMMARY_FILE = "summary.json"


def best_within(records: list[TrialRecord], budget_ms: float) -> TrialRecord | None:
    """The most accurate trial that meets the budget (ties: faster, then earlier)."""
    ok = [r for r in records if within_budget(r.latency_ms, budget_ms)]
    if not ok:
        return None
    return max(ok, key=lambda r: (r.accuracy, -r.latency_ms, -r.number))


def pareto_staircase(front: list[TrialRecord]) -> tuple[list[float], list[float]]:
    """Plot points of a Pareto front (sorted by latency) as steps: each accuracy holds until the next latency."""
    xs: list[float] = []
    ys: list[float] = []
    for r in front:
        if xs:
            xs.append(r.latency_ms)
            ys.append(ys[-1])
        xs.append(r.latency_ms)
        ys.append(r.accuracy)
    return xs, ys


def pareto_front(records: list[TrialRecord]) -> list[TrialRecord]:
    """Non-dominated trials (higher accuracy, lower latency), by increasing latency."""
    front: list[TrialRecord] = []
    best_acc = float("-inf")
    for r in sorted(records, key=lambda r: (r.latency_ms, -r.accuracy)):
        if r.accuracy > best_acc:
            front.append(r)
            best_acc = r.accuracy
    return front


def budget_file_name(label: str) -> str:
    return f"{label}.json"


def load_run(
    run_dir: str | Path, storage: Any = None, job: Job | None = None
) -> tuple[Job, dict[str, Any], dict[str, list[TrialRecord]]]:
    run_dir = Path(run_dir)
    job = job or load_run_job(run_dir)
    dense = read_dense(run_dir)
    if dense is None:
        raise HilpruneError(
            f"{run_dir}: no dense.json yet (the search never got past loading the model); rerun 'hilprune search'"
        )
    storage = storage or store.open_storage(job.storage_url)
    records = store.load_records(storage, job.name)
    return job, dense, records


def write_report(
    run_dir: str | Path,
    *,
    storage: Any = None,
    job: Job | None = None,
    dense: dict[str, Any] | None = None,
    plot: bool = True,
    artifacts: bool = True,
) -> dict[str, Any]:
    """Write best policies, plot, report and summary for a run; returns the summary."""
    from hilprune.policy import Policy

    run_dir = Path(run_dir)
    storage = storage or store.open_storage((job or load_run_job(run_dir)).storage_url)
    job, dense_read, records = load_run(run_dir, storage, job)
    dense = dense or dense_read
    budgets_ms: dict[str, float] = {label: b.ms for label, b in job_budgets(dense).items()}
    labels = [b for b in job.budgets if b in budgets_ms] + [b for b in budgets_ms if b not in job.budgets]
    all_records = [r for recs in records.values() for r in recs]
    dense_lat = float(dense["latency_ms"])

    best: dict[str, Any] = {}
    best_records: dict[str, TrialRecord] = {}
    for label in labels:
        bms = budgets_ms[label]
        rec = best_within(all_records, bms)
        path = run_dir / BEST_DIR / budget_file_name(label)
        if rec is None:
            best[label] = None
            if path.exists():
                path.unlink()
            continue
        best_records[label] = rec
        speedup = dense_lat / rec.latency_ms if rec.latency_ms > 0 else None
        try:
            policy = Policy.from_dict(rec.policy, source=f"trial {rec.ref}")
        except HilpruneError:
            log.warning("trial %s has no readable policy", rec.ref)
            best[label] = None
            continue
        policy.metrics = dict(policy.metrics) | {
            "accuracy": rec.accuracy,
            "accuracy_split": "val",
            "latency_ms": rec.latency_ms,
            "latency_source": rec.latency_source,
            "lut_latency_ms": rec.lut_latency_ms,
            "live_latency_ms": rec.live_latency_ms,
            "speedup": speedup,
            "budget": label,
            "budget_ms": bms,
            "dense_accuracy": dense.get("accuracy"),
            "dense_latency_ms": dense_lat,
            "agent": rec.agent,
            "trial": rec.number,
            "study": store.study_name(job.name, rec.agent),
            "job": job.name,
            "device": job.device,
            "device_fingerprint": rec.device_fingerprint,
            "macs": rec.macs,
            "params": rec.params,
        }
        policy.save(path)
        best[label] = {
            "agent": rec.agent,
            "accuracy": rec.accuracy,
            "latency_ms": rec.latency_ms,
            "speedup": speedup,
            "policy_path": str(path),
            "trial": rec.number,
            "budget_ms": bms,
            "latency_source": rec.latency_source,
        }

    trials = {agent: len(recs) for agent, recs in records.items()}
    front = pareto_front(all_records)
    summary = {
        "job": job.name,
        "run_dir": str(run_dir),
        "device": job.device,
        "latency_source": job.latency_source,
        "proxy": job.proxy,
        "proxy_cost": proxy_costs(store.load_costs(storage, job.name)),
        "dense": {"accuracy": float(dense["accuracy"]), "latency_ms": dense_lat, "lut_latency_ms": dense.get("lut_latency_ms")},
        "budgets_ms": {k: budgets_ms[k] for k in labels},
        "best": best,
        "trials": trials,
        "pareto": [{"agent": r.agent, "trial": r.number, "accuracy": r.accuracy, "latency_ms": r.latency_ms} for r in front],
        "storage": job.storage_url,
    }
    if plot:
        try:
            summary["plot"] = str(plot_pareto(run_dir / PLOT_FILE, records, dense, budgets_ms, best_records, job))
        except Exception as exc:  # a plot must never hide the results
            log.warning("could not draw the Pareto plot: %s", exc)
    (run_dir / REPORT_FILE).write_text(markdown_report(job, dense, summary, records, front))
    summary["report"] = str(run_dir / REPORT_FILE)
    write_json(run_dir / SUMMARY_FILE, summary)
    if artifacts:
        try:
            from .artifacts import attach_artifacts

            attach_artifacts(run_dir, storage=storage, job=job, summary=summary)
        except Exception as exc:
            log.warning("could not attach artifacts to the studies: %s", exc)
    return summary


# --- the plot -----------------------------------------------------------------------------------
def plot_pareto(
    path: Path,
    records: dict[str, list[TrialRecord]],
    dense: dict[str, Any],
    budgets_ms: dict[str, float],
    best: dict[str, TrialRecord],
    job: Job,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    cmap = plt.get_cmap("tab10")
    order = sorted(records, key=lambda a: (a != "uniform", a))
    for i, agent in enumerate(order):
        recs = records[agent]
        if not recs:
            continue
        color = cmap(i % 10)
        if agent == "uniform":
            pts = sorted(
                recs, key=lambda r: (-max(r.ratios().values(), default=0.0), r.latency_ms)
            )  # by ratio: the uniform curve
            ax.plot(
                [r.latency_ms for r in pts],
                [r.accuracy for r in pts],
                "-s",
                color="0.45",
                ms=4,
                lw=1.2,
                label=f"uniform baseline ({len(recs)})",
                zorder=2,
            )
            continue
        ax.scatter(
            [r.latency_ms for r in recs],
            [r.accuracy for r in recs],
            s=14,
            alpha=0.65,
            color=color,
            label=f"{agent} ({len(recs)})",
            zorder=3,
        )
    all_recs = [r for recs in records.values() for r in recs]
    front = pareto_front(all_recs)
    if front:
        xs, ys = pareto_staircase(front)
        ax.plot(xs, ys, "--", color="tab:purple", lw=1.0, alpha=0.8, label="Pareto front (all agents)", zorder=4)
    ax.scatter(
        [dense["latency_ms"]],
        [dense["accuracy"]],
        marker="*",
        s=180,
        color="gold",
        edgecolor="black",
        label="dense model",
        zorder=6,
    )
    for label, bms in budgets_ms.items():
        ax.axvline(bms, ls="--", lw=0.9, color="tab:red", alpha=0.7, zorder=1)
        ax.annotate(
            f"budget {label}",
            (bms, 0.02),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            color="tab:red",
            ha="right",
            va="bottom",
        )
    for label, rec in best.items():
        ax.scatter([rec.latency_ms], [rec.accuracy], s=110, facecolor="none", edgecolor="tab:red", lw=1.5, zorder=5)
        ax.annotate(
            f"best@{label}: {rec.agent}#{rec.number}",
            (rec.latency_ms, rec.accuracy),
            textcoords="offset points",
            xytext=(6, -10),
            fontsize=7,
        )
    ax.set_xlabel(f"latency (ms, {job.latency_source}) on {job.device}")
    ax.set_ylabel("validation accuracy")
    ax.set_title(
        f"{job.model}" + (f" on {job.dataset}" if job.dataset else "") + f": accuracy vs latency ({job.name})", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


# --- markdown -----------------------------------------------------------------------------------
def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown_report(
    job: Job, dense: dict[str, Any], summary: dict[str, Any], records: dict[str, list[TrialRecord]], front: list[TrialRecord]
) -> str:
    lines = [
        f"# Search report: {job.name}",
        "",
        f"- model: `{job.model}`" + (f" on `{job.dataset}`" if job.dataset else ""),
        f"- device: `{job.device}` (fingerprint `{dense.get('fingerprint_id') or '-'}`)",
        f"- latency source: `{job.latency_source}` (trials are judged by this latency); accuracy on the validation split"
        f" by the proxy `{job.proxy}` (envs.fidelity; best policies and the front hold policies scored at its top rung)",
        f"- dense model: accuracy {_fmt(float(dense['accuracy']))}, live latency {_fmt(float(dense['latency_ms']), 3)} ms"
        + (f", LUT {_fmt(dense.get('lut_latency_ms'), 3)} ms" if dense.get("lut_latency_ms") is not None else ""),
        f"- storage: `{job.storage_url}` (studies `{job.name}/<agent>`)",
        f"- written {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "",
        "## Best policy per budget",
        "",
        "| budget | budget ms | agent | trial | accuracy | latency ms | speedup | policy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, b in summary["best"].items():
        bms = summary["budgets_ms"].get(label)
        if b is None:
            lines.append(f"| {label} | {_fmt(bms, 3)} | - | - | - | - | - | no trial within the budget |")
        else:
            lines.append(
                f"| {label} | {_fmt(bms, 3)} | {b['agent']} | {b['trial']} | {_fmt(b['accuracy'])} | {_fmt(b['latency_ms'], 3)} | "
                f"{_fmt(b['speedup'], 2)}x | `{os.path.relpath(b['policy_path'], summary['run_dir'])}` |"
            )
    lines += [
        "",
        "## Agents",
        "",
        "| agent | trials | best accuracy | " + " | ".join(f"best within {b}" for b in summary["budgets_ms"]) + " |",
        "|---|---|---|" + "---|" * len(summary["budgets_ms"]),
    ]
    for agent in sorted(records):
        recs = records[agent]
        best_acc = max((r.accuracy for r in recs), default=None)
        cells = []
        for bms in summary["budgets_ms"].values():
            r = best_within(recs, bms)
            cells.append(f"{_fmt(r.accuracy)} ({_fmt(r.latency_ms, 3)} ms)" if r else "-")
        lines.append(f"| {agent} | {len(recs)} | {_fmt(best_acc)} | " + " | ".join(cells) + " |")
    lines += markdown_costs(job.proxy, summary.get("proxy_cost") or {})
    lines += ["", "## Pareto front (all agents)", "", "| latency ms | accuracy | agent | trial |", "|---|---|---|---|"]
    for r in front[:40]:
        lines.append(f"| {_fmt(r.latency_ms, 3)} | {_fmt(r.accuracy)} | {r.agent} | {r.number} |")
    if summary.get("plot"):
        lines += ["", f"![accuracy vs latency]({Path(summary['plot']).name})"]
    lines += [
        "",
        "Export a budget's best policy as a fine-tuned ONNX model with",
        f"`hilprune export {summary['run_dir']} --budget {next(iter(summary['budgets_ms']), '0.5')} --finetune-epochs 2 --out exported/`.",
        "",
    ]
    return "\n".join(lines)


def _short_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if len(rel) < len(path) else path


def print_summary(summary: dict[str, Any], console: Any = None) -> None:
    from rich.table import Table

    if console is None:
        from rich.console import Console

        console = Console()
    d = summary["dense"]
    table = Table(
        title=f"{summary['job']}: best policy per budget (dense: accuracy {d['accuracy']:.4f}, {d['latency_ms']:.3f} ms)"
    )
    for col in ("budget", "budget ms", "agent", "trial", "accuracy", "latency ms", "speedup", "policy"):
        table.add_column(col)
    for label, b in summary["best"].items():
        bms = summary["budgets_ms"].get(label)
        if b is None:
            table.add_row(label, _fmt(bms, 3), "-", "-", "-", "-", "-", "no trial within budget")
        else:
            table.add_row(
                label,
                _fmt(bms, 3),
                b["agent"],
                str(b["trial"]),
                _fmt(b["accuracy"]),
                _fmt(b["latency_ms"], 3),
                f"{_fmt(b['speedup'], 2)}x",
                _short_path(b["policy_path"]),
            )
    console.print(table)
    costs = summary.get("proxy_cost") or {}
    t2 = Table(title=f"trials per agent (accuracy proxy {summary.get('proxy') or '-'})")
    for col in ("agent", "complete trials", "pruned", "proxy s per policy", "proxy s by fidelity"):
        t2.add_column(col)
    for a, n in sorted(summary["trials"].items()):
        c = costs.get(a)
        by = ", ".join(f"{f}: {v['seconds']:.1f} s ({v['policies']})" for f, v in c["by_fidelity"].items()) if c else "-"
        t2.add_row(a, str(n), str(c["pruned"]) if c else "-", f"{c['s_per_policy']:.2f}" if c else "-", by)
    console.print(t2)
    if summary.get("plot"):
        console.print(f"Pareto plot: {summary['plot']}   report: {summary.get('report', '-')}")
