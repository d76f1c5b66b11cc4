"""Does least-squares reconstruction before fine-tuning pay at export? The same pick, exported twice.

    python bench/reconstruct_export.py [--cells resnet20@0.5,resnet56@0.4] [--images 64]
        [--finetune-epochs 0.5] [--results-name reconstruct_export] [--no-doc] [--markdown-only]

Per cell (model@budget on Fashion-MNIST), the fp32 search that bench/search_precision.py ran
(runs/bench/search_precision/<model>-<budget>-fp32: run that bench first) and the trial its
export shipped are exported again by `hilprune export --precision fp32`, once with
`--reconstruct 0` and once with `--reconstruct --images`: every layer that lost input channels
refitted by least squares on that many train images (hilprune/surgery/reconstruct.py) before BN
recalibration and the same seeded distillation (`--finetune-epochs`). Reported: test accuracy
before and after fine-tuning, on all 10,000 test images, and the export's wall time.
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
RUNS = ROOT / "runs" / "bench" / "search_precision"
OUT = ROOT / "runs" / "bench" / "reconstruct_export"


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def one_cell(cell: str, args: argparse.Namespace) -> dict[str, Any]:
    from hilprune.errors import HilpruneError
    from search.export import export_run

    model, _, budget = cell.partition("@")
    run = RUNS / f"{model}-{budget}-fp32"
    shipped = run / "export" / "policy.json"
    if not shipped.is_file():
        raise HilpruneError(
            f"{run}: no exported pick; run python bench/search_precision.py --model {model} --budget {budget} first"
        )
    source = json.loads(shipped.read_text())["metrics"]["source"]
    trial = f"{source['agent']}:{source['trial']}"
    row: dict[str, Any] = {"cell": cell, "model": model, "budget": budget, "trial": trial}
    for images in (0, args.images):
        _say(f"{cell}: export {trial}, --reconstruct {images}, {args.finetune_epochs:g} epoch(s)")
        t = time.time()
        res = export_run(
            run, budget, OUT / f"{model}-{budget}-ls{images}", trial=trial, finetune_epochs=args.finetune_epochs,
            precision="fp32", reconstruct=images, progress=False,
        )  # fmt: skip
        row[f"ls{images}"] = {
            "test_before": res["test_accuracy_before_finetune"],
            "test_after": res["test_accuracy"],
            "dense_test": res["dense_test_accuracy"],
            "speedup": res["speedup"],
            "wall_s": round(time.time() - t, 1),
        }
        _say(f"  before {100 * res['test_accuracy_before_finetune']:.2f}%, after {100 * res['test_accuracy']:.2f}%")
    return row


def markdown(res: dict[str, Any]) -> str:
    from bench.common import header

    n = res["images"]
    lines = [
        "## Least-squares reconstruction before the export's fine-tune (reconstruct_export)",
        "",
        header(res["machine"]),
        f"Per cell, the pick of the fp32 search of `bench/search_precision.py`, exported twice by `hilprune export "
        f"--precision fp32` with the same seeded {res['finetune_epochs']:g} epoch(s) of distillation: without reconstruction, "
        f"and with `--reconstruct {n}` (each layer that lost input channels refitted by least squares, in forward order, "
        f"to reproduce the dense layer's kept outputs on {n} train images, before BN recalibration). Test accuracy on all "
        "10,000 test images.",
        "",
        "| cell | trial | live speedup | test before fine-tune | with ls | test after | with ls | gain after | dense |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        a, b = r["ls0"], r[f"ls{n}"]
        lines.append(
            f"| {r['cell']} | {r['trial']} | {a['speedup']:.2f}x | {100 * a['test_before']:.2f}% | {100 * b['test_before']:.2f}% "
            f"| {100 * a['test_after']:.2f}% | {100 * b['test_after']:.2f}% | {100 * (b['test_after'] - a['test_after']):+.2f} "
            f"| {100 * a['dense_test']:.2f}% |"
        )
    if res.get("note"):
        lines += ["", res["note"]]
    lines += ["", f"Results: `bench/results/{res['name']}.json`."]
    return "\n".join(lines)


def main() -> int:
    from bench.common import machine, rewrite_section, write_json, write_section

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="resnet20@0.5,resnet56@0.4")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--finetune-epochs", type=float, default=0.5)
    ap.add_argument("--results-name", default="reconstruct_export")
    ap.add_argument("--note", default="")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--markdown-only", action="store_true")
    args = ap.parse_args()
    if args.markdown_only:
        rewrite_section(args.results_name, markdown)
        return 0
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    res: dict[str, Any] = {
        "name": args.results_name,
        "images": args.images,
        "finetune_epochs": args.finetune_epochs,
        "machine": machine(),
        "note": args.note,
        "rows": [],
    }
    for cell in [c.strip() for c in args.cells.split(",") if c.strip()]:
        res["rows"].append(one_cell(cell, args))
        write_json(args.results_name, res)
    if not args.no_doc:
        write_section(args.results_name, markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
