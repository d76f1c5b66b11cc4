"""Cross-device: is a policy searched for one device better *on that device* than the policy
searched for another? (Here: onnxruntime vs OpenVINO on the same CPU.)

    python bench/cross_device.py [--models resnet20,resnet56,mobilenetv2] [--devices ort-cpu-1t,ov-cpu-1t]
                                 [--budget 0.5] [--agents uniform,random,ppo] [--evals 60]
                                 [--latency-source hybrid] [--round-to 1] [--finetune-epochs 1]
                                 [--repeats 3] [--seed 0] [--precision fp32] [--proxy ls,kd:40] [--remove-blocks N]
                                 [--results-name cross_device]
                                 [--quick] [--no-doc] [--markdown-only] [--tally]

Per model (Fashion-MNIST; digits-cnn on digits):

1. dense latency on each device (`--repeats` fresh measurements, median);
2. per device, `hilprune search` (the same job the CLI runs: `--agents`, `--evals` per agent,
   `--latency-source`, `--round-to`, `--proxy`) at a budget of `--budget` of *that device's* dense latency
   (where the device's lookup table says pruning cannot reach it, at the lowest budget it can: the
   fraction hilprune's budget error names plus 2%, and the table says so), under runs/bench/cross_device/;
   a rerun continues the searches, each under the proxy it started with (results record it since
   `--proxy` exists; earlier runs used hilprune search's default of their day);
3. per device, its best policy: `hilprune export` (`search.export.export_run`): the most accurate
   trial that meets the budget live, fine-tuned for `--finetune-epochs` (the same for every policy),
   test accuracy. When no trial meets the budget, the lowest-latency trial (the lowest the search
   reached) is exported instead and the table says so;
4. the matrix: each device's policy measured on every device, paired with that device's dense
   model (`hwprofiler.measure_paired`, A B B A windows), `--repeats` times interleaved over all
   cells, then again for any cell whose ratios do not yet agree (two thirds of them within 5% of
   their median; at most 3x `--repeats` rounds, and the table names a cell that never agreed);
   latency = median ratio x that device's dense latency.

`--remove-blocks N` has every device's search remove N residual blocks whole first (the N least
harmful by validation accuracy, as `hilprune search --remove-blocks` chooses them), then search the
widths of what is left: on a runtime whose per-layer cost dominates, depth is what pays.

`--precision int8` (or `mixed`) searches width and precision on each device (`hilprune search
--precision`: the INT8 scheme each search prices is the one that ran the model's dense graph fastest
on that device) and exports with `--precision auto`, which chooses the scheme again on that device; the matrix
then measures each device's shipped graph (INT8 where its export kept a scheme) on every device.

Target, per model and device D (the other device O): D's policy is at least as good on D as O's:
at least 10% lower latency on D at equal accuracy (at most 1 point less test accuracy), or at least
1 point more test accuracy at equal latency (within 10%). A faster policy that is less accurate by
more than that is a different point of the trade-off, not a better one. A cell where both searches
found the same policy is reported as such.

    python bench/cross_device.py --tally [--note TEXT]   # every results file judged by today's rule

`--tally` measures nothing: it judges every bench/results/cross_device*.json again by the rule above
and writes the `cross_device_tally` section (the verdicts each run recorded beside today's).

Writes bench/results/<results-name>.json and the `<results-name>` section of docs/benchmarks.md.
`--quick`: digits-cnn on digits, agents uniform,random, 3 evaluations each, latency source live,
fine-tune 0.5 epoch, 1 repeat, and HWPROFILER_ROUND_S=0 (one run per measurement window: noisy,
kept apart from real measurements by the device fingerprint). It checks the pipeline, not the
devices.
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

OUT = Path(__file__).resolve().parent.parent / "runs" / "bench" / "cross_device"
DATASETS = {"digits-cnn": "digits"}  # every other model: Fashion-MNIST
LATENCY_BETTER = 0.90  # own policy's latency at most 90% of the other's ...
EQUAL_LATENCY = 1.10  # ... or within 10% of it (equal) with at least ACCURACY_POINTS more accuracy
ACCURACY_POINTS = 1.0
DEFAULT_BUDGET = "0.5"  # of each device's own dense latency
DEFAULT_AGENTS = "uniform,random,ppo"
FLOOR_MARGIN = 1.02  # a budget that cannot be met is raised to the floor it names, plus this margin
AGREE = 0.05  # a matrix ratio agrees with its cell's median within this fraction ...
QUORUM = 2 / 3  # ... and a cell is settled once this share of its ratios agree
MAX_ROUNDS = 3  # an unsettled cell is measured again, up to this many times --repeats rounds in all


def dataset_of(model: str) -> str:
    return DATASETS.get(model, "fashion-mnist")


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("search", "agent", "envs", "hwprofiler", "hilprune"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --- the search and the export of one device's policy ---------------------------------------------
def search_args(model: str, device: str, run_dir: Path, args: argparse.Namespace) -> list[str]:
    """The `hilprune search` command line this bench runs (as a list)."""
    return (
        [
            "search",
            "-m",
            model,
            "-d",
            dataset_of(model),
            "--device",
            device,
            "--precision",
            args.precision,  # fp32: the runtimes compared on float models; int8/mixed: width and precision
            "--budget",
            args.budget,
            "--agent",
            args.agents,
            "--evals",
            str(args.evals),
            "--latency-source",
            args.latency_source,
            "--round-to",
            str(args.round_to),
            "--seed",
            str(args.seed),
            "--out",
            str(run_dir),
        ]
        + (["--proxy", args.proxy] if getattr(args, "proxy", None) else [])
        + (["--remove-blocks", args.remove_blocks] if getattr(args, "remove_blocks", None) else [])
    )


def run_dir_name(model: str, device: str, wtag: str, args: argparse.Namespace) -> str:
    """One search's directory: every setting that steers its trials is in the name, so a rerun under other
    settings starts afresh (`hilprune search` resumes across budgets and agents by design). The default
    budget and agents are left out, so older run directories still resume."""
    return (
        f"{model}-{device}-{wtag}-{args.latency_source}-r{args.round_to}"
        + ("" if args.precision == "fp32" else f"-{args.precision}")
        + ("" if args.budget == DEFAULT_BUDGET else f"-b{args.budget}")
        + ("" if args.agents == DEFAULT_AGENTS else "-" + args.agents.replace(",", "_"))
        + (f"-p{proxy_tag(args.proxy)}" if getattr(args, "proxy", None) else "")
        + (f"-blocks{args.remove_blocks.replace(',', '_')}" if getattr(args, "remove_blocks", None) else "")
    )


def proxy_tag(proxy: str) -> str:
    """A proxy ladder as a file-name part: ls,kd:40 -> ls_kd40."""
    return proxy.replace(",", "_").replace(":", "").replace("+", "-")


def run_device_search(model: str, device: str, run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run (or continue) the device's search; its dense reference and budget (dense.json)."""
    from search.job import resolve_job
    from search.runner import read_dense, run_search

    job = resolve_job(
        model=model,
        dataset=dataset_of(model),
        device=device,
        precision=args.precision,
        budgets=[args.budget],
        agents=args.agents.split(","),
        evals=args.evals,
        seed=args.seed,
        out=str(run_dir),
        latency_source=args.latency_source,
        round_to=args.round_to,
        proxy=args.proxy,  # None: a resumed run directory keeps its own, a new one gets hilprune search's default
        remove_blocks=getattr(args, "remove_blocks", None) or None,
    )
    t0 = time.perf_counter()
    outcome = run_search(job, progress=False)
    dense = read_dense(run_dir) or {}
    print(f"  search {model} on {device}: {time.perf_counter() - t0:.0f} s -> {run_dir}", flush=True)
    return {"dense": dense, "failed": dict(outcome.failed), "wall_s": time.perf_counter() - t0, "proxy": job.proxy}


def export_best(run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """`hilprune export`: the most accurate trial that meets the budget live, fine-tuned and tested;
    else the trial with the lowest recorded latency (the lowest the search reached)."""
    from hilprune.errors import HilpruneError
    from search import store
    from search.export import export_run
    from search.job import load_run_job

    out = run_dir / f"export-ft{args.finetune_epochs:g}"
    common: dict[str, Any] = dict(finetune_epochs=args.finetune_epochs, seed=args.seed, progress=False, precision="auto")
    try:
        res = export_run(run_dir, args.budget, out, **common)
        res["reached_budget"] = True
    except HilpruneError as exc:
        job = load_run_job(run_dir)
        recs = [r for rs in store.load_records(store.open_storage(job.storage_url), job.name).values() for r in rs]
        if not recs:
            raise
        lowest = min(recs, key=lambda r: r.latency_ms)
        print(f"  {run_dir.name}: {exc}; exporting the lowest-latency trial {lowest.ref}", flush=True)
        res = export_run(run_dir, args.budget, out, trial=lowest.ref, **common)
        res["reached_budget"] = bool(res.get("meets_budget"))
    return res


# --- measuring ------------------------------------------------------------------------------------
def dense_latencies(dense_onnx: bytes, devices: list[str], repeats: int) -> dict[str, dict[str, Any]]:
    import hwprofiler

    runs: dict[str, list[float]] = {d: [] for d in devices}
    for _ in range(repeats):
        for d in devices:
            runs[d].append(float(hwprofiler.measure_onnx(dense_onnx, d, cache=False).latency_ms))
    return {d: {"ms": statistics.median(v), "runs_ms": v} for d, v in runs.items()}


def matrix(
    policies: dict[str, bytes],
    dense_onnx: bytes,
    devices: list[str],
    repeats: int,
    int8_schemes: dict[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """policy (searched for) -> device -> ratios to that device's dense model, measured paired; a
    graph a device's runtime cannot run (an INT8 format it does not read) gets its `error` instead.

    `int8_schemes`: policy -> scheme, for graphs INT8 in every layer. Their `ratios` go through the
    dense graph in that scheme (hwprofiler.bridge, as the search and export time them); their
    `direct_ratios` are paired with the fp32 dense model as well, to show what the bridge changed."""
    import hwprofiler
    from hwprofiler.bridge import PrecisionBridge

    schemes = int8_schemes or {}
    bridges: dict[tuple[str, str], PrecisionBridge] = {}
    cells: dict[str, dict[str, Any]] = {p: {d: {"ratios": []} for d in devices} for p in policies}

    def measure(p: str, d: str) -> None:
        cell = cells[p][d]
        try:
            ratio = float(hwprofiler.measure_paired(policies[p], dense_onnx, d, cache=False).ratio)
            if p in schemes:
                key = (d, schemes[p])
                if key not in bridges:
                    bridges[key] = PrecisionBridge.in_scheme(dense_onnx, schemes[p], d)
                cell.setdefault("direct_ratios", []).append(ratio)
                ratio = bridges[key].measure(policies[p], cache=False).ratio
        except hwprofiler.InvalidModelError as exc:
            cell["error"] = str(exc).splitlines()[0]
            return
        cell["ratios"].append(ratio)

    for rnd in range(MAX_ROUNDS * repeats):
        todo = [
            (p, d)
            for p in policies
            for d in devices
            if "error" not in cells[p][d] and (rnd < repeats or not settled(cells[p][d]["ratios"], repeats))
        ]
        if not todo:
            break
        for p, d in todo:
            measure(p, d)
        extra = f", {len(todo)} unsettled cell(s) again" if rnd >= repeats else ""
        print(f"  matrix: round {rnd + 1} done{extra}", flush=True)
    for (d, scheme), bridge in bridges.items():
        for p in policies:
            if schemes.get(p) == scheme:
                cells[p][d] |= bridge.summary()
    for row in cells.values():
        for cell in row.values():
            cell["ratio"] = statistics.median(cell["ratios"]) if cell["ratios"] else None
            if cell["ratios"]:
                cell["settled"] = settled(cell["ratios"], repeats)
    return cells


def settled(ratios: list[float], repeats: int) -> bool:
    """Whether a matrix cell's ratios can be trusted: at least `repeats` of them, and `QUORUM` of
    them within `AGREE` of their median. On a shared vCPU a round can catch one graph's session in a
    slow window for seconds (on a Zen 3 EPYC, a resnet20 pair that read 0.48-0.50 in nine rounds
    measured alone read 0.31-0.51 in three rounds of a bench), and a median of three does not
    survive two such rounds."""
    if len(ratios) < max(1, repeats):
        return False
    median = statistics.median(ratios)
    agree = sum(abs(r / median - 1) <= AGREE for r in ratios)
    return agree >= math.ceil(QUORUM * len(ratios) - 1e-9)


def verdict(own_ms: float, other_ms: float, own_acc: float, other_acc: float) -> tuple[bool, str]:
    """Whether a device's own policy is at least as good on it as the other device's policy: faster
    at equal accuracy, or more accurate at equal latency (see the module's docstring)."""
    ratio = own_ms / other_ms
    gain = round(100.0 * (own_acc - other_acc), 9)  # points; rounded so that 0.9032 - 0.9132 is -1, not below it
    if ratio <= LATENCY_BETTER:
        if gain >= -ACCURACY_POINTS:
            return True, f"{100 * (1 - ratio):.0f}% lower latency"
        return False, f"{100 * (1 - ratio):.0f}% lower latency, but {-gain:.2f} points less accurate"
    if ratio <= EQUAL_LATENCY and gain >= ACCURACY_POINTS:
        return True, f"equal latency ({ratio:.2f}x), +{gain:.1f} points"
    return False, f"latency {ratio:.2f}x, accuracy {gain:+.1f} points"


def kept_summary(policy_path: str) -> dict[str, Any]:
    import json

    groups = json.loads(Path(policy_path).read_text())["groups"]
    kept = [int(g["channels_after"]) for g in groups]
    return {
        "kept": kept,
        "int8_groups": sum(g.get("precision") == "int8" for g in groups),
        "odd_groups": sum(k % 2 for k in kept),
        "x16_groups": sum(k % 16 == 0 for k in kept),
        "groups": len(kept),
    }


def same_deployment(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two devices' exports are one deployment: the same widths, shipped alike (fp32, or
    INT8 in the same scheme; older results recorded neither and shipped fp32)."""
    return a["kept"] == b["kept"] and (a.get("shipped"), a.get("scheme")) == (b.get("shipped"), b.get("scheme"))


def run_model(model: str, devices: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from bench.compare_agents import weights_of
    from hilprune.budget import BudgetError, lowest_budget, parse_budgets
    from hilprune.export import to_onnx_bytes
    from hilprune.models import resolve_model

    wtag, ckpt = weights_of(model, dataset_of(model))
    spec = resolve_model(model, dataset_of(model))
    dense_onnx = to_onnx_bytes(spec.build(), spec.input_shape)
    print(f"{model} ({dataset_of(model)}, {'random weights' if wtag == 'random' else 'checkpoint'})", flush=True)
    dense = dense_latencies(dense_onnx, devices, args.repeats)
    searched: dict[str, dict[str, Any]] = {}
    onnx: dict[str, bytes] = {}
    for d in devices:
        dargs = args
        for attempt in range(3):  # each new run directory measures its dense model again, so the floor can move
            run_dir = OUT / run_dir_name(model, d, wtag, dargs)
            try:
                search = run_device_search(model, d, run_dir, dargs)
                break
            except BudgetError as exc:
                if exc.floor is None or attempt == 2:
                    raise
                # 2% over the floor: each run directory's dense latency is measured live again and moves by a few %
                dargs = argparse.Namespace(**(vars(args) | {"budget": lowest_budget(FLOOR_MARGIN * exc.floor)}))
                print(f"  {model} on {d}: {exc}; searching at {dargs.budget}, the lowest it can reach", flush=True)
        exp = export_best(run_dir, dargs)
        onnx[d] = Path(exp["onnx"]).read_bytes()
        job_dense = search["dense"]
        searched_as = argparse.Namespace(**(vars(dargs) | {"proxy": search["proxy"]}))  # the proxy its trials had
        searched[d] = {
            "run_dir": str(run_dir),
            "command": "hilprune " + " ".join(search_args(model, d, run_dir, searched_as)),
            "proxy": search["proxy"],  # the one its trials were scored with (resumed directories keep theirs)
            "budget": dargs.budget,  # args.budget, or the lowest this device can reach when that cannot be met
            "budget_ms": float(job_dense["budgets_ms"][parse_budgets(dargs.budget)[0]]),
            "search_dense_ms": float(job_dense["latency_ms"]),
            "failed_agents": search["failed"],
            "search_wall_s": search["wall_s"],
            "agent": exp["agent"],
            "trial": exp["trial"],
            "reached_budget": exp["reached_budget"],
            "export_latency_ms": exp["latency_ms"],
            "test_accuracy": exp["test_accuracy"],
            "test_accuracy_before_finetune": exp["test_accuracy_before_finetune"],
            "dense_test_accuracy": exp["dense_test_accuracy"],
            "policy": exp["policy"],
            "shipped": exp.get("precision", "fp32"),
            "scheme": exp.get("scheme"),
            **kept_summary(exp["policy"]),
        }
    whole_int8 = {
        d: str(s["scheme"])
        for d, s in searched.items()
        if s["shipped"] == "int8" and s["scheme"] and s["int8_groups"] in (0, s["groups"])
    }  # INT8 in every layer (a policy marking no group int8 exports all of it in INT8)
    cells = matrix(onnx, dense_onnx, devices, args.repeats, whole_int8)
    for row in cells.values():
        for d, cell in row.items():
            if cell["ratio"] is not None:
                cell["ms"] = cell["ratio"] * dense[d]["ms"]
                cell["speedup"] = 1.0 / cell["ratio"]
    return {
        "model": model,
        "dataset": dataset_of(model),
        "weights": "random" if wtag == "random" else "checkpoint",
        "checkpoint": ckpt,
        "dense": dense,
        "searched": searched,
        "matrix": cells,
        "targets": targets_of(model, devices, searched, cells),
    }


def targets_of(model: str, devices: list[str], searched: dict[str, Any], cells: dict[str, Any]) -> list[dict[str, Any]]:
    """The target, judged for every ordered pair of devices (this device, the other), by `verdict`."""
    targets = []
    for d in devices:
        for o in devices:
            if o == d:
                continue
            row: dict[str, Any] = {"model": model, "device": d, "other": o}
            if same_deployment(searched[d], searched[o]):
                row |= {"met": None, "why": "both searches found the same policy"}
            elif "ms" not in cells[o][d]:
                row |= {"met": True, "why": f"the other's graph does not run here ({cells[o][d].get('error')})"}
            else:
                met, why = verdict(
                    cells[d][d]["ms"], cells[o][d]["ms"], searched[d]["test_accuracy"], searched[o]["test_accuracy"]
                )
                row |= {"met": met, "why": why, "own_ms": cells[d][d]["ms"], "other_ms": cells[o][d]["ms"]}
            targets.append(row)
    return targets


def rejudged(model_res: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored model result's targets judged again by today's `verdict` (the rule has changed once:
    a faster but less accurate own policy used to count as met)."""
    devices = list(model_res["searched"])
    return targets_of(model_res["model"], devices, model_res["searched"], model_res["matrix"])


# --- markdown -------------------------------------------------------------------------------------
def other_fits_budget(model_res: dict[str, Any], device: str, other: str) -> str:
    """Whether the policy searched for `other` meets `device`'s budget: the budget as a fraction of the
    dense latency its search measured, against the other's matrix ratio on `device` (both paired with dense)."""
    from hilprune.budget import within_budget

    cell = model_res["matrix"][other][device]
    if cell.get("ratio") is None:
        return "does not run"
    own = model_res["searched"][device]
    fraction = own["budget_ms"] / own["search_dense_ms"]
    verdict = "yes" if within_budget(cell["ratio"], fraction) else "**no**"
    return f"{verdict} ({cell['ratio']:.3f} of dense, budget {fraction:.3f})"


def _agreement_lines(res: dict[str, Any], devs: list[str]) -> list[str]:
    """The matrix cells that took more rounds than `--repeats` to agree, or never did (results from
    before the rule recorded no `settled`, and get no line)."""
    repeats = int(res["args"]["repeats"])
    again: list[str] = []
    never: list[str] = []
    for m in res["models"]:
        for p in devs:
            for d in devs:
                c = m["matrix"][p][d]
                if "settled" not in c or (len(c["ratios"]) <= repeats and c["settled"]):
                    continue
                span = f"{min(c['ratios']):.3f}-{max(c['ratios']):.3f}"
                (again if c["settled"] else never).append(
                    f"{m['model']} searched for {p} on {d} ({len(c['ratios'])} rounds, ratios {span})"
                )
    lines = []
    if again:
        lines.append(f"Measured again until two thirds of their ratios agreed within 5% of the median: {'; '.join(again)}.")
    if never:
        lines.append(f"**Never agreed** in {MAX_ROUNDS * repeats} rounds (their medians are noise): {'; '.join(never)}.")
    return ["", *lines] if lines else []


def markdown(res: dict[str, Any]) -> str:
    from bench.common import header, load_line

    a = res["args"]
    devs = a["devices"].split(",")
    int8 = a.get("precision", "fp32") != "fp32"
    proxies = sorted({str(s.get("proxy")) for m in res["models"] for s in m["searched"].values()})
    lines = [
        f"## Cross-device policies: {' vs '.join(f'`{d}`' for d in devs)} (budget {a['budget']} of each device's dense "
        f"latency, agents {a['agents']}, {a['evals']} evaluations each, latency source {a['latency_source']}"
        + ("" if proxies == ["None"] else f", proxy {' / '.join(f'`{p}`' for p in proxies)}")  # None: not recorded then
        + (f", `--precision {a['precision']}`" if int8 else "")
        + (f", residual blocks removed first: {a['remove_blocks']}" if a.get("remove_blocks") else "")
        + ")"
        + (" — QUICK RUN" if a.get("quick") else "")
        + "\n",
        header(res["machine"]),
    ]
    load = res.get("loadavg") or {}
    if load:
        lines.append(load_line(load, res["machine"]["cores"]))
    if a.get("quick"):
        lines.append("Quick run (`--quick`): it checks the pipeline; its numbers say nothing about the devices.\n")
    lines.append(
        "Each device's best policy comes from its own `hilprune search` at the budget, exported by `hilprune export` "
        f"(fine-tuned {a['finetune_epochs']:g} epoch(s), the same for every policy; test accuracy). The matrix measures every "
        "policy on every device paired with that device's dense model (A B B A windows); ms = median ratio x the device's "
        f"dense latency ({a['repeats']} repeat(s)). Target: on each device its own policy has at least 10% lower latency than "
        "the other device's policy, or at least 1 point more test accuracy at equal latency (within 10%)."
        + (
            f" Searched with `--precision {a['precision']}` and exported with `--precision auto`: each export chose its "
            "INT8 scheme on its own device (each scheme timed there against fp32, the fastest that keeps validation "
            "accuracy), and the matrix measures each shipped graph as it is on every device."
            if int8
            else ""
        )
        + "\n"
    )
    lines += [
        "### Dense latency",
        "",
        "| model | " + " | ".join(devs) + f" | {devs[-1]} / {devs[0]} |",
        "|---" * (len(devs) + 2) + "|",
    ]
    for m in res["models"]:
        ms = [m["dense"][d]["ms"] for d in devs]
        lines.append(f"| {m['model']} | " + " | ".join(f"{x:.3f} ms" for x in ms) + f" | {ms[-1] / ms[0]:.2f}x |")
    lines += [
        "",
        "### Each device's policy",
        "",
        "| model | searched for | budget (ms) | trial | reached budget | groups odd / x16 | "
        + ("shipped | " if int8 else "")
        + "test acc. before / after fine-tune | dense test acc. |",
        "|---|---|---|---|---|---|---|---|" + ("---|" if int8 else ""),
    ]
    for m in res["models"]:
        for d in devs:
            s = m["searched"][d]
            shipped = f"{s.get('shipped', 'fp32')}" + (f" ({s['scheme']})" if s.get("scheme") else "")
            raised = s.get("budget", a["budget"]) != a["budget"]  # this device could not reach --budget
            budget = f"{s['budget_ms']:.3f}" + (f" ({s['budget']} of dense, the lowest it can reach)" if raised else "")
            lines.append(
                f"| {m['model']} | {d} | {budget} | {s['agent']}:{s['trial']} | {'yes' if s['reached_budget'] else '**no**'} | "
                f"{s['odd_groups']} / {s['x16_groups']} of {s['groups']} | "
                + (f"{shipped} | " if int8 else "")
                + f"{100 * s['test_accuracy_before_finetune']:.1f}% / "
                f"{100 * s['test_accuracy']:.1f}% | {100 * s['dense_test_accuracy']:.1f}% |"
            )
    lines += [
        "",
        "### Every policy on every device (ms, speedup over that device's dense model)",
        "",
        "| model | policy searched for | " + " | ".join(f"on {d}" for d in devs) + " | test acc. |",
        "|---|---|" + "---|" * len(devs) + "---|",
    ]
    for m in res["models"]:
        for p in devs:
            row = m["matrix"][p]
            cells = " | ".join(
                (
                    "does not run"
                    if "ms" not in row[d]
                    else f"**{row[d]['ms']:.3f}** ({row[d]['speedup']:.2f}x)"
                    if d == p
                    else f"{row[d]['ms']:.3f} ({row[d]['speedup']:.2f}x)"
                )
                for d in devs
            )
            lines.append(f"| {m['model']} | {p} | {cells} | {100 * m['searched'][p]['test_accuracy']:.1f}% |")
    lines += _agreement_lines(res, devs)
    bridged = [(m, p, d) for m in res["models"] for p in devs for d in devs if m["matrix"][p][d].get("direct_ratios")]
    if bridged:
        lines += [
            "",
            "INT8 graphs are measured through the dense graph in their scheme (`hwprofiler/bridge.py`), and paired "
            "with the fp32 dense model directly as well, each round:",
            "",
            "| model | policy searched for | on | ratios, bridged | ratios, direct | conversion (its pairs) |",
            "|---|---|---|---|---|---|",
        ]
        for m, p, d in bridged:
            c = m["matrix"][p][d]
            fmt = ", ".join
            lines.append(
                f"| {m['model']} | {p} | {d} | {fmt(f'{r:.3f}' for r in c['ratios'])} | "
                f"{fmt(f'{r:.3f}' for r in c['direct_ratios'])} | {c['int8_conversion']:.3f} "
                f"({fmt(f'{r:.3f}' for r in c['int8_conversion_ratios'])}) |"
            )
    lines += [
        "",
        "### Targets",
        "",
        "| model | on device | own policy vs the other's | the other's policy within this device's budget | target met |",
        "|---|---|---|---|---|",
    ]
    met = total = 0
    for m in res["models"]:
        for t in rejudged(m):
            if t["met"] is not None:
                total += 1
                met += int(t["met"])
            mark = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
            fits = other_fits_budget(m, t["device"], t["other"])
            lines.append(f"| {t['model']} | {t['device']} | {t['why']} | {fits} | {mark} |")
    lines.append(f"\nTarget met in **{met}/{total}** cells where the two devices' policies differ.")
    lines.append(
        f"\nTotal wall time: {res['total_wall_s'] / 60:.1f} min. Search runs and exports: `runs/bench/cross_device/`; "
        f"numbers: `bench/results/{a['results_name']}.json`; the searches' commands are in it."
    )
    if res.get("note"):
        lines += ["", res["note"]]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------
def tally_markdown(runs: dict[str, dict[str, Any]], note: str = "") -> str:
    """The `cross_device_tally` section: every results file's cells, as recorded and by today's rule."""
    lines = [
        "## Cross-device targets, every run judged by today's rule",
        "",
        "Command: `python bench/cross_device.py --tally`",
        "",
        "Every `bench/results/cross_device*.json`, its targets judged again by `verdict` (measuring "
        "nothing): a device's own policy must be at least 10% faster on it at equal accuracy (at most "
        f"{ACCURACY_POINTS:g} point less accurate), or at least {ACCURACY_POINTS:g} point more accurate "
        "at equal latency. Until this section existed a faster own policy counted as met however much "
        "less accurate it was; the cells that rule change turns are listed. Reruns of one setting "
        "(`_settle`, `_bridge`, `_refstack`) appear beside the run they repeat.",
        "",
        "| results | CPU (ISA) | model | devices | precision | met as recorded | met today | cells turned |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, res in sorted(runs.items()):
        fp: dict[str, Any] = next(iter(res.get("fingerprints", {}).values()), {})
        cpu = f"{fp.get('cpu_model', res['machine'].get('cpu', '?'))} ({', '.join(fp.get('isa', []))})"
        precision = res.get("args", {}).get("precision", "fp32")
        for m in res["models"]:
            then, now = m["targets"], rejudged(m)
            judged = [t for t in now if t["met"] is not None]
            turned = [f"{n['device']}: {n['why']}" for t, n in zip(then, now) if t["met"] is not None and t["met"] != n["met"]]
            lines.append(
                f"| `{name}` | {cpu} | {m['model']} | {', '.join(m['searched'])} | {precision} | "
                f"{sum(bool(t['met']) for t in then if t['met'] is not None)}/{len(judged)} | "
                f"{sum(bool(t['met']) for t in judged)}/{len(judged)} | {'; '.join(turned) or '-'} |"
            )
    if note:
        lines += ["", note]
    return "\n".join(lines)


def tally(note: str) -> None:
    """`--tally`: judge every stored run again and write the `cross_device_tally` section."""
    import json

    from bench.common import RESULTS, write_section

    runs = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("cross_device*.json"))}
    write_section("cross_device_tally", tally_markdown(runs, note))
    print(f"wrote docs/benchmarks.md (cross_device_tally section) from {len(runs)} results files")


def main() -> None:
    from envs.precision import MODES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20,resnet56,mobilenetv2")
    ap.add_argument("--devices", default="ort-cpu-1t,ov-cpu-1t")
    ap.add_argument("--budget", default=DEFAULT_BUDGET, help="fraction of each device's own dense latency")
    ap.add_argument("--agents", default=DEFAULT_AGENTS)
    ap.add_argument("--evals", type=int, default=60, help="evaluations per agent and device")
    ap.add_argument("--latency-source", default="hybrid", choices=["lut", "live", "hybrid"])
    ap.add_argument(
        "--round-to", type=int, default=1, help="channel rounding of the searches (1: each device may pick odd widths)"
    )
    ap.add_argument("--finetune-epochs", type=float, default=1.0, help="the same short fine-tune for every exported policy")
    ap.add_argument("--repeats", type=int, default=3, help="fresh dense measurements and matrix rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--proxy",
        default=None,
        help="the searches' accuracy proxy (default: hilprune search's, ls,kd:40; a resumed run directory keeps its own). "
        "Set, it names the run directories, so a rerun under another proxy starts afresh",
    )
    ap.add_argument(
        "--precision",
        choices=MODES,
        default="fp32",
        help="the searches' precision (default fp32; int8/mixed: width and precision, exported with --precision auto)",
    )
    ap.add_argument(
        "--remove-blocks",
        default=None,
        help="residual blocks every device's search removes whole first, a count or names (hilprune search "
        "--remove-blocks): depth, where the budget is out of reach of widths alone on a device",
    )
    ap.add_argument("--results-name", default="cross_device", help="bench/results/<name>.json and the docs section's name")
    ap.add_argument("--quick", action="store_true", help="digits-cnn, uniform+random, 3 evaluations, 1 repeat: the pipeline only")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the docs section from bench/results/<name>.json")
    ap.add_argument(
        "--tally", action="store_true", help="judge every stored cross_device results file by today's rule; measure nothing"
    )
    ap.add_argument("--note", default="", help="a paragraph for the docs section (with --markdown-only too)")
    args = ap.parse_args()

    from bench.common import preset, rewrite_section, write_section

    if args.markdown_only:
        rewrite_section(args.results_name, markdown, note=args.note)
        return
    if args.tally:
        tally(args.note)
        return
    if args.quick:
        preset(
            ap,
            args,
            models="digits-cnn",
            agents="uniform,random",
            evals=3,
            latency_source="live",
            finetune_epochs=0.5,
            repeats=1,
            results_name="cross_device_quick",
        )
        os.environ.setdefault("HWPROFILER_ROUND_S", "0")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    _quiet()
    import hwprofiler
    from bench.common import machine, write_json

    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    if len(devices) < 2:
        ap.error("--devices needs at least two devices")
    for d in devices:
        try:
            hwprofiler.fingerprint(hwprofiler.load_device(d))  # a missing runtime is one line now, not after a search
        except hwprofiler.DeviceError as exc:
            ap.error(str(exc))
    info = machine()
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    models = [run_model(m.strip(), devices, args) for m in args.models.split(",") if m.strip()]
    res = {
        "machine": info,
        "fingerprints": {d: hwprofiler.fingerprint(hwprofiler.load_device(d)) for d in devices},
        "args": vars(args),
        "models": models,
        "total_wall_s": time.perf_counter() - t0,
        "loadavg": {"start": load_start, "end": os.getloadavg()[0]},
        "note": args.note,
    }
    path = write_json(args.results_name, res)
    print(f"wrote {path}")
    for m in models:
        for t in m["targets"]:
            print(f"{m['model']:>12} on {t['device']:<11} {t['why']:<40} met: {t['met']}")
    if not args.no_doc:
        write_section(args.results_name, markdown(res))
        print(f"wrote docs/benchmarks.md ({args.results_name} section)")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
