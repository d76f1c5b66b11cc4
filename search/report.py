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
    """Write best policies, plot, report and summary for a run; returns the summary (for a job of
    several devices, theirs side by side)."""
    from hilprune.policy import Policy

    run_dir = Path(run_dir)
    if job is None and (run_dir / "job.toml").is_file():
        job = load_run_job(run_dir)
    if job is not None and len(job.devices) > 1:
        return write_device_report(job)
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
            "precision": policy.graph_precision(),
        }

    trials = {agent: len(recs) for agent, recs in records.items()}
    front = pareto_front(all_records)
    summary = {
        "job": job.name,
        "run_dir": str(run_dir),
        "device": job.device,
        "latency_source": job.latency_source,
        "proxy": job.proxy,
        "precision": job.precision,
        "proxy_cost": proxy_costs(store.load_costs(storage, job.name)),
        "dense": {"accuracy": float(dense["accuracy"]), "latency_ms": dense_lat, "lut_latency_ms": dense.get("lut_latency_ms")},
        "budgets_ms": {k: budgets_ms[k] for k in labels},
        "accuracy_label": accuracy_label(job),
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


# --- several devices -----------------------------------------------------------------------------
DEVICES_REPORT = "devices.md"


def write_device_report(job: Job) -> dict[str, Any]:
    """The devices of a multi-device job side by side: per budget, each device's best policy, its
    latency on that device and its speedup over that device's own dense model. Each device's run
    directory keeps its full report."""
    per_device: dict[str, Any] = {}
    for sub in job.per_device():
        if (Path(sub.out) / "dense.json").is_file():
            per_device[sub.device] = write_report(sub.out, job=sub)
    side: dict[str, dict[str, Any]] = {}
    for label in job.budgets:
        side[label] = {d: (s["best"].get(label) or None) for d, s in per_device.items()}
    summary = {"job": job.name, "run_dir": job.out, "devices": per_device, "side_by_side": side, "multi_device": True}
    lines = [
        f"# Search report: {job.name}, one search per device",
        "",
        f"- model: `{job.model}`" + (f" on `{job.dataset}`" if job.dataset else ""),
        f"- accuracy: {accuracy_label(job)}; {FINETUNE_NOTE}",
        "- latency: each device's own, and the speedup over that device's own dense model",
        "",
        "| budget | device | dense ms | best agent | trial | val acc | latency ms | speedup |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, by_device in side.items():
        for d, b in by_device.items():
            dense_ms = per_device[d]["dense"]["latency_ms"]
            if b is None:
                lines.append(f"| {label} | `{d}` | {_fmt(dense_ms, 3)} | - | - | - | - | - |")
            else:
                lines.append(
                    f"| {label} | `{d}` | {_fmt(dense_ms, 3)} | {b['agent']} | {b['trial']} | {_fmt(b['accuracy'])} | "
                    f"{_fmt(b['latency_ms'], 3)} | {_fmt(b['speedup'], 2)}x |"
                )
    lines += [
        "",
        "Each device's full report: " + ", ".join(f"`{Path(s['run_dir']).name}/report.md`" for s in per_device.values()),
    ]
    (Path(job.out) / DEVICES_REPORT).write_text("\n".join(lines) + "\n")
    write_json(Path(job.out) / SUMMARY_FILE, summary)
    return summary


def print_device_summary(summary: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{summary['job']}: best policy per budget on each device", caption=FINETUNE_NOTE)
    for col in ("budget", "device", "dense ms", "agent", "trial", "val acc", "latency ms", "speedup"):
        table.add_column(col)
    for label, by_device in summary["side_by_side"].items():
        for d, b in by_device.items():
            dense_ms = _fmt(summary["devices"][d]["dense"]["latency_ms"], 3)
            if b is None:
                table.add_row(label, d, dense_ms, "-", "-", "-", "-", "-")
            else:
                table.add_row(label, d, dense_ms, b["agent"], str(b["trial"]), _fmt(b["accuracy"]), _fmt(b["latency_ms"], 3),
                              f"{_fmt(b['speedup'], 2)}x")  # fmt: skip
    console.print(table)


# --- the plot -----------------------------------------------------------------------------------
FINETUNE_NOTE = "accuracy before fine-tuning: `hilprune export` fine-tunes the pick and recovers most of the gap to dense"


def accuracy_label(job: Job) -> str:
    """What a trial's accuracy is: the validation split, by the job's proxy (its top rung), before
    the final fine-tune."""
    top = job.proxy.split(",")[-1]
    how = "BN recalibrated" if top.startswith("bn") else f"BN recalibrated, {top.split(':')[1]} distillation steps"
    return f"val accuracy ({how}; proxy {top}), before fine-tuning"


def _focus(ax: Any, recs: list[TrialRecord], dense: dict[str, Any], budgets_ms: dict[str, float]) -> None:
    """Axes on the region that matters: from the fastest trial to a little past the dense model and
    the loosest budget (a few 3x mispredictions must not squeeze the rest into a corner), and from
    the worst accuracy shown to the dense model's."""
    if not recs:
        return
    hi = 1.15 * max([float(dense["latency_ms"]), *budgets_ms.values()])
    lo = 0.9 * min(r.latency_ms for r in recs)
    ax.set_xlim(lo, hi)
    shown = [r.accuracy for r in recs if r.latency_ms <= hi]
    bottom = min(shown, default=0.0)
    ax.set_ylim(max(0.0, bottom - 0.03), min(1.0, max(float(dense["accuracy"]), *shown) + 0.03))
    beyond = sum(1 for r in recs if r.latency_ms > hi)
    if beyond:
        ax.annotate(f"{beyond} trial(s) slower than {hi:.3g} ms not shown", (0.99, 0.99), xycoords="axes fraction",
                    ha="right", va="top", fontsize=7, color="0.4")  # fmt: skip


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
        live = [r for r in recs if r.live_ratio is not None]
        lut = [r for r in recs if r.live_ratio is None]
        if live:
            ax.scatter([r.latency_ms for r in live], [r.accuracy for r in live], s=16, alpha=0.75, color=color,
                       label=f"{agent} ({len(recs)}; filled: measured live)", zorder=3)  # fmt: skip
        if lut:
            ax.scatter([r.latency_ms for r in lut], [r.accuracy for r in lut], s=16, alpha=0.65, facecolors="none",
                       edgecolors=color, label=None if live else f"{agent} ({len(recs)}; hollow: predicted)", zorder=3)  # fmt: skip
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
    ax.axhline(dense["accuracy"], ls=":", lw=0.9, color="goldenrod", zorder=1)
    _focus(ax, all_recs, dense, budgets_ms)
    ax.set_xlabel(f"latency (ms) on {job.device}: filled = measured live (paired with dense), hollow = LUT prediction")
    ax.set_ylabel(accuracy_label(job))
    ax.set_title(
        f"{job.model}" + (f" on {job.dataset}" if job.dataset else "") + f": accuracy vs latency ({job.name})\n{FINETUNE_NOTE}",
        fontsize=9,
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


def _blocks_lines(dense: dict[str, Any]) -> list[str]:
    """The report's line on residual blocks removed before the widths were searched (none: no line)."""
    removed = dense.get("removed_blocks") or []
    if not removed:
        return []
    ranking = dense.get("block_ranking") or []
    ranked = (
        "; val accuracy without each block alone (BN recalibrated), least harmful first: "
        + ", ".join(f"{b} {_fmt(float(a))}" for b, a in ranking)
        if ranking
        else ""
    )
    return [f"- residual blocks removed whole before the widths ({len(removed)}): {', '.join(removed)}{ranked}"]


def markdown_report(
    job: Job, dense: dict[str, Any], summary: dict[str, Any], records: dict[str, list[TrialRecord]], front: list[TrialRecord]
) -> str:
    lines = [
        f"# Search report: {job.name}",
        "",
        f"- model: `{job.model}`" + (f" on `{job.dataset}`" if job.dataset else ""),
        f"- device: `{job.device}` (fingerprint `{dense.get('fingerprint_id') or '-'}`)",
        f"- latency source: `{job.latency_source}` (trials are judged by this latency; live ones paired with the dense model)",
        f"- accuracy: {accuracy_label(job)}, dense {_fmt(float(dense['accuracy']))}; {FINETUNE_NOTE}",
        f"- proxy ladder `{job.proxy}` (envs.fidelity): best policies and the front hold policies scored at its top rung",
        f"- precision `{job.precision}` (envs.precision): "
        + (
            "every policy is its fp32 graph"
            if job.precision == "fp32"
            else "policies with INT8 groups are judged as their INT8 graph"
        ),
        f"- dense model: accuracy {_fmt(float(dense['accuracy']))}, live latency {_fmt(float(dense['latency_ms']), 3)} ms"
        + (f", LUT {_fmt(dense.get('lut_latency_ms'), 3)} ms" if dense.get("lut_latency_ms") is not None else ""),
        *_blocks_lines(dense),
        f"- storage: `{job.storage_url}` (studies `{job.name}/<agent>`)",
        f"- written {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "",
        "## Best policy per budget",
        "",
        "| budget | budget ms | agent | trial | val acc (before fine-tuning) | latency ms | speedup | policy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, b in summary["best"].items():
        bms = summary["budgets_ms"].get(label)
        if b is None:
            lines.append(f"| {label} | {_fmt(bms, 3)} | - | - | - | - | - | no trial within the budget |")
        else:
            lines.append(
                f"| {label} | {_fmt(bms, 3)} | {_agent_cell(b, summary)} | {b['trial']} | {_fmt(b['accuracy'])} | "
                f"{_fmt(b['latency_ms'], 3)} | {_fmt(b['speedup'], 2)}x | `{os.path.relpath(b['policy_path'], summary['run_dir'])}` |"
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


def _agent_cell(best: dict[str, Any], summary: dict[str, Any]) -> str:
    """The agent, with its pick's graph precision when the search was not fp32."""
    if summary.get("precision", "fp32") == "fp32":
        return str(best["agent"])
    return f"{best['agent']} ({best.get('precision', 'fp32')})"


def _short_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if len(rel) < len(path) else path


def print_summary(summary: dict[str, Any], console: Any = None) -> None:
    from rich.table import Table

    if summary.get("multi_device"):
        print_device_summary(summary, console)
        return
    if console is None:
        from rich.console import Console

        console = Console()
    d = summary["dense"]
    table = Table(
        title=f"{summary['job']}: best policy per budget (dense: val accuracy {d['accuracy']:.4f}, {d['latency_ms']:.3f} ms)",
        caption=f"accuracy: {summary.get('accuracy_label', 'validation')}; {FINETUNE_NOTE}",
    )
    for col in ("budget", "budget ms", "agent", "trial", "val acc", "latency ms", "speedup", "policy"):
        table.add_column(col)
    for label, b in summary["best"].items():
        bms = summary["budgets_ms"].get(label)
        if b is None:
            table.add_row(label, _fmt(bms, 3), "-", "-", "-", "-", "-", "no trial within budget")
        else:
            table.add_row(
                label,
                _fmt(bms, 3),
                _agent_cell(b, summary),
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
