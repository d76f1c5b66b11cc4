"""Does a paired live ratio hold across the machine's speed changes when the two graphs differ in precision?

    python bench/paired_precision.py [--model resnet20] [--device ort-cpu-1t] [--ratio 0.05] [--repeats 12]
        [--scheme qdq-u8s8] [--results-name paired_precision] [--no-doc] [--markdown-only [--note TEXT]]

hwprofiler judges a pruned graph by its latency *paired* with the dense model's (A B B A windows):
when the vCPU slows for seconds at a time, both slow alike and the ratio holds. That premise was
measured for fp32 graphs. On an Ice Lake Xeon an INT8 graph's ratio to the fp32 dense model moved
from 0.47 to 0.81 between measurements minutes apart (docs/benchmarks.md, cross_device_icl_int8_r20).
This bench measures four pairs, interleaved, `--repeats` times each:

- fp32 pruned against fp32 dense (the premise's own case);
- INT8 pruned against fp32 dense (what an INT8 search compares with its fp32 budget);
- INT8 pruned against INT8 dense (same precision on both sides);
- INT8 pruned against fp32 dense through the bridge (`hwprofiler/bridge.py`: the third pair's ratio
  times each dense graph's fastest time over conversion pairs), as searches and exports time
  all-INT8 graphs; its reference is the dense INT8 graph.

For each pair: the median ratio, its spread (max / min, and the interquartile range over the median),
and Spearman's rho between the ratio and the reference's own latency in the same measurement (near 0:
the ratio does not follow the machine's speed). Writes bench/results/<results-name>.json and the
docs/benchmarks.md section of that name.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_output_options, header, machine, note_lines, publish, rewrite_section  # noqa: E402

NAME = "paired_precision"
DATASET = "fashion-mnist"
PAIRS = ("fp32/fp32", "int8/fp32", "int8/int8", "int8 bridged/fp32")
BRIDGED = "int8 bridged/fp32"  # through the dense INT8 graph and the conversion (hwprofiler.bridge), as searches time INT8


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def graphs(model: str, ratio: float, scheme: str) -> dict[str, bytes]:
    """The dense and uniformly pruned graphs (channels rounded to 8), each in fp32 and in INT8 (`scheme`)."""
    from hilprune.export import to_onnx_bytes
    from hilprune.models import resolve_model
    from hilprune.surgery import Surgeon
    from hwprofiler.quantization import Scheme, quantize_structure

    spec = resolve_model(model, DATASET)
    surgeon = Surgeon(spec.build(), spec.input_shape, spec.identity())
    pruned = surgeon.apply(surgeon.policy([ratio] * len(surgeon.groups), round_to=8), count=False).model
    fp32 = {"dense": to_onnx_bytes(surgeon.dense, spec.input_shape), "pruned": to_onnx_bytes(pruned, spec.input_shape)}
    chosen = Scheme.parse(scheme)
    return fp32 | {f"{k}_int8": quantize_structure(v, chosen) for k, v in fp32.items()}


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    import numpy as np

    r = np.array([x["ratio"] for x in rows])
    q1, med, q3 = np.percentile(r, [25, 50, 75])
    return {
        "median": float(med),
        "min": float(r.min()),
        "max": float(r.max()),
        "max_over_min": float(r.max() / r.min()),
        "iqr_over_median": float((q3 - q1) / med),
        "rho_ratio_vs_reference_ms": spearman(list(r), [x["reference_ms"] for x in rows]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import hwprofiler

    g = graphs(args.model, args.ratio, args.scheme)
    dev = hwprofiler.load_device(args.device)
    members = {
        "fp32/fp32": (g["pruned"], g["dense"]),
        "int8/fp32": (g["pruned_int8"], g["dense"]),
        "int8/int8": (g["pruned_int8"], g["dense_int8"]),
    }
    from hwprofiler.bridge import PrecisionBridge

    bridge = PrecisionBridge(g["dense"], g["dense_int8"], dev)
    samples: dict[str, list[dict[str, float]]] = {p: [] for p in PAIRS}
    for i in range(args.repeats):
        order = PAIRS if i % 2 == 0 else PAIRS[::-1]
        for pair in order:
            if pair == BRIDGED:
                b = bridge.measure(g["pruned_int8"], cache=False)
                ratio, m = b.ratio, b.pair
            else:
                model, reference = members[pair]
                m = hwprofiler.measure_paired(model, reference, dev, cache=False)
                ratio = m.ratio
            samples[pair].append(
                {"ratio": float(ratio), "model_ms": float(m.model.latency_ms), "reference_ms": float(m.reference.latency_ms)}
            )
        _say(f"repeat {i + 1}/{args.repeats}: " + ", ".join(f"{p} {samples[p][-1]['ratio']:.3f}" for p in PAIRS))
    return {
        "name": args.results_name,
        "machine": machine(),
        "model": args.model,
        "device": args.device,
        "ratio": args.ratio,
        "scheme": args.scheme,
        "repeats": args.repeats,
        "samples": samples,
        "summary": {p: summary(samples[p]) for p in PAIRS},
        "bridge": bridge.summary(),
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"## Paired live ratios across precisions ({res['name']})",
        "",
        header(res["machine"]),
        f"{res['model']} (Fashion-MNIST shapes), every group pruned by {res['ratio']} (channels rounded to 8), on "
        f"`{res['device']}`; INT8 is {res['scheme']} (the graph a search prices, `quantize_structure`). Each pair measured "
        f"{res['repeats']} times by hwprofiler's paired measurement (A B B A windows, the device's estimator), the "
        f"{len(res['summary'])} pairs interleaved. rho: Spearman's rank correlation of the ratio with the reference's latency in the same "
        "measurement (the machine's speed at the time).",
        "",
        "| pruned / reference | median ratio | min – max | max / min | IQR / median | rho (ratio, reference ms) |",
        "|---|---|---|---|---|---|",
    ]
    for pair, s in res["summary"].items():  # results from before the bridge have three pairs
        lines.append(
            f"| {pair} | {s['median']:.3f} | {s['min']:.3f} – {s['max']:.3f} | {s['max_over_min']:.2f} | "
            f"{s['iqr_over_median']:.3f} | {s['rho_ratio_vs_reference_ms']:+.2f} |"
        )
    if res.get("bridge"):
        b = res["bridge"]
        ratios = ", ".join(f"{r:.3f}" for r in b["int8_conversion_ratios"])
        lines += [
            "",
            f"The bridge's conversion: {b['int8_conversion']:.3f} from {len(b['int8_conversion_ratios'])} pairs of the dense "
            f"graphs (their own ratios {ratios}); {b['int8_reference_retries']} pair(s) measured again because the dense "
            "INT8 side ran slow. Its rho is against the dense INT8 graph's latency.",
        ]
    return "\n".join(lines + note_lines(res)) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--device", default="ort-cpu-1t")
    ap.add_argument("--ratio", type=float, default=0.05, help="every group's prune ratio")
    ap.add_argument("--scheme", default="qdq-u8s8")
    ap.add_argument("--repeats", type=int, default=12)
    add_output_options(ap, NAME)
    args = ap.parse_args(argv)
    if args.markdown_only:
        rewrite_section(args.results_name, markdown, note=args.note)
        return 0
    publish(args, run(args), markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
