"""Episodes per second of `hilprune/LayerPrune-v0`, per latency source, and where the time goes.

    python bench/env_throughput.py [--models resnet20,resnet56] [--sources lut,live,hybrid]
                                   [--episodes 20] [--warmup 2] [--val-size 1000] [--quick]

Random actions (seeded), `constrained` reward, budget 0.5 of the dense latency, Fashion-MNIST
(val subset of --val-size images), device ort-cpu-1t. Phases are the evaluator's (surgery, BN
recalibration, ONNX export, accuracy evaluation, latency) plus `env`: the per-step work (LUT
predictions for observations and budget clipping, including LUT misses measured on the device).
Models without a shipped Fashion-MNIST checkpoint run with random weights (the table says so):
speed does not depend on the weights, accuracies do.

`--quick`: resnet20 only, 8 timed episodes per source. `--fresh-lut` times with an empty LUT
(a cold start: every new kernel is measured on the device during the episodes).
Writes bench/results/env_throughput.json and the `env_throughput` section of docs/benchmarks.md
(`--no-doc` skips the markdown).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PHASES = ("surgery", "bn", "export", "eval", "latency", "env")


def run_one(model: str, source: str, args: argparse.Namespace) -> dict:
    import gymnasium as gym
    import numpy as np

    import envs  # noqa: F401  (registers the ids)
    from envs.evaluator import PolicyEvaluator

    dataset = "digits" if model == "digits-cnn" else args.dataset  # an 8x8 model
    t0 = time.perf_counter()
    ev = PolicyEvaluator(
        model,
        dataset=dataset,
        device=args.device,
        latency_source=source,
        val_size=args.val_size,
        seed=args.seed,
        bn_batch_size=args.bn_batch_size,
        proxy="bn:10",  # BN recalibration only, as every number of this benchmark (searches now default to kd:40)
    )
    setup_s = time.perf_counter() - t0
    lut_at_start = len(ev.lut)
    env = gym.make("hilprune/LayerPrune-v0", evaluator=ev, budget=args.budget, reward="constrained")
    base: Any = env.unwrapped  # the hilprune env under gymnasium's checking wrappers
    env.action_space.seed(args.seed)
    totals = dict.fromkeys(PHASES, 0.0)
    walls, cpus, accs, within, cached = [], [], [], 0, 0
    measured_before = 0
    for ep in range(args.warmup + args.episodes):
        if ep == args.warmup:
            measured_before = ev.lut.measured
        t, c = time.perf_counter(), time.process_time()
        env.reset(seed=args.seed + ep)
        done = False
        while not done:
            _obs, _r, done, _trunc, info = env.step(env.action_space.sample())
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        if ep < args.warmup:
            continue
        res = base.last_result
        walls.append(wall)
        cpus.append(cpu)
        for k, v in res.phases.items():
            if k in totals:
                totals[k] += v
        totals["env"] += max(0.0, wall - res.wall_s)
        accs.append(res.accuracy)
        within += int(info["latency_ms"] <= info["budget_ms"] * (1 + 1e-9))
        cached += int(res.cached)
    total = sum(walls)
    env.close()
    weights = "checkpoint" if ev.spec.checkpoint else "random weights"
    row = {
        "model": model,
        "dataset": dataset,
        "source": source,
        "device": args.device,
        "groups": ev.n_groups,
        "episodes": len(walls),
        "episodes_per_s": len(walls) / total if total else float("nan"),
        "mean_episode_s": total / max(1, len(walls)),
        "mean_episode_cpu_s": sum(cpus) / max(1, len(cpus)),
        "episodes_per_cpu_s": len(cpus) / sum(cpus) if sum(cpus) else float("nan"),
        "median_episode_s": float(np.median(walls)) if walls else float("nan"),
        "phase_share": {k: (v / total if total else 0.0) for k, v in totals.items()},
        "phase_s_per_episode": {k: v / max(1, len(walls)) for k, v in totals.items()},
        "setup_s": setup_s,
        "weights": weights,
        "eval_backend": ev.eval_backend,
        "kernel_map": ev.kmap_ok,
        "dense_accuracy": ev.dense_accuracy,
        "dense_latency_ms": ev.dense_latency_ms,
        "budget_ms": base.budget_ms,
        "mean_accuracy": float(np.mean(accs)) if accs else float("nan"),
        "within_budget_lut": within,
        "cache_hits": cached,
        "live_measurements": ev.n_live,
        "lut_kernels_measured": ev.lut.measured - measured_before,
        "lut_entries_at_start": lut_at_start,
        "lut_path": str(ev.lut.path),
        "val_size": ev.val_size,
        "bn_images": ev.bn_batches * ev.bn_batch_size,
    }
    return row


def markdown(rows: list[dict], info: dict, args: argparse.Namespace) -> str:
    from bench.common import header

    lines = [
        f"## Environment throughput (`hilprune/LayerPrune-v0`, {args.dataset}, up to {args.val_size} val images)\n",
        header(info),
        f"Random actions, reward `constrained`, budget {args.budget} of the dense latency, device `{args.device}`; "
        f"{args.warmup} warm-up episode(s) not timed; BN recalibration on {rows[0]['bn_images'] if rows else '?'} train images. "
        "CPU s/episode is this process's CPU time (what an idle core would take; wall time includes waiting for a busy CPU). "
        "Shares are of the whole episode; `env` is the per-step work (LUT predictions for observations and clipping, "
        f"LUT misses measured on the device included). {'Cold LUT (empty at start).' if args.fresh_lut else 'LUT as found in the cache.'}\n",
        "| model | data (val images) | weights | source | eval on | episodes | episodes/s | s/episode | CPU s/episode | surgery | BN | export | eval | latency | env | LUT entries at start | LUT kernels measured | live runs |",  # noqa: E501
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["phase_share"]
        lines.append(
            f"| {r['model']} | {r['dataset']} ({r['val_size']}) | {r['weights']} | {r['source']} | {r['eval_backend']} | {r['episodes']} | {r['episodes_per_s']:.2f} | "  # noqa: E501
            f"{r['mean_episode_s']:.3f} | {r['mean_episode_cpu_s']:.3f} | "
            + " | ".join(f"{100 * s[k]:.0f}%" for k in PHASES)
            + f" | {r['lut_entries_at_start']} | {r['lut_kernels_measured']} | {r['live_measurements']} |"
        )
    lines.append(
        "\n`eval on`: torch, or onnxruntime on the exported pruned graph (its export is the `export` phase); "
        "the evaluator picks the faster by CPU time at construction, so near-ties can go either way. "
        "Wall times depend on the machine's load; CPU s/episode much less."
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20,resnet56")
    ap.add_argument("--sources", default="lut,live,hybrid")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--device", default="ort-cpu-1t")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--bn-batch-size", type=int, default=25)
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="resnet20 only, 8 timed episodes per source")
    ap.add_argument("--fresh-lut", action="store_true", help="time with an empty LUT and measurement cache (cold start)")
    ap.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    ap.add_argument(
        "--markdown-only", action="store_true", help="rewrite the docs section from bench/results/env_throughput.json"
    )
    args = ap.parse_args()
    if args.markdown_only:
        from bench.common import rewrite_section

        rewrite_section(
            "env_throughput", lambda saved: markdown(saved["rows"], saved["machine"], argparse.Namespace(**saved["args"]))
        )
        return
    if args.quick:
        args.models, args.episodes = "resnet20", 8
    if args.fresh_lut:
        os.environ["HWPROFILER_CACHE"] = tempfile.mkdtemp(prefix="hwprofiler-bench-")
    import torch

    torch.set_num_threads(1)
    from bench.common import machine, write_json, write_section

    info = machine()
    rows = []
    for model in args.models.split(","):
        for source in args.sources.split(","):
            row = run_one(model.strip(), source.strip(), args)
            rows.append(row)
            s = row["phase_share"]
            print(
                f"{row['model']:<10} {row['source']:<6} ({row['weights']}, eval {row['eval_backend']}): "
                f"{row['episodes_per_s']:.2f} episodes/s, {row['mean_episode_s']:.3f} s/episode ({row['mean_episode_cpu_s']:.3f} CPU s) | "
                + " ".join(f"{k} {100 * s[k]:.0f}%" for k in PHASES)
                + f" | LUT kernels measured {row['lut_kernels_measured']}, live runs {row['live_measurements']}",
                flush=True,
            )
            if row["weights"] != "checkpoint":
                print(
                    f"  note: no shipped {row['dataset']} checkpoint for {row['model']}: random weights "
                    "(throughput is representative, accuracies are not)",
                    flush=True,
                )
    path = write_json("env_throughput", {"machine": info, "args": vars(args), "rows": rows})
    print(f"wrote {path}")
    if not args.no_doc:
        write_section("env_throughput", markdown(rows, info, args))
        print("wrote docs/benchmarks.md (env_throughput section)")


if __name__ == "__main__":
    main()
