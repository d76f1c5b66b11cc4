"""Which live statistic agrees with itself on a shared CPU (the latency issue's first deliverable).

    python bench/live_estimator.py [--model resnet20] [--policies 12] [--passes 4] [--gap 45]
                                   [--rounds 5] [--round-s 0.05] [--load-passes 1,3] [--device ort-cpu-1t]

Exports `--policies` random pruned variants of the model (and the dense one) once, then times
them in `--passes` passes, `--gap` seconds apart. Each pass times every policy the device's way
(warm-up, then `--rounds` windows of `--round-s` seconds) interleaved with the dense model
(A B B A ...), keeps every raw sample, and reads them with every estimator in
hwprofiler.stats.ESTIMATORS, alone (ms) and as a ratio to the dense model timed beside it. Passes
listed in `--load-passes` run with a busy process on another core (a shared host's neighbour).

An estimator is judged by how well its numbers for the same policy agree between passes: the share
of (policy, pass pair) within ±5% and ±10%, and the worst disagreement. Writes
bench/results/<results>.json and the <section> section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import header, machine, write_json, write_section  # noqa: E402

LOAD = "import time\nend = time.time() + {s}\nx = 0\nwhile time.time() < end:\n    x += 1\n"


def raw_pair(a: bytes, b: bytes, device, rounds: int, round_s: float) -> tuple[list[list[float]], list[list[float]]]:  # noqa: ANN001
    """Raw windows of `a` and `b` timed A B B A ... as hwprofiler.measure_paired times them, with
    every sample kept (no estimator applied yet)."""
    from dataclasses import replace

    from hwprofiler.measure import _warm, _window, abba_order
    from hwprofiler.runtimes import get_runtime

    policy = replace(device.policy, rounds=rounds, round_s=round_s)
    rt = get_runtime(device.runtime)
    runnables = [rt.load(a, device), rt.load(b, device)]
    for r in runnables:
        _warm(r, policy)
    out: list[list[list[float]]] = [[], []]
    for which in abba_order(rounds):
        out[which].append(_window(runnables[which], policy))
    for r in runnables:
        r.close()
    return out[0], out[1]


def agreement(values: list[list[float]]) -> dict[str, float]:
    """values[pass][policy] -> share of (policy, pass pair) within 5% / 10%, and the worst ratio."""
    rel = []
    for p, q in itertools.combinations(range(len(values)), 2):
        for x, y in zip(values[p], values[q]):
            rel.append(abs(x / y - 1))
    r = np.array(rel)
    return {"within_5pct": float(np.mean(r <= 0.05)), "within_10pct": float(np.mean(r <= 0.10)), "worst": float(r.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--dataset", default="fashion-mnist", help="sets the input shape")
    ap.add_argument("--device", default="ort-cpu-1t")
    ap.add_argument("--policies", type=int, default=12)
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--gap", type=float, default=45.0, help="seconds between passes")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--round-s", type=float, default=0.05)
    ap.add_argument("--round-to", type=int, default=1)
    ap.add_argument("--load-passes", default="1", help="0-based passes run beside a busy process ('' for none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default="live_estimator")
    ap.add_argument("--section", default="live_estimator")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)

    import hwprofiler
    from hilprune.export import to_onnx_bytes
    from hilprune.models import resolve_model
    from hilprune.surgery import Surgeon
    from hwprofiler.stats import ESTIMATORS, estimate

    info = machine()
    device = hwprofiler.load_device(args.device)
    spec = resolve_model(args.model, args.dataset)
    surgeon = Surgeon(spec.build(), spec.input_shape, spec.identity())
    rng = np.random.default_rng(args.seed)
    dense = to_onnx_bytes(surgeon.dense, spec.input_shape)
    graphs = []
    for _ in range(args.policies):
        ratios = rng.uniform(0.0, 0.9, len(surgeon.groups)).tolist()
        pol = surgeon.policy(ratios, round_to=args.round_to)
        graphs.append(to_onnx_bytes(surgeon.apply(pol, count=False).model, spec.input_shape))
    load_passes = {int(x) for x in args.load_passes.split(",") if x.strip()}
    ms: dict[str, list[list[float]]] = {e: [] for e in ESTIMATORS}
    ratio: dict[str, list[list[float]]] = {e: [] for e in ESTIMATORS}
    passes = []
    for p in range(args.passes):
        if p:
            time.sleep(args.gap)
        loader = None
        if p in load_passes:
            loader = subprocess.Popen([sys.executable, "-c", LOAD.format(s=3600)])
            time.sleep(1.0)
        t0 = time.time()
        for e in ESTIMATORS:
            ms[e].append([])
            ratio[e].append([])
        try:
            for g in graphs:
                a, b = raw_pair(g, dense, device, args.rounds, args.round_s)
                for e in ESTIMATORS:
                    va, vb = estimate(a, e), estimate(b, e)
                    ms[e][-1].append(va)
                    ratio[e][-1].append(va / vb)
        finally:
            if loader is not None:
                loader.kill()
                loader.wait()
        passes.append({"pass": p, "load": p in load_passes, "start": t0, "seconds": time.time() - t0})
        print(f"pass {p} ({'loaded' if p in load_passes else 'quiet'}): {time.time() - t0:.1f} s", file=sys.stderr)
    rows = []
    for e in ESTIMATORS:
        rows.append({"estimator": e, "of": "ms", **agreement(ms[e])})
        rows.append({"estimator": e, "of": "ratio to dense (paired)", **agreement(ratio[e])})
    res = {"machine": info, "args": vars(args), "passes": passes, "rows": rows, "ms": ms, "ratio": ratio}
    write_json(args.results, res)
    for r in rows:
        print(
            f"{r['estimator']:>18} {r['of']:>24}: ±5% {r['within_5pct']:.0%}  ±10% {r['within_10pct']:.0%}  worst {r['worst']:.1%}"
        )
    if args.no_doc:
        return
    lines = [
        f"### Live estimators: agreement across passes ({args.model}, {args.device})",
        "",
        header(info),
        f"{args.policies} random policies (round_to {args.round_to}), {args.passes} passes {args.gap:.0f} s apart "
        f"(passes {sorted(load_passes) or 'none'} beside a busy process on the other core); each pass: "
        f"{args.rounds} windows of {args.round_s * 1e3:.0f} ms per model, interleaved A B B A with the dense model. "
        "Every estimator reads the same raw samples. Agreement: share of (policy, pass pair) within ±5% / ±10%, "
        "and the worst disagreement.",
        "",
        "| estimator | of | within ±5% | within ±10% | worst |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['estimator']} | {r['of']} | {r['within_5pct']:.0%} | {r['within_10pct']:.0%} | {r['worst']:.1%} |")
    write_section(args.section, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
