"""How strong a ridge the least-squares refit needs so that a fine-tune from it does not diverge.

    python bench/ls_ridge.py [--cells resnet20@0.35=proxy_fidelity_refit6_r20,resnet56@0.4=proxy_fidelity_refit4_r56,
        mobilenetv2@0.4=proxy_fidelity_refit4_mbv2_04] [--policies 3] [--ridges 0.001,0.01,0.1,1]
        [--steps 40] [--lr 0.01] [--val-size 2000] [--results-name ls_ridge] [--no-doc] [--markdown-only]

Per cell (model@budget=results name), the first `--policies` candidates of that bench/proxy_fidelity.py
results file (random same-latency policies, with its round_to), pruned and then, once per ridge in
`--ridges` (relative to the mean diagonal of the normal equations, `hilprune.surgery.reconstruct`):
every layer that lost input channels refitted by least squares on 64 train images, BN recalibrated
(10 batches of 25), val accuracy ("before"), the norm of all conv and linear weights against the dense
model's, then `--steps` steps of distillation from the dense model (batch 64, cosine from `--lr`, what
the export and the proxy's reference run) and val accuracy again ("after"). A refit that fits the few
images too closely inflates the weights, and the fine-tune from it then falls instead of rising.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, header, machine, rewrite_section, write_json, write_section  # noqa: E402

DEFAULT_CELLS = (
    "resnet20@0.35=proxy_fidelity_refit6_r20,resnet56@0.4=proxy_fidelity_refit4_r56,mobilenetv2@0.4=proxy_fidelity_refit4_mbv2_04"
)
LS_IMAGES = 64  # as the export and the ls proxies refit


def weight_norm(model: Any) -> float:
    """The Frobenius norm of all conv and linear weights together."""
    return float(sum(float(p.detach().norm()) ** 2 for p in model.parameters() if p.ndim > 1) ** 0.5)


def run_cell(cell: str, source: str, args: argparse.Namespace, res: dict[str, Any], save: Any) -> None:
    import torch

    from envs.evaluator import PolicyEvaluator
    from hilprune.data import load_dataset
    from hilprune.surgery.reconstruct import reconstruct
    from hilprune.train import evaluate, recalibrate_bn
    from hilprune.train.distill import KDConfig, finetune_kd

    torch.set_num_threads(1)
    src = json.loads((RESULTS / f"{source}.json").read_text())
    model, _, _ = cell.partition("@")
    candidates = src["cells"][cell]["candidates"][: args.policies]
    ev = PolicyEvaluator(
        model, dataset="fashion-mnist", device="sim-cpu", latency_source="lut", round_to=src["settings"]["round_to"],
        val_size=args.val_size, proxy="bn:10",
    )  # fmt: skip
    data = load_dataset("fashion-mnist")
    val = data.val.subset(args.val_size)  # what the evaluator's val_size keeps
    images = data.train.x[:LS_IMAGES]
    dense_norm = weight_norm(ev.surgeon.dense)
    entry = res["cells"].setdefault(cell, {"source": source, "dense_norm": dense_norm, "rows": []})
    done = {(r["index"], r["ridge"]) for r in entry["rows"]}
    for i, ratios in enumerate(candidates):
        policy = ev.policy(ratios)
        removed = ev.surgeon.removed_out_channels(policy)
        for ridge in args.ridge_list:
            if (i, ridge) in done:
                continue
            t0 = time.perf_counter()
            net = ev.surgeon.apply(policy, count=False).model
            reconstruct(net, ev.surgeon.dense, images, removed, ridge=ridge, seed=0)
            recalibrate_bn(net, data.train, 10, batch_size=25, seed=0)
            before, norm = evaluate(net, val), weight_norm(net)
            cfg = KDConfig(lr=args.lr, batch_size=64)
            finetune_kd(
                net, ev.surgeon.dense, data, steps=args.steps, lr=args.lr, cfg=cfg, progress=False, val=False, device="cpu"
            )
            after = evaluate(net, val)
            row = {"index": i, "ridge": ridge, "before": before, "after": after, "norm_ratio": norm / dense_norm}
            entry["rows"].append(row | {"wall_s": time.perf_counter() - t0})
            print(
                f"{cell} #{i} ridge {ridge:g}: before {before:.3f}, ‖W‖/dense {norm / dense_norm:.2f}, after {after:.3f}",
                flush=True,
            )
            save()


def markdown(res: dict[str, Any]) -> str:
    s = res["settings"]
    lines = [
        "## Least-squares refit: how strong a ridge (`hilprune/surgery/reconstruct.py`, Fashion-MNIST)\n",
        header(res["machine"]),
        f"Per cell, the first {s['policies']} same-latency random policies of the named bench/proxy_fidelity.py run. Each is "
        f"refitted by least squares on {LS_IMAGES} train images with the ridge of the row (relative to the mean diagonal of "
        "the normal equations), BN recalibrated (10 x 25 images), then fine-tuned by "
        f"{s['steps']} steps of distillation from the dense model (batch 64, lr {s['lr']} cosine). *before* / *after*: val "
        f"accuracy on {s['val_size']} images before and after that fine-tune, mean (worst) over the policies; ‖W‖ / dense: "
        "the norm of all conv and linear weights against the dense model's.\n",
        "| cell | ridge | before % | after % | after − before | ‖W‖ / dense |",
        "|---|---|---|---|---|---|",
    ]
    for cell, entry in res["cells"].items():
        for ridge in s["ridges"]:
            rows = [r for r in entry["rows"] if r["ridge"] == ridge]
            if not rows:
                continue
            b, a = [100 * r["before"] for r in rows], [100 * r["after"] for r in rows]
            gain = statistics.mean(a) - statistics.mean(b)
            lines.append(
                f"| {cell} ({entry['source']}) | {ridge:g} | {statistics.mean(b):.1f} ({min(b):.1f}) | "
                f"{statistics.mean(a):.1f} ({min(a):.1f}) | {gain:+.1f} | {statistics.mean(r['norm_ratio'] for r in rows):.2f} |"
            )
    if res.get("note"):
        lines += ["", res["note"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default=DEFAULT_CELLS, help="model@budget=proxy_fidelity results name, comma-separated")
    ap.add_argument("--policies", type=int, default=3)
    ap.add_argument("--ridges", default="0.001,0.01,0.1,1")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--val-size", type=int, default=2000)
    ap.add_argument("--results-name", default="ls_ridge")
    ap.add_argument("--note", default="")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--markdown-only", action="store_true")
    args = ap.parse_args(argv)
    if args.markdown_only:
        rewrite_section(args.results_name, markdown, note=args.note)
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        args.ridge_list = [float(x) for x in args.ridges.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--ridges: numbers, comma-separated, got {args.ridges!r}")
    settings = {
        "policies": args.policies,
        "ridges": args.ridge_list,
        "steps": args.steps,
        "lr": args.lr,
        "val_size": args.val_size,
    }
    path = RESULTS / f"{args.results_name}.json"
    res: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if res.get("settings") != settings:  # other settings: start over; the same: resume
        res = {"settings": settings, "cells": {}}
    res["machine"] = machine()
    if args.note:
        res["note"] = args.note
    for item in [c.strip() for c in args.cells.split(",") if c.strip()]:
        cell, _, source = item.partition("=")
        if not source or not (RESULTS / f"{source}.json").is_file():
            ap.error(f"--cells: {item!r} names no bench/results file (write model@budget=proxy_fidelity results name)")
        run_cell(cell, source, args, res, lambda: write_json(args.results_name, res))
    write_json(args.results_name, res)
    print(f"wrote {path}")
    if not args.no_doc:
        write_section(args.results_name, markdown(res))


if __name__ == "__main__":
    main()
