"""Width and precision searched together: one search per `--precision`, each pick fine-tuned alike.

    python bench/search_precision.py [--model resnet56] [--budget 0.3] [--precisions fp32,int8,mixed]
        [--agents uniform,random,tpe] [--evals 30] [--finetune-epochs 0.5] [--device ort-cpu-1t]
        [--remove-blocks N|names] [--results-name search_precision] [--quick] [--no-doc] [--markdown-only]

Per precision (`envs.precision`): `hilprune search --precision P` on Fashion-MNIST at `--budget`
(round_to 8, the default proxy), then `hilprune export --precision auto` of its pick (the most
accurate trial whose live latency meets the budget; INT8 when the pick marks groups int8, with the
scheme the export times on the device) with the same `--finetune-epochs` of distillation for every
precision. Reported: the pick's graph (fp32 / int8 / mixed and how many groups are INT8), its live
speedup over the dense fp32 model (paired), its test accuracy on all 10,000 test images, and the
search's wall time. The issue's target: pruned+INT8 >= 3.5x at <= 0.5 points of test accuracy
from dense fp32 on resnet56. `--remove-blocks` passes `hilprune search --remove-blocks`: residual
blocks removed whole before the widths are searched (a count: the least harmful by val accuracy).

Results go to bench/results/<results-name>.json after each precision (a rerun with the same
settings skips the precisions it holds) and, unless --quick or --no-doc, to the docs/benchmarks.md
section <results-name>. `--quick`: digits-cnn on digits, budget 0.4, 6 evaluations, 0.2 epoch.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, header, machine, preset, rewrite_section, write_json, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runs" / "bench" / "search_precision"
SETTINGS = ("model", "dataset", "budget", "agents", "evals", "finetune_epochs", "device", "seed", "round_to")


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


DEFAULT_AGENTS, DEFAULT_EVALS = "uniform,random,tpe", 30


def one_precision(args: argparse.Namespace, precision: str) -> dict[str, Any]:
    """Search at `precision`, export its pick with the shared fine-tune; the row of the table."""
    from search.export import export_run
    from search.job import resolve_job
    from search.runner import run_search

    run = OUT / (
        f"{args.model}-{args.budget}-{precision}"
        + (f"-blocks{args.remove_blocks}" if args.remove_blocks else "")
        + (f"-{args.latency_source}" if args.latency_source != "lut" else "")
        # other agents, evaluations or seeds search elsewhere (the defaults keep the older run names)
        + (
            f"-{args.agents.replace(',', '+')}{args.evals}"
            if (args.agents, args.evals) != (DEFAULT_AGENTS, DEFAULT_EVALS)
            else ""
        )
        + (f"-s{args.seed}" if args.seed else "")
        + (f"-{args.ppo_start}" if args.ppo_start != "uniform" else "")
    )
    job = resolve_job(
        None,
        model=args.model,
        dataset=args.dataset,
        device=args.device,
        budgets=[args.budget],
        agents=args.agents.split(","),
        evals=args.evals,
        seed=args.seed,
        precision=precision,
        round_to=args.round_to,
        remove_blocks=args.remove_blocks or None,
        latency_source=args.latency_source,
        out=str(run),
        # agent.ppo's start: where PPO's first actions are centred
        agent_options={"ppo": {"start": args.ppo_start}} if args.ppo_start != "uniform" else None,
    )
    _say(f"search {args.model} at {args.budget}, --precision {precision} -> {run}")
    t0 = time.time()
    run_search(job, progress=False)
    search_s = time.time() - t0
    _say(f"export the pick ({args.finetune_epochs:g} epoch(s) of distillation, --precision auto)")
    t1 = time.time()
    res = export_run(run, args.budget, run / "export", finetune_epochs=args.finetune_epochs, precision="auto", progress=False)
    policy = json.loads(Path(res["policy"]).read_text())
    marks = [g.get("precision", "fp32") for g in policy["groups"]]
    quant = res.get("quantization") or {}
    row = {
        "precision": precision,
        "agent": res["agent"],
        "trial": res["trial"],
        "int8_groups": sum(m == "int8" for m in marks),
        "removed_blocks": policy.get("removed_blocks", []),
        "groups": len(marks),
        "shipped": res["precision"],
        "scheme": res.get("scheme"),
        "scheme_reason": quant.get("reason"),
        "speedup": res["speedup"],
        "latency_ms": res["latency_ms"],
        "budget_ms": res["budget_ms"],
        "meets_budget": res["meets_budget"],
        "test_accuracy": res["test_accuracy"],
        "fp32_test_accuracy": res.get("fp32_test_accuracy", res["test_accuracy"]),
        "dense_test_accuracy": res["dense_test_accuracy"],
        "search_s": round(search_s, 1),
        "export_s": round(time.time() - t1, 1),
    }
    _say(
        f"{precision}: {row['agent']}:{row['trial']} ({row['int8_groups']}/{row['groups']} groups INT8, shipped {row['shipped']}) "
        f"{row['speedup']:.2f}x, test {100 * row['test_accuracy']:.2f}% (dense {100 * row['dense_test_accuracy']:.2f}%)"
    )
    return row


def markdown(res: dict[str, Any]) -> str:
    s = res["settings"]
    lines = [
        f"## Width and precision searched together ({res.get('results_name', 'search_precision')})"
        + (
            f": {s['model']}, residual blocks removed first (`--remove-blocks {s['remove_blocks']}`)"
            if s.get("remove_blocks")
            else ""
        ),
        "",
        header(res["machine"]),
        f"{s['model']} on {s['dataset']} at budget {s['budget']} of the dense fp32 model's live latency on `{s['device']}`: "
        f"one `hilprune search --precision P` per row (agents {s['agents']}, {s['evals']} evaluations each, round_to "
        f"{s['round_to']}, proxy kd:40, latency source {s.get('latency_source', 'lut')}), then "
        f"`hilprune export --precision auto` of its pick with {s['finetune_epochs']:g} "
        "epoch(s) of distillation (the same for every row). Speedup: the shipped graph paired with the dense fp32 model, "
        "live; accuracy: all 10,000 test images."
        + (
            f" Residual blocks removed whole before the widths were searched (`--remove-blocks {s['remove_blocks']}`): "
            + "; ".join(
                f"{r['precision']}: {', '.join(r.get('removed_blocks', [])) or 'none'}" for r in res["rows"] if "error" not in r
            )
            + "."
            if s.get("remove_blocks")
            else ""
        ),
        "",
        "| search precision | pick | INT8 groups | shipped | scheme | live speedup | meets budget | test acc. | dense | search wall |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['precision']} | {r['error']} |" + " |" * 8)
            continue
        lines.append(
            f"| {r['precision']} | {r['agent']}:{r['trial']} | {r['int8_groups']}/{r['groups']} | {r['shipped']} | "
            f"{r['scheme'] or '-'} | {r['speedup']:.2f}x | {'yes' if r['meets_budget'] else 'no'} | "
            f"{100 * r['test_accuracy']:.2f}% | {100 * r['dense_test_accuracy']:.2f}% | {r['search_s'] / 60:.1f} min |"
        )
    target = [r for r in res["rows"] if r.get("shipped") == "int8"]
    if s["model"] == "resnet56" and target:
        best = max(target, key=lambda r: r["speedup"])
        loss = 100 * (best["dense_test_accuracy"] - best["test_accuracy"])
        ok = best["speedup"] >= 3.5 and loss <= 0.5
        lines += [
            "",
            f"Target (pruned+INT8 >= 3.5x at <= 0.5 points from dense fp32 on resnet56): **{'met' if ok else 'not met'}**: "
            f"best INT8 row {best['speedup']:.2f}x at {-loss:+.2f} points after {s['finetune_epochs']:g} epoch(s).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--budget", default="0.3")
    ap.add_argument("--precisions", default="fp32,int8,mixed")
    ap.add_argument("--agents", default=DEFAULT_AGENTS)
    ap.add_argument("--evals", type=int, default=DEFAULT_EVALS)
    ap.add_argument("--finetune-epochs", type=float, default=0.5)
    ap.add_argument("--device", default="ort-cpu-1t")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument(
        "--ppo-start", default="uniform", choices=("uniform", "center"), help="where PPO's first actions are centred (agent.ppo)"
    )
    ap.add_argument("--remove-blocks", default="", help="residual blocks removed first: a count or names (hilprune search)")
    ap.add_argument(
        "--latency-source", default="lut", choices=("lut", "hybrid", "live"), help="what each trial's latency is judged by"
    )
    ap.add_argument("--results-name", default="search_precision")
    ap.add_argument("--quick", action="store_true", help="digits-cnn on digits: a smoke run, not a measurement")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--markdown-only", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        preset(ap, args, model="digits-cnn", dataset="digits", budget="0.4", evals=6, finetune_epochs=0.2)
        args.results_name += "_quick" if not args.results_name.endswith("_quick") else ""
    if args.markdown_only:
        rewrite_section(args.results_name, markdown)
        return 0
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    settings = {k: getattr(args, k) for k in SETTINGS}
    if args.remove_blocks:  # only when set: results files from before the option still resume
        settings["remove_blocks"] = args.remove_blocks
    if args.latency_source != "lut":  # likewise
        settings["latency_source"] = args.latency_source
    if args.ppo_start != "uniform":  # likewise
        settings["ppo_start"] = args.ppo_start
    path = RESULTS / f"{args.results_name}.json"
    res: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if res.get("settings") != settings:
        res = {"settings": settings, "rows": []}
    res.setdefault("machine", machine())  # the run that measured the rows (a read-back keeps it)
    res["results_name"] = args.results_name
    for precision in args.precisions.split(","):
        if any(r["precision"] == precision for r in res["rows"]):
            _say(f"{precision}: already measured (bench/results/{args.results_name}.json)")
            continue
        res["machine"] = machine()
        try:
            row = one_precision(args, precision)
        except Exception as exc:  # e.g. a budget this precision cannot reach: the row says so
            from hilprune.errors import HilpruneError

            if not isinstance(exc, HilpruneError):
                raise
            _say(f"{precision}: {exc}")
            row = {"precision": precision, "error": str(exc)}
        res["rows"].append(row)
        write_json(args.results_name, res)
    write_json(args.results_name, res)
    if not args.quick and not args.no_doc:
        write_section(args.results_name, markdown(res))
        print(f"wrote docs/benchmarks.md ({args.results_name} section)")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
