"""Which least-squares ridge the export should refit with: each fixed ridge against `--ridge auto`.

    python bench/export_ridge.py --picks RESULTS.json:AGENT:SEED[,...] [--finetune-epochs 0.25]
        [--results-name export_ridge] [--no-doc] [--markdown-only]

Per pick (a row of a bench/compare_agents.py results file: the same trial of the same search job,
its run directory resolved against the checkout that holds the results file), `hilprune export
--precision fp32` runs with `--ridge auto` (search.ridge: each of 0.001, 0.01 and 0.1 refitted,
BN-recalibrated and distilled for 40 steps of 64 images, the best on 2000 validation images kept),
then with each other ridge fixed, and with `--reconstruct 0` (no refit). Every export fine-tunes the
same seeded `--finetune-epochs` of distillation from the refitted model, so a fixed ridge equal to
auto's choice repeats auto's result exactly and is not run again (a row kept from an earlier run
may hold both). Reported: test accuracy (all 10,000 Fashion-MNIST test
images) before and after the fine-tune, and what the probe scored and cost. Results are written
after every export; a rerun skips the exports already in bench/results/<results-name>.json, and
the rows of picks it does not name are kept (with the same --finetune-epochs), so picks can be added.
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

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runs" / "bench" / "export_ridge"


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ridge_key(ridge: float) -> str:
    """The exports' key of a fixed ridge (auto's choice is looked up under it too)."""
    return f"ridge {ridge:g}"


def find_pick(spec: str) -> dict[str, Any]:
    """The compare_agents row named by ``RESULTS.json:AGENT:SEED``, its run_dir made absolute; the trial
    is the one compare_agents fine-tuned (the export rule's pick, `trial_live_rule`, where the row has one)."""
    from hilprune.errors import HilpruneError

    path, agent, seed = spec.rsplit(":", 2)
    results = Path(path).resolve()
    rows = json.loads(results.read_text())
    for row in rows:
        if row.get("agent") == agent and str(row.get("seed")) == seed and row.get("run_dir") and row.get("trial") is not None:
            checkout = results.parent.parent.parent  # <checkout>/bench/results/<name>.json
            return {
                "pick": f"{results.stem}:{agent}:{seed}",
                "model": row["model"],
                "budget": str(row["budget"]),
                "trial": f"{agent}:{row.get('trial_live_rule', row['trial'])}",
                "run_dir": str(checkout / row["run_dir"]),
            }
    raise HilpruneError(f"{spec}: no {agent} row of seed {seed} with a trial in {results}")


def table_rows(earlier: dict[str, Any], picks: list[dict[str, Any]], epochs: float) -> dict[str, dict[str, Any]]:
    """The table's rows by pick: an earlier run's rows stay (a run adds picks to the table) when they
    were fine-tuned for the same `epochs`; a pick named again resumes its row, a new one starts empty."""
    rows = {r["pick"]: r for r in earlier.get("rows", []) if earlier.get("finetune_epochs") == epochs}
    for pick in picks:
        rows.setdefault(pick["pick"], pick | {"exports": {}})
    return rows


def export_one(pick: dict[str, Any], name: str, ridge: float | None, reconstruct: int | None, epochs: float) -> dict[str, Any]:
    from search.export import export_run

    t = time.time()
    res = export_run(
        pick["run_dir"], pick["budget"], OUT / pick["pick"].replace(":", "-") / name, trial=pick["trial"],
        finetune_epochs=epochs, precision="fp32", reconstruct=reconstruct, ridge=ridge, progress=False,
    )  # fmt: skip
    return {
        "ridge": res["least_squares_ridge"],
        "probe": res.get("least_squares_ridge_probe"),
        "test_before": res["test_accuracy_before_finetune"],
        "test_after": res["test_accuracy"],
        "val_after": res["val_accuracy"],
        "dense_test": res["dense_test_accuracy"],
        "speedup": res["speedup"],
        "wall_s": round(time.time() - t, 1),
    }


def markdown(res: dict[str, Any]) -> str:
    from bench.common import header
    from search.ridge import RIDGES

    lines = [
        "## The export's least-squares ridge: fixed, or chosen by a short probe (export_ridge)",
        "",
        header(res["machine"]),
        "Per pick (a `compare_agents` row: the same trial of the same search job), `hilprune export --precision fp32` with "
        f"the same seeded {res['finetune_epochs']:g} epoch(s) of distillation from the dense model, the pruned layers refitted "
        "by least squares on 64 train images with each ridge, or not refitted. **auto** (`--ridge auto`, the default since "
        "this bench): each of 0.001, 0.01 and 0.1 refitted, BN-recalibrated and distilled for 40 steps of 64 images, the best by "
        "accuracy on 2000 validation images kept. Test accuracy on all 10,000 test images, after the fine-tune (before it "
        "in brackets).",
        "",
        "| pick | model@budget | live speedup | no refit | ridge 0.001 | ridge 0.01 | ridge 0.1 | auto's choice (probe val % per ridge) | probe s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        ex = r["exports"]
        auto = ex.get("auto")

        def cell(key: str, ex: dict[str, Any] = ex, auto: dict[str, Any] | None = auto) -> str:
            chosen = auto is not None and key == ridge_key(auto["ridge"])
            e = ex.get(key) or (auto if chosen else None)
            if e is None:
                return "-"
            bold = "**" if chosen else ""
            return f"{bold}{100 * e['test_after']:.2f}%{bold} ({100 * e['test_before']:.1f})"

        probe = auto["probe"] if auto else None
        choice, cost = "-", "-"
        if auto and probe:
            choice = f"{auto['ridge']:g} (" + ", ".join(f"{k}: {100 * v:.1f}" for k, v in probe["scores"].items()) + ")"
            cost = str(probe["wall_s"])
        speed = next((e["speedup"] for e in ex.values() if e), 0.0)
        ridges = " | ".join(cell(k) for k in ("none", *(ridge_key(r) for r in RIDGES)))
        lines.append(f"| {r['pick']} | {r['model']}@{r['budget']} | {speed:.2f}x | {ridges} | {choice} | {cost} |")
    lines += ["", "Bold: the ridge auto chose (its export is the one run with auto)."]
    if res.get("note"):
        lines += ["", res["note"]]
    lines += ["", f"Results: `bench/results/{res['name']}.json`."]
    return "\n".join(lines)


def main() -> int:
    from bench.common import RESULTS, machine, rewrite_section, write_json, write_section
    from search.ridge import RIDGES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--picks", default="", help="RESULTS.json:AGENT:SEED, comma-separated (compare_agents rows)")
    ap.add_argument("--finetune-epochs", type=float, default=0.25, help="the same for every export (compare_agents': 0.25)")
    ap.add_argument("--results-name", default="export_ridge")
    ap.add_argument("--note", default="", help="what the run shows (kept in the results; with --markdown-only too)")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--markdown-only", action="store_true")
    args = ap.parse_args()
    if args.markdown_only:
        rewrite_section(args.results_name, markdown, args.note)
        return 0
    if not args.picks:
        ap.error("--picks is required (RESULTS.json:AGENT:SEED, comma-separated)")
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    saved = RESULTS / f"{args.results_name}.json"
    earlier = json.loads(saved.read_text()) if saved.is_file() else {}
    res: dict[str, Any] = {
        "name": args.results_name,
        "finetune_epochs": args.finetune_epochs,
        "machine": machine(),
        "note": args.note or earlier.get("note", ""),
        "rows": [],
    }
    picks = [find_pick(spec) for spec in (p.strip() for p in args.picks.split(",")) if spec]
    rows = table_rows(earlier, picks, args.finetune_epochs)
    res["rows"] = list(rows.values())
    for pick in picks:
        row = rows[pick["pick"]]
        runs: list[tuple[str, float | None, int | None]] = [("auto", None, None)]
        runs += [(ridge_key(r), r, None) for r in RIDGES] + [("none", None, 0)]
        for key, ridge, reconstruct in runs:
            auto = row["exports"].get("auto")
            if key in row["exports"] or (auto is not None and key == ridge_key(auto["ridge"])):
                continue
            _say(f"{pick['pick']} {pick['trial']}: export, {key}, {args.finetune_epochs:g} epoch(s)")
            row["exports"][key] = e = export_one(pick, key.replace(" ", ""), ridge, reconstruct, args.finetune_epochs)
            _say(f"  ridge {e['ridge']}: test {100 * e['test_before']:.2f}% -> {100 * e['test_after']:.2f}% in {e['wall_s']} s")
            write_json(args.results_name, res)
    if not args.no_doc:
        write_section(args.results_name, markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
