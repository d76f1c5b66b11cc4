"""LUT predictor vs FLOPs predictor on random pruning policies, measured live (hwprofiler issue).

    python bench/lut_fidelity.py [--models resnet20,resnet56,mobilenetv2] [--samples 50] [--device ort-cpu-1t]

Writes bench/results/lut_fidelity.json and the `lut_fidelity` section of docs/benchmarks.md.
Run it on a quiet machine: other processes on the cores make live timings noisy.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import header, machine, write_json, write_section  # noqa: E402
from hilprune.latency_check import check_fidelity  # noqa: E402
from hilprune.models import resolve_model  # noqa: E402

SHAPES = {"digits-cnn": ("digits", None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20,resnet56,mobilenetv2,vgg11,digits-cnn")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--device", default="ort-cpu-1t")
    ap.add_argument("--dataset", default="fashion-mnist", help="sets the input shape of the zoo models")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    info = machine()
    load_at_start = os.getloadavg()[0]
    rows = []
    for name in args.models.split(","):
        dataset = "digits" if name == "digits-cnn" else args.dataset
        spec = resolve_model(name, dataset, use_shipped=False)
        r = check_fidelity(spec, args.device, args.samples, args.seed)
        print(f"{name}: within10 {r['within_10pct']:.2f} tau {r['kendall_tau']:.3f} | flops within10 {r['flops_within_10pct']:.2f} "
              f"tau {r['flops_kendall_tau']:.3f} | live again within10 {r['live_repeat_within_10pct']:.2f} tau {r['live_repeat_kendall_tau']:.3f}", flush=True)
        rows.append(r | {"input_shape": list(spec.input_shape)})
    write_json("lut_fidelity", {"machine": info, "rows": rows})
    lines = [f"## LUT fidelity (`{args.device}`, {args.samples} random policies per model)\n", header(info),
             "Policies: every group's ratio drawn uniformly in [0, 0.9]. The overhead model is fitted on 12 calibration policies (4 uniform, 8 random from another stream), never on the policies judged.\n",
             f"Load average (1 min) at start: {load_at_start:.2f} on {info['cores']} cores (other processes make live timings noisy).\n",
             "**live again**: each judged policy measured live a second time (no cache); how well live agrees with itself is the ceiling for any predictor on this machine at that time.\n",
             "| model | input | LUT within ±10% | LUT MAPE | LUT Kendall τ | FLOPs within ±10% | FLOPs MAPE | FLOPs Kendall τ | live again within ±10% | live again τ | live ms (min–max) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {'x'.join(map(str, r['input_shape']))} | {100 * r['within_10pct']:.0f}% | {100 * r['mape']:.1f}% | "
                     f"{r['kendall_tau']:.3f} | {100 * r['flops_within_10pct']:.0f}% | {100 * r['flops_mape']:.1f}% | "
                     f"{r['flops_kendall_tau']:.3f} | {100 * r['live_repeat_within_10pct']:.0f}% | {r['live_repeat_kendall_tau']:.3f} | "
                     f"{min(r['live_ms']):.3f}–{max(r['live_ms']):.3f} |")
    write_section("lut_fidelity", "\n".join(lines))


if __name__ == "__main__":
    main()
