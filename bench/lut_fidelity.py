"""LUT predictor vs FLOPs predictor on random pruning policies, measured live (the latency issue).

    python bench/lut_fidelity.py [--models resnet20,resnet56,mobilenetv2,vgg11,shufflenetv2,densenet,resnext]
                                 [--round-to 1,8] [--samples 30] [--device ort-cpu-1t]
                                 [--results NAME] [--section NAME] [--no-doc]

Each model is calibrated as a search calibrates a new device (at most 30 live runs, `hilprune.calibrate`)
and judged on `--samples` random policies it never saw, at each `--round-to`; every judged policy is
measured live twice, minutes apart (the "live again" ceiling). The test families (shufflenetv2,
densenet, resnext) are the CIFAR-style user models of tests/fixtures/families, loaded as user models.
    python bench/lut_fidelity.py --merge NAME1,NAME2,... --section NAME   # one table from several runs

Writes bench/results/<results>.json (default lut_fidelity) and the <section> section of
docs/benchmarks.md. Run it on a quiet machine: other processes on the cores make live timings
noisy. `--merge` measures nothing: it renders the rows of earlier runs (one process per model on
a many-core machine, say) as one table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import RESULTS, header, machine, write_json, write_section  # noqa: E402
from hilprune.latency_check import check_fidelity  # noqa: E402
from hilprune.models import resolve_model  # noqa: E402

SHAPES = {"digits-cnn": ("digits", None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20,resnet56,mobilenetv2,vgg11,shufflenetv2,densenet,resnext")
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--round-to", default="1,8", help="channel roundings to judge, comma-separated")
    ap.add_argument("--device", default="ort-cpu-1t")
    ap.add_argument("--dataset", default="fashion-mnist", help="sets the input shape of the zoo models")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default="lut_fidelity", help="name of the JSON written to bench/results/")
    ap.add_argument("--section", default="lut_fidelity", help="section of docs/benchmarks.md to write")
    ap.add_argument("--no-doc", action="store_true", help="write the JSON only")
    ap.add_argument("--merge", default=None, help="comma-separated results names: render their rows as one table")
    ap.add_argument("--note", default="", help="with --merge: a paragraph on where and how those runs were made")
    args = ap.parse_args()
    if args.merge:
        runs = [json.loads((RESULTS / f"{n.strip()}.json").read_text()) for n in args.merge.split(",") if n.strip()]
        rows = [r for run in runs for r in run["rows"]]
        info = dict(runs[0]["machine"])
        merge_cmd = (
            machine()["command"].replace(shlex.quote(args.note), "'<the paragraph below>'") if args.note else machine()["command"]
        )
        info["command"] = "; ".join([*dict.fromkeys(run["machine"]["command"] for run in runs), merge_cmd])
        samples = sorted({r.get("samples", len(r["live_ms"])) for r in rows})
        text = markdown(
            rows,
            info,
            runs[0].get("load_at_start", float("nan")),
            runs[0].get("device", args.device),  # results older than the "device" field: --device names it
            "/".join(map(str, samples)),
            title_note=f", {info['cpu']}",
        )
        if args.note:
            head, _, table = text.partition("| model |")
            text = f"{head}{args.note}\n\n| model |{table}"
        write_section(args.section, text)
        print(f"wrote docs/benchmarks.md ({args.section} section) from {len(rows)} rows")
        return
    torch.set_num_threads(1)
    info = machine()
    load_at_start = os.getloadavg()[0]
    rows = []
    for name in args.models.split(","):
        spec = model_spec(name, args.dataset)
        for round_to in (int(x) for x in args.round_to.split(",")):
            r = check_fidelity(spec, args.device, args.samples, args.seed, round_to=round_to)
            print(
                f"{name} r{round_to}: within5 {r['within_5pct']:.2f} within10 {r['within_10pct']:.2f} tau {r['kendall_tau']:.3f} | "
                f"flops within10 {r['flops_within_10pct']:.2f} tau {r['flops_kendall_tau']:.3f} | live again within5 "
                f"{r['live_repeat_within_5pct']:.2f} tau {r['live_repeat_kendall_tau']:.3f} | calib {r['calibration_s']:.0f} s",
                flush=True,
            )
            rows.append(r | {"model": name, "input_shape": list(spec.input_shape)})
            write_json(args.results, {"machine": info, "device": args.device, "rows": rows, "load_at_start": load_at_start})
    if not args.no_doc:
        write_section(args.section, markdown(rows, info, load_at_start, args.device, str(args.samples)))


FAMILIES = {"shufflenetv2", "densenet", "resnext", "regnet", "dpn", "pnasnet", "senet", "mobilenet"}


def model_spec(name: str, dataset: str):  # noqa: ANN201 - hilprune.models.ModelSpec
    """A zoo model (random weights: latency does not depend on them), or a test family as a user model."""
    if name in FAMILIES:
        path = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "families" / f"{name}.py"
        return resolve_model(f"{path}:build", None, (3, 32, 32), 10, use_shipped=False)
    return resolve_model(name, "digits" if name == "digits-cnn" else dataset, use_shipped=False)


def without_macs(row: dict) -> str:
    """The `without MACs` and `model` cells (runs before the MACs term: the model alone)."""
    chosen = row.get("overhead", {}).get("model", "?")
    other = row["ablation"].get("no_macs")
    if other is None:
        return f"– | {chosen}"
    return f"{100 * other['within_10pct']:.0f}% / {other['kendall_tau']:.2f} | {chosen} ({other['model']})"


def markdown(rows: list[dict], info: dict, load_at_start: float, device: str, samples: str, title_note: str = "") -> str:
    lines = [
        f"## LUT fidelity (`{device}`{title_note}, {samples} random policies per model and rounding)\n",
        header(info),
        "Policies: every group's ratio drawn uniformly in [0, 0.9], channels rounded to multiples of `round_to`. "
        "The predictor is calibrated as a search calibrates a new device: at most 30 live runs of uniform and random "
        "policies from another stream (`hilprune.calibrate`), never on the policies judged. Live: the device's "
        "estimator (minimum over 5 windows of 50 ms).\n",
        f"Load average (1 min) at start: {load_at_start:.2f} on {info['cores']} cores.\n",
        "**live again**: each judged policy measured live a second time (no cache), after the whole first pass; how "
        "well live agrees with itself is the ceiling for any predictor on this machine at that time.\n",
        "**kernel sum** and **one scale**: the same judged policies priced by the bare LUT sum, and by one scale for "
        "every kernel class with the same extra terms, fitted on the same calibration runs: what the per-class, "
        "per-layout correction earns. **without MACs**: the correction chosen among the same models less the MACs "
        "term (ms per GMAC), fitted on the same calibration runs; **model**: the correction the calibration chose "
        "(per-class or one scale, `+macs` where it fitted the MACs term), and without the term. "
        "**slower than dense**: judged policies that ran slower than the dense model "
        "live, and how many of all judged policies the predictor put on the right side of the dense model.\n",
        "| model | input | round_to | LUT ±5% | LUT ±10% | LUT τ | kernel sum ±10% / τ | one scale ±10% / τ | without MACs ±10% / τ | model (without MACs) "
        "| FLOPs ±10% / τ | live again ±5% / τ | slower than dense (live; sides right) | calibration (runs, kernels, s) | live ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ks, one = r["ablation"]["kernel_sum"], r["ablation"]["one_scale"]
        lines.append(
            f"| {r['model']} | {'x'.join(map(str, r['input_shape']))} | {r.get('round_to', 1)} | {100 * r['within_5pct']:.0f}% | "
            f"{100 * r['within_10pct']:.0f}% | {r['kendall_tau']:.3f} | {100 * ks['within_10pct']:.0f}% / {ks['kendall_tau']:.2f} | "
            f"{100 * one['within_10pct']:.0f}% / {one['kendall_tau']:.2f} | {without_macs(r)} | "
            f"{100 * r['flops_within_10pct']:.0f}% / {r['flops_kendall_tau']:.2f} | "
            f"{100 * r['live_repeat_within_5pct']:.0f}% / {r['live_repeat_kendall_tau']:.2f} | "
            f"{r['slower_than_dense_live']}; {r['slower_than_dense_agree']}/{r['samples']} | "
            f"{r['calibration_runs']}, {r['lut_kernels_measured']}, {r['calibration_s']:.0f} | "
            f"{min(r['live_ms']):.3f}–{max(r['live_ms']):.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
