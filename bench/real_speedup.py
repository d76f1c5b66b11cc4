"""Real speedup of exported pruned models: MACs vs LUT-predicted vs measured (live) latency.

    python bench/real_speedup.py [--model resnet20] [--budgets 0.7,0.5,0.3] [--runs RUN_DIR]
                                 [--search-agents ppo] [--search-evals 60] [--odd-pairs 3] [--align 8]
                                 [--repeats 3] [--device ort-cpu-1t] [--round-to 8] [--results-name real_speedup]
                                 [--quick] [--no-doc]

For each budget (a fraction of the dense model's live latency), two policies are pruned, exported
to ONNX (`hilprune.export.export_onnx`, checked against torch) and measured on the device:

- `uniform`: one ratio for every group, bisected on the LUT to the budget (the uniform agent's
  `ratio_for_budget`, what `hilprune search --agent uniform --round-to N` evaluates for that
  budget; `--round-to`, default 8 as the README recommends);
- `searched`: the most accurate trial within the budget (by its recorded latency, what `hilprune
  report` picks) from `--runs` (a search run directory, or a folder of them such as a
  `bench/compare_agents.py` out-dir; the model must match), else from a short search run here
  (`--search-agents`, `--search-evals` per agent, all budgets in one job, latency source hybrid,
  `--round-to`, under runs/bench/real_speedup/).

Then `--odd-pairs` random policies whose every group keeps an *odd* number of channels (ratios
with round_to=1), each against an *aligned* twin (kept channels multiples of `--align`, chosen
greedily so its MACs are as close as possible): same FLOPs, different devices kernels.

Per model: MACs reduction (1 - MACs/dense), LUT-predicted latency reduction (LUT predictor, the
search's latency), measured reduction (live onnxruntime median, `--repeats` fresh measurements
interleaved over all models, median of them), the three as speedups, and whether the measured
speedup is within 10% of the predicted one (and of the MACs one). Latency does not depend on the
weights (random weights are used when there is no shipped checkpoint; the table says so).

Writes bench/results/<results-name>.json and the `<results-name>` section of docs/benchmarks.md
(`real_speedup` by default).
`--quick`: budgets 0.5 only, 20 search evaluations, 2 odd pairs, 2 repeats.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DATASET = "fashion-mnist"
OUT = Path(__file__).resolve().parent.parent / "runs" / "bench" / "real_speedup"


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("search", "agent", "envs", "hwprofiler", "hilprune"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --- policies -----------------------------------------------------------------------------------
def uniform_policies(ev: Any, budgets: dict[str, float]) -> dict[str, tuple[tuple[int, ...], dict[str, Any]]]:
    """budget label -> (kept channels, info) of the uniform bisection policy."""
    import optuna

    from search.agents.uniform import UniformAgent
    from search.context import SearchContext

    ctx = SearchContext(
        ev,
        [ev.resolve_budget(label) for label in budgets],
        storage=optuna.storages.InMemoryStorage(),
        job_name="real_speedup",
        out_dir=OUT,
    )
    agent = UniformAgent()
    out = {}
    for label, ms in budgets.items():
        r, pred = agent.ratio_for_budget(ctx, ms)
        kept = ev.kept({g.name: r for g in ev.groups})
        out[label] = (kept, {"uniform_ratio": r, "source": "uniform bisection on the LUT"})
    return out


def _run_dirs(path: Path) -> list[Path]:
    if (path / "job.toml").is_file():
        return [path]
    return sorted(p.parent for p in path.glob("*/job.toml"))


def searched_from_runs(runs: Path, model: str, budgets: dict[str, float]) -> dict[str, tuple[tuple[int, ...], dict[str, Any]]]:
    """budget label -> the most accurate trial within that budget over the run directories that have it."""
    from search import store
    from search.job import load_run_job
    from search.report import best_within
    from search.runner import read_dense

    best: dict[str, tuple[Any, Path]] = {}
    for rd in _run_dirs(runs):
        job = load_run_job(rd)
        dense = read_dense(rd)
        if job.model != model or not dense:
            continue
        records = store.load_records(store.open_storage(job.storage_url), job.name)
        recs = [r for rs in records.values() for r in rs]
        for label in budgets:
            if label not in (dense.get("budgets_ms") or {}):
                continue
            rec = best_within(recs, float(dense["budgets_ms"][label]))
            if rec is not None and (label not in best or rec.accuracy > best[label][0].accuracy):
                best[label] = (rec, rd)
    out = {}
    for label, (rec, rd) in best.items():
        kept = tuple(int(g["channels_after"]) for g in rec.policy["groups"])
        out[label] = (
            kept,
            {
                "source": f"{rd.name}: {rec.agent} trial {rec.number}",
                "val_accuracy": rec.accuracy,
                "agent": rec.agent,
                "trial": rec.number,
                "run_dir": str(rd),
            },
        )
    return out


def searched_by_search(
    model: str, labels: list[str], args: argparse.Namespace, wtag: str
) -> dict[str, tuple[tuple[int, ...], dict[str, Any]]]:
    from search import store
    from search.job import resolve_job
    from search.report import best_within
    from search.runner import read_dense, run_search

    out_dir = OUT / f"search-{model}-{wtag}-hybrid-r{args.round_to}"
    job = resolve_job(
        model=model,
        dataset=DATASET,
        device=args.device,
        precision="fp32",  # what pruning alone buys (bench/search_precision.py: precision)
        budgets=labels,
        agents=args.search_agents.split(","),
        evals=args.search_evals,
        seed=0,
        out=str(out_dir),
        latency_source="hybrid",
        round_to=args.round_to,
    )
    t0 = time.perf_counter()
    run_search(job, progress=False)
    print(
        f"short search ({args.search_agents}, {args.search_evals} evaluations each) in {time.perf_counter() - t0:.0f} s -> {out_dir}",
        flush=True,
    )
    dense = read_dense(out_dir)
    if dense is None:
        raise SystemExit(f"error: the short search left no readable dense.json in {out_dir}")
    records = store.load_records(store.open_storage(job.storage_url), job.name)
    recs = [r for rs in records.values() for r in rs]
    out = {}
    for label in labels:
        rec = best_within(recs, float(dense["budgets_ms"][label]))
        if rec is None:
            continue
        kept = tuple(int(g["channels_after"]) for g in rec.policy["groups"])
        out[label] = (
            kept,
            {
                "source": f"short search: {rec.agent} trial {rec.number}",
                "val_accuracy": rec.accuracy,
                "agent": rec.agent,
                "trial": rec.number,
                "run_dir": str(out_dir),
            },
        )
    return out


def kernel_macs(ev: Any, kept: tuple[int, ...]) -> int:
    return int(sum(k.macs for k in ev.kernels_for(list(kept))))


def odd_policy(ev: Any, rng: Any, low: float = 0.35) -> tuple[int, ...]:
    """Every group keeps a random odd number of channels in [low * channels, channels - 1]."""
    kept = []
    for g in ev.groups:
        c = int(g.channels)
        lo = max(1, int(math.ceil(low * c)))
        odds = [k for k in range(lo, c) if k % 2 == 1]
        kept.append(int(rng.choice(odds)) if odds else c)
    return tuple(kept)


def aligned_twin(ev: Any, kept: tuple[int, ...], align: int) -> tuple[int, ...]:
    """Kept channels that are multiples of `align` (at least `align`, at most the group's channels),
    with MACs as close as possible to `kept`'s (greedy: start from the nearest multiples, then move
    one group by one step while that brings the MACs closer)."""
    target = kernel_macs(ev, kept)
    chans = [int(g.channels) for g in ev.groups]

    def legal(i: int, k: int) -> bool:
        return min(align, chans[i]) <= k <= chans[i] and (k % align == 0 or k == chans[i])

    cur = [min(chans[i], max(min(align, chans[i]), int(round(k / align)) * align)) for i, k in enumerate(kept)]
    err = abs(kernel_macs(ev, tuple(cur)) - target)
    for _ in range(100):
        best = None
        for i in range(len(cur)):
            for step in (-align, align):
                k = cur[i] + step
                if not legal(i, k):
                    continue
                trial = cur[:i] + [k] + cur[i + 1 :]
                e = abs(kernel_macs(ev, tuple(trial)) - target)
                if e < err and (best is None or e < best[0]):
                    best = (e, trial)
        if best is None:
            break
        err, cur = best
    return tuple(cur)


# --- measuring ----------------------------------------------------------------------------------
def build(ev: Any, kept: tuple[int, ...], path: Path) -> dict[str, Any]:
    """Surgery + verified ONNX export of the policy keeping `kept`; MACs, params, LUT prediction."""
    from hilprune.export import export_onnx

    policy = ev.surgeon.policy([1.0 - k / g.channels for k, g in zip(kept, ev.groups)], round_to=1, max_ratio=1.0)
    assert tuple(policy.key()) == tuple(kept), (policy.key(), kept)
    res = ev.surgeon.apply(policy)
    exp = export_onnx(res.model, ev.input_shape, path)
    return {
        "kept": list(kept),
        "macs": int(res.macs_after),
        "params": int(res.params_after),
        "lut_ms": float(ev.predict_kept(kept)),
        "onnx": exp.onnx_bytes,
        "onnx_path": str(path),
        "max_abs_diff": exp.max_abs_diff,
        "odd_groups": sum(1 for k in kept if k % 2 == 1),
    }


def measure_all(items: list[dict[str, Any]], device: Any, repeats: int) -> None:
    """`repeats` fresh live measurements of every model, interleaved (drift hits all alike); median of medians."""
    import hwprofiler

    for it in items:
        it["live_runs_ms"] = []
    for rep in range(repeats):
        for it in items:
            m = hwprofiler.measure_onnx(it["onnx"], device, cache=False)
            it["live_runs_ms"].append(float(m.latency_ms))
        print(f"  live measurements: round {rep + 1}/{repeats} done", flush=True)
    for it in items:
        it["live_ms"] = float(statistics.median(it["live_runs_ms"]))


def speedups(it: dict[str, Any], dense: dict[str, Any]) -> None:
    it["macs_speedup"] = dense["macs"] / it["macs"]
    it["lut_speedup"] = dense["lut_ms"] / it["lut_ms"]
    it["live_speedup"] = dense["live_ms"] / it["live_ms"]
    for k in ("macs", "lut", "live"):
        it[f"{k}_reduction"] = 1.0 - 1.0 / it[f"{k}_speedup"]
    it["live_over_lut"] = it["live_speedup"] / it["lut_speedup"]
    it["lut_within_10pct"] = abs(it["live_over_lut"] - 1.0) <= 0.10
    it["macs_within_10pct"] = abs(it["live_speedup"] / it["macs_speedup"] - 1.0) <= 0.10


# --- markdown -----------------------------------------------------------------------------------
def markdown(res: dict[str, Any]) -> str:
    from bench.common import header, load_line

    a = res["args"]
    d = res["dense"]
    lines = [
        f"## Real speedup: MACs vs LUT-predicted vs measured ({a['model']}, Fashion-MNIST input, `{a['device']}`, "
        f"uniform policies at round_to {a.get('round_to', 1)})" + (" — QUICK RUN" if a.get("quick") else "") + "\n",
        header(res["machine"]),
    ]
    if res.get("note"):
        lines.append(res["note"] + "\n")
    load = res.get("loadavg") or {}
    if load:
        lines.append(load_line(load, res["machine"]["cores"]))
    lines.append(
        f"Dense {a['model']} ({res['weights']}): {d['macs'] / 1e6:.2f} M MACs, LUT {d['lut_ms']:.3f} ms, live {d['live_ms']:.3f} ms "
        f"(fresh runs {', '.join(f'{x:.3f}' for x in d['live_runs_ms'])}). Every policy below is pruned, exported to ONNX "
        f"(checked against torch) and measured live {a['repeats']} times, interleaved with all the others (median of the "
        "medians). Reduction = 1 - pruned/dense; speedup = dense/pruned; MACs and LUT columns are what FLOPs and the "
        "search's predictor claim, *live* is what the device does. **within 10%**: measured speedup within ±10% of the "
        "LUT-predicted one (in brackets: of the MACs one). Budgets are fractions of the dense live latency the evaluator "
        f"measured at start ({res['dense_ref_ms']:.3f} ms). Latency does not depend on the weights.\n"
    )
    lines += [
        "### Policies at each budget",
        "",
        "| budget (ms) | policy | source | MACs red. | LUT red. | live red. | MACs speedup | LUT speedup | live speedup | live / LUT | within 10% (MACs) | live ms (runs) |",  # noqa: E501
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for it in res["budget_rows"]:
        lines.append(
            f"| {it['budget']} ({it['budget_ms']:.3f}) | {it['policy']} | {it['source']} | {100 * it['macs_reduction']:.0f}% | "
            f"{100 * it['lut_reduction']:.0f}% | {100 * it['live_reduction']:.0f}% | {it['macs_speedup']:.2f}x | "
            f"{it['lut_speedup']:.2f}x | {it['live_speedup']:.2f}x | {it['live_over_lut']:.2f} | "
            f"{'yes' if it['lut_within_10pct'] else '**no**'} ({'yes' if it['macs_within_10pct'] else 'no'}) | "
            f"{it['live_ms']:.3f} ({', '.join(f'{x:.3f}' for x in it['live_runs_ms'])}) |"
        )
    for label in res.get("missing_searched", []):
        lines.append(f"| {label} | searched | no trial within the budget | - | - | - | - | - | - | - | - | - |")
    n = len(res["budget_rows"])
    ok = sum(1 for it in res["budget_rows"] if it["lut_within_10pct"])
    okm = sum(1 for it in res["budget_rows"] if it["macs_within_10pct"])
    lines.append(f"\nMeasured speedup within 10% of the LUT prediction: **{ok}/{n}** policies; of the MACs ratio: {okm}/{n}.")
    lines += [
        "",
        f"### Same MACs, odd vs aligned channels (`round_to=1` odd counts vs multiples of {a['align']})",
        "",
        "Each odd policy keeps a random *odd* number of channels in every group; its twin keeps multiples of "
        f"{a['align']} chosen to match its MACs. FLOPs call them equal; the LUT and the device may not.\n",
        "| pair | policy | kept channels per group | MACs (M) | LUT ms | live ms (runs) | live speedup | MACs speedup | LUT speedup | live / LUT |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for it in res["odd_rows"]:
        lines.append(
            f"| {it['pair']} | {it['policy']} | {' '.join(map(str, it['kept']))} | {it['macs'] / 1e6:.2f} | {it['lut_ms']:.3f} | "
            f"{it['live_ms']:.3f} ({', '.join(f'{x:.3f}' for x in it['live_runs_ms'])}) | {it['live_speedup']:.2f}x | "
            f"{it['macs_speedup']:.2f}x | {it['lut_speedup']:.2f}x | {it['live_over_lut']:.2f} |"
        )
    pairs = res.get("pairs", [])
    if pairs:
        lines.append("")
        for p in pairs:
            lines.append(
                f"- pair {p['pair']}: MACs odd/aligned {p['macs_ratio']:.3f}; live odd/aligned **{p['live_ratio']:.2f}**; "
                f"LUT odd/aligned {p['lut_ratio']:.2f}."
            )
        slower = sum(1 for p in pairs if p["live_ratio"] > 1.05)
        lines.append(
            f"\nThe odd policy ran more than 5% slower than its same-MACs aligned twin in **{slower}/{len(pairs)}** pairs "
            f"(FLOPs predict a ratio of about 1.00 for every pair)."
        )
    lines.append(
        f"\nTotal wall time: {res['total_wall_s'] / 60:.1f} min. Exported models: `runs/bench/real_speedup/`; "
        f"numbers: `bench/results/{a.get('results_name', 'real_speedup')}.json`."
    )
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--budgets", default="0.7,0.5,0.3")
    ap.add_argument("--runs", default=None, help="search run directory (or a folder of them) to take the searched policies from")
    ap.add_argument("--search-agents", default="ppo", help="agents of the short search when --runs does not cover a budget")
    ap.add_argument("--search-evals", type=int, default=60)
    ap.add_argument("--odd-pairs", type=int, default=3)
    ap.add_argument("--align", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="ort-cpu-1t")
    ap.add_argument(
        "--round-to", type=int, default=8, help="kept channels of the uniform (and short-search) policies rounded to this"
    )
    ap.add_argument("--results-name", default="real_speedup", help="bench/results/<name>.json and the docs section's name")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="budget 0.5, 20 search evaluations, 2 odd pairs, 2 repeats")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the docs section from bench/results/real_speedup.json")
    args = ap.parse_args()

    from bench.common import preset, rewrite_section, write_section

    if args.markdown_only:
        rewrite_section(args.results_name, markdown)
        return
    if args.quick:
        preset(ap, args, budgets="0.5", search_evals=20, odd_pairs=2, repeats=2)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import numpy as np
    import torch

    torch.set_num_threads(1)
    _quiet()
    import hwprofiler
    from bench.common import machine, write_json
    from bench.compare_agents import weights_of
    from envs.evaluator import PolicyEvaluator
    from hilprune.budget import parse_budgets

    info = machine()
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    wtag, ckpt = weights_of(args.model, DATASET)
    weights = "random weights" if wtag == "random" else f"checkpoint {wtag[1:]}"
    if wtag == "random":
        print(
            f"note: no shipped {DATASET} checkpoint for {args.model}: random weights (latency does not depend on them)",
            flush=True,
        )
    if args.round_to < 1:
        ap.error("--round-to must be at least 1")
    ev = PolicyEvaluator(
        args.model, dataset=DATASET, device=args.device, latency_source="lut", seed=args.seed, round_to=args.round_to
    )
    lut_before = ev.lut.measured
    labels = parse_budgets(args.budgets)
    budgets = {b: ev.resolve_budget(b).ms for b in labels}
    device = hwprofiler.load_device(args.device)
    OUT.mkdir(parents=True, exist_ok=True)

    # the policies
    policies: list[tuple[str, str, tuple[int, ...], dict[str, Any]]] = []  # (budget label, policy name, kept, info)
    for label, (kept, inf) in uniform_policies(ev, budgets).items():
        policies.append((label, "uniform", kept, inf))
    searched = searched_from_runs(Path(args.runs), args.model, budgets) if args.runs else {}
    rest = [b for b in labels if b not in searched]
    if rest:
        searched |= searched_by_search(args.model, rest, args, wtag)
    missing = [b for b in labels if b not in searched]
    for label in labels:
        if label in searched:
            policies.append((label, "searched", *searched[label]))

    rng = np.random.default_rng(args.seed)
    pairs_kept = []
    for i in range(args.odd_pairs):
        odd = odd_policy(ev, rng)
        pairs_kept.append((i + 1, odd, aligned_twin(ev, odd, args.align)))

    # build and measure everything (dense first)
    dense_kept = tuple(int(g.channels) for g in ev.groups)
    items: list[dict[str, Any]] = [build(ev, dense_kept, OUT / "dense.onnx") | {"name": "dense"}]
    for label, name, kept, inf in policies:
        items.append(
            build(ev, kept, OUT / f"{name}-b{label}.onnx")
            | {
                "name": name,
                "budget": label,
                "budget_ms": budgets[label],
                "policy": name,
                "source": inf.get("source", ""),
                "info": inf,
            }
        )
    for i, odd, al in pairs_kept:
        items.append(build(ev, odd, OUT / f"odd-{i}.onnx") | {"name": f"odd-{i}", "pair": i, "policy": "odd (round_to=1)"})
        items.append(
            build(ev, al, OUT / f"aligned-{i}.onnx") | {"name": f"aligned-{i}", "pair": i, "policy": f"aligned (x{args.align})"}
        )
    print(f"{len(items)} models exported; measuring live ({args.repeats} rounds)", flush=True)
    measure_all(items, device, args.repeats)
    dense = items[0]
    dense["macs"] = ev.dense_macs if dense["macs"] <= 0 else dense["macs"]
    for it in items[1:]:
        speedups(it, dense)
    budget_rows = [it for it in items[1:] if "budget" in it]
    odd_rows = [it for it in items[1:] if "pair" in it]
    pairs = []
    for i, _odd, _al in pairs_kept:
        o = next(it for it in odd_rows if it["name"] == f"odd-{i}")
        a = next(it for it in odd_rows if it["name"] == f"aligned-{i}")
        pairs.append(
            {
                "pair": i,
                "macs_ratio": o["macs"] / a["macs"],
                "live_ratio": o["live_ms"] / a["live_ms"],
                "lut_ratio": o["lut_ms"] / a["lut_ms"],
            }
        )
    for it in items:
        it.pop("onnx", None)
    ev.flush()
    res = {
        "machine": info,
        "args": vars(args),
        "weights": weights,
        "checkpoint": ckpt,
        "dense_ref_ms": ev.dense_latency_ms,
        "dense": dense,
        "budgets_ms": budgets,
        "budget_rows": budget_rows,
        "odd_rows": odd_rows,
        "pairs": pairs,
        "missing_searched": missing,
        "lut_kernels_measured": ev.lut.measured - lut_before,
        "predictor": ev.predictor.coefficients,
        "total_wall_s": time.perf_counter() - t0,
        "loadavg": {"start": load_start, "end": os.getloadavg()[0]},
    }
    path = write_json(args.results_name, res)
    print(f"wrote {path}")
    for it in budget_rows:
        print(
            f"{it['budget']:>4} {it['policy']:<9} MACs {it['macs_speedup']:.2f}x  LUT {it['lut_speedup']:.2f}x  live {it['live_speedup']:.2f}x"
            f"  ({it['live_ms']:.3f} ms; within 10% of LUT: {it['lut_within_10pct']})"
        )
    for p in pairs:
        print(f"pair {p['pair']}: MACs odd/aligned {p['macs_ratio']:.3f}  live {p['live_ratio']:.2f}  LUT {p['lut_ratio']:.2f}")
    if not args.no_doc:
        write_section(args.results_name, markdown(res))
        print(f"wrote docs/benchmarks.md ({args.results_name} section)")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
