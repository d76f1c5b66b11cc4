"""Pruning and INT8 together: live latency and test accuracy on the zoo models (Fashion-MNIST).

    python bench/prune_quantize.py [--parts dense,calibration,uniform,pruned] [--uniform-ratios 0,0.25,0.5,0.75] [--models resnet20,resnet56,mobilenetv2]
                                   [--device ort-cpu-1t] [--calibration-size 100] [--calibration-sizes 50,100,200,400]
                                   [--budgets 0.5,0.3 | --cells resnet56@0.4,...] [--search-agents uniform,random,tpe] [--search-evals 30]
                                   [--finetune-epochs 0.5] [--quick] [--no-doc] [--markdown-only]

Parts (each writes bench/results/<name>.json and its docs/benchmarks.md section):

- `dense` (prune_quantize_dense): each model with its shipped checkpoint, fp32 and every INT8 scheme
  (QDQ / QOperator x U8S8 / S8S8, per-channel, reduce_range where the CPU lacks VNNI), calibrated on
  `--calibration-size` train images. Each INT8 graph is timed paired with the fp32 graph
  (hwprofiler.measure_paired, fresh), test accuracy by onnxruntime on all 10k test images, and the
  scheme `hilprune export --precision int8` would choose (hilprune.quantize.select_scheme on these
  timings, head-to-head pairs of the close ones, and the validation accuracy). Targets: the chosen scheme >= 1.8x at <= 0.3 points of test
  accuracy lost on every model, and never slower than fp32.
- `calibration` (int8_calibration): `--calibration-models` (resnet20, mobilenetv2), QDQ U8S8,
  calibration on 50/100/200/400 train images: calibration time and validation/test accuracy.
- `uniform` (prune_quantize_uniform): every group pruned by 0/0.25/0.5/0.75 (round_to 8), latency
  only: pruned fp32 and pruned INT8 (QDQ U8S8) paired with the dense model, and INT8 paired with its
  own fp32 graph. Shows how INT8's gain changes as channels are removed.
- `pruned` (prune_quantize, or prune_quantize_quick with --quick): per model and budget,
  `bench/search_precision.py --precisions fp32,int8` (its results: bench/results/
  search_precision_<model>_<budget>.json, read back when already measured with the same settings):
  an fp32 search (widths alone) and an INT8 search (widths under INT8 prices and INT8 accuracy),
  each pick exported with `--precision auto` after the same distillation (`--finetune-epochs`).
  A Pareto plot of every point against the dense fp32 and INT8 models. Target: pruned+INT8 >= 3.5x
  at <= 0.5 points from dense fp32 on resnet56.

`--quick`: every part on resnet20 only: the dense schemes, calibration on 50 and 100 images,
uniform ratios 0 and 0.5, and the pruned part at budget 0.5 (uniform agent, 6 evaluations, 0.05
fine-tune epochs). Quick results are written under `<name>_quick`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DATASET = "fashion-mnist"
MODELS = ("resnet20", "resnet56", "mobilenetv2")
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runs" / "bench" / "prune_quantize"


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("search", "agent", "envs", "hwprofiler", "hilprune", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- dense: fp32 vs every scheme --------------------------------------------------------------------
def dense_model(model: str, device: str, calibration_size: int, bundle: Any) -> dict[str, Any]:
    import hwprofiler
    from hilprune.export import to_onnx_bytes
    from hilprune.models import resolve_model
    from hilprune.quantize import TrainCalibration, onnx_eval, select_scheme
    from hilprune.quantize.select import Timing
    from hwprofiler.quantization import Quantizer, candidate_schemes

    spec = resolve_model(model, DATASET)
    fp32 = to_onnx_bytes(spec.build(), spec.input_shape)
    dev = hwprofiler.load_device(device)
    schemes = candidate_schemes(hwprofiler.fingerprint(dev))
    graphs: dict[str, bytes] = {}
    t0 = time.perf_counter()
    with Quantizer(fp32, TrainCalibration(bundle, calibration_size)) as q:
        for s in schemes:
            graphs[s.name] = q.quantize(s)
    quantize_s = time.perf_counter() - t0
    timings = {}
    for s in schemes:
        pair = hwprofiler.measure_paired(graphs[s.name], fp32, dev, cache=False)
        timings[s.name] = Timing(pair.model.latency_ms, pair.reference.latency_ms, pair.ratio)
        _say(
            f"{model} {s.name}: {pair.model.latency_ms:.4g} ms vs fp32 {pair.reference.latency_ms:.4g} ms ({1 / pair.ratio:.2f}x)"
        )
    fp32_val = onnx_eval.logits(fp32, bundle.val)
    val: dict[str, float] = {}

    def val_acc(s: Any) -> float:
        val[s.name] = onnx_eval.accuracy(onnx_eval.logits(graphs[s.name], bundle.val), bundle.val)
        return val[s.name]

    def compare(a: Any, b: Any) -> float:  # as hilprune.quantize.pipeline: close schemes timed head to head
        pair = hwprofiler.measure_paired(graphs[a.name], graphs[b.name], dev, cache=False)
        _say(f"{model} {a.name} vs {b.name}: {pair.model.latency_ms:.4g} / {pair.reference.latency_ms:.4g} ms = {pair.ratio:.3f}")
        return float(pair.ratio)

    sel = select_scheme(schemes, lambda s: timings[s.name], val_acc, onnx_eval.accuracy(fp32_val, bundle.val), compare=compare)
    test = {"fp32": onnx_eval.accuracy(onnx_eval.logits(fp32, bundle.test), bundle.test)}
    for s in schemes:
        test[s.name] = onnx_eval.accuracy(onnx_eval.logits(graphs[s.name], bundle.test), bundle.test)
        _say(f"{model} {s.name}: test accuracy {100 * test[s.name]:.2f}% (fp32 {100 * test['fp32']:.2f}%)")
    fp32_ms = min(t.fp32_ms for t in timings.values())
    return {
        "model": model,
        "fp32_ms": fp32_ms,
        "fp32_test": test["fp32"],
        "fp32_val": sel.fp32_val_accuracy,
        "quantize_s": round(quantize_s, 2),
        "schemes": [
            t.to_dict() | {"test_accuracy": test[t.scheme.name], "val_accuracy": val.get(t.scheme.name)} for t in sel.trials
        ],
        "chosen": sel.chosen.scheme.name if sel.chosen else None,
        "reason": sel.reason,
    }


def dense_part(args: argparse.Namespace, bundle: Any) -> dict[str, Any]:
    rows = [dense_model(m, args.device, args.calibration_size, bundle) for m in args.models.split(",")]
    return {"device": args.device, "calibration_size": args.calibration_size, "models": rows}


# --- calibration size ---------------------------------------------------------------------------
def calibration_model(model: str, sizes: list[int], bundle: Any) -> dict[str, Any]:
    from hilprune.export import to_onnx_bytes
    from hilprune.models import resolve_model
    from hilprune.quantize import TrainCalibration, onnx_eval
    from hwprofiler.quantization import Quantizer, Scheme

    spec = resolve_model(model, DATASET)
    fp32 = to_onnx_bytes(spec.build(), spec.input_shape)
    rows = [
        {
            "images": 0,
            "val": onnx_eval.accuracy(onnx_eval.logits(fp32, bundle.val), bundle.val),
            "test": onnx_eval.accuracy(onnx_eval.logits(fp32, bundle.test), bundle.test),
        }
    ]
    for n in sizes:
        with Quantizer(fp32, TrainCalibration(bundle, n)) as q:
            t0 = time.perf_counter()
            graph = q.quantize(Scheme("qdq", "u8"))
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            q.quantize(Scheme("qoperator", "u8"))  # ranges reused: quantization alone
            again = time.perf_counter() - t0
        row = {
            "images": n,
            "calibrate_and_quantize_s": round(first, 2),
            "quantize_only_s": round(again, 2),
            "calibration_s": round(max(first - again, 0.0), 2),
            "val": onnx_eval.accuracy(onnx_eval.logits(graph, bundle.val), bundle.val),
            "test": onnx_eval.accuracy(onnx_eval.logits(graph, bundle.test), bundle.test),
        }
        _say(f"{model} calibration {n}: {row['calibration_s']} s, val {100 * row['val']:.2f}%, test {100 * row['test']:.2f}%")
        rows.append(row)
    return {"model": model, "rows": rows}


def calibration_part(args: argparse.Namespace, bundle: Any) -> dict[str, Any]:
    sizes = [int(x) for x in args.calibration_sizes.split(",")]
    return {"scheme": "qdq-u8s8", "models": [calibration_model(m, sizes, bundle) for m in args.calibration_models.split(",")]}


# --- uniform: how INT8 gains change with pruning (latency only) ----------------------------------
def uniform_part(args: argparse.Namespace, bundle: Any) -> dict[str, Any]:
    import hwprofiler
    from hilprune.export import to_onnx_bytes
    from hilprune.models import resolve_model
    from hilprune.quantize import TrainCalibration
    from hilprune.surgery import Surgeon
    from hwprofiler.quantization import Quantizer, Scheme

    dev = hwprofiler.load_device(args.device)
    scheme = Scheme("qdq", "u8")
    rows = []
    for model in args.models.split(","):
        spec = resolve_model(model, DATASET)
        surgeon = Surgeon(spec.build(), spec.input_shape, spec.identity())
        dense = to_onnx_bytes(surgeon.dense, spec.input_shape)
        for ratio in [float(r) for r in args.uniform_ratios.split(",")]:
            policy = surgeon.policy([ratio] * len(surgeon.groups), round_to=8)
            fp32 = to_onnx_bytes(surgeon.apply(policy, count=False).model, spec.input_shape)
            with Quantizer(fp32, TrainCalibration(bundle, args.calibration_size)) as q:
                int8 = q.quantize(scheme)
            a = hwprofiler.measure_paired(fp32, dense, dev, cache=False)
            b = hwprofiler.measure_paired(int8, dense, dev, cache=False)
            c = hwprofiler.measure_paired(int8, fp32, dev, cache=False)
            row = {
                "model": model,
                "ratio": ratio,
                "channels": [g.channels_after for g in policy.groups],
                "kernels_int8": len(hwprofiler.kernels_from_onnx(int8)),
                "fp32_speedup": 1 / a.ratio,
                "int8_speedup": 1 / b.ratio,
                "int8_over_fp32": 1 / c.ratio,
                "int8_ms": c.model.latency_ms,
                "fp32_ms": c.reference.latency_ms,
            }
            _say(
                f"{model} uniform {ratio}: fp32 {row['fp32_speedup']:.2f}x, int8 {row['int8_speedup']:.2f}x of dense fp32; "
                f"int8 over its own fp32 {row['int8_over_fp32']:.2f}x"
            )
            rows.append(row)
    return {"device": args.device, "scheme": scheme.name, "round_to": 8, "rows": rows}


def uniform_markdown(res: dict[str, Any]) -> str:
    from bench.common import header

    lines = [
        f"## INT8 on pruned models (uniform policies, round_to 8, `{res['device']}`, {res['scheme']}, latency only)",
        "",
        header(res["machine"]),
        "Every group pruned by the same ratio (shipped checkpoints, no fine-tune: accuracy is not measured here). "
        "Speedups are paired live measurements: pruned fp32 and pruned INT8 against the dense fp32 model, and the "
        "pruned INT8 graph against its own fp32 graph.",
        "",
        "| model | ratio | kept channels (first, last group) | INT8 kernels | pruned fp32 vs dense | pruned INT8 vs dense | INT8 vs its fp32 (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['model']} | {r['ratio']:.2f} | {r['channels'][0]}, {r['channels'][-1]} | {r['kernels_int8']} "
            f"| {r['fp32_speedup']:.2f}x | {r['int8_speedup']:.2f}x | {r['int8_over_fp32']:.2f}x "
            f"({r['int8_ms']:.3f} vs {r['fp32_ms']:.3f}) |"
        )
    lines += [
        "",
        "INT8's gain shrinks as pruning removes channels: the number of kernels stays the same, and each INT8 kernel "
        "(requantization, the separate QLinearAdd of a residual block, channels-last reorders) has a fixed cost that "
        "narrow convs no longer hide. Where INT8 is slower than the pruned fp32 graph, `--precision int8` keeps fp32.",
        "",
        f"Results: `bench/results/{res['name']}.json`.",
    ]
    return "\n".join(lines)


# --- pruned: an fp32 search and an INT8 search at each budget ------------------------------------------
SHORT = {"resnet20": "r20", "resnet56": "r56", "mobilenetv2": "mbv2"}


def cell_name(model: str, budget: str, quick: bool = False) -> str:
    """The search_precision results file of one (model, budget) cell."""
    return f"search_precision_{SHORT.get(model, model)}_{budget.replace('.', '')}" + ("_quick" if quick else "")


def pruned_cells(args: argparse.Namespace) -> list[tuple[str, str, str, bool]]:
    """(model, budget, results name, whether the name was given) of each cell: `--cells`
    (model@budget[:name]), else `--models` x `--budgets`."""
    if not args.cells:
        return [(m, b, cell_name(m, b, args.quick), False) for m in args.models.split(",") for b in args.budgets.split(",")]
    out = []
    for item in args.cells.split(","):
        cell, _, named = item.partition(":")
        model, _, budget = cell.partition("@")
        out.append((model, budget, named or cell_name(model, budget, args.quick), bool(named)))
    return out


def pruned_part(args: argparse.Namespace) -> dict[str, Any]:
    """Per model and budget, bench/search_precision.py with --precisions fp32,int8: a widths-only
    search and an INT8 search (widths under INT8 prices and accuracy), each pick exported with
    `--precision auto` after the same distillation. A cell already measured with the same settings
    is read back, not rerun."""
    import contextlib
    import io

    from bench import search_precision

    rows = []
    for model, budget, name, named in pruned_cells(args):
        cell = _load(name) if named else None
        if cell is not None:  # a run made under its own name and settings (say, --remove-blocks): read back as is
            _say(f"{model} at {budget}: read back bench/results/{name}.json")
        else:
            argv = ["--model", model, "--budget", budget, "--precisions", "fp32,int8", "--agents", args.search_agents]
            argv += ["--evals", str(args.search_evals), "--finetune-epochs", str(args.finetune_epochs), "--device", args.device]
            argv += ["--seed", str(args.seed), "--results-name", name, "--no-doc"]
            _say(f"{model} at {budget}: python bench/search_precision.py {' '.join(argv)}")
            with contextlib.redirect_stdout(io.StringIO()):
                search_precision.main(argv)
            cell = _load(name) or {"rows": []}
        source = cell.get("settings", {}).get("latency_source", "lut")
        rows += [{"model": model, "budget": budget, "cell": name, "latency_source": source} | r for r in cell["rows"]]
    return {
        "device": args.device,
        "budgets": ", ".join(f"{m}@{b}" for m, b, _, _ in pruned_cells(args)) if args.cells else f"budgets {args.budgets}",
        "note": args.note,
        "search": {"agents": args.search_agents, "evals": args.search_evals, "round_to": 8},
        "finetune_epochs": args.finetune_epochs,
        "rows": rows,
    }


def pareto_plot(dense: dict[str, Any] | None, pruned: dict[str, Any] | None, path: Path) -> Path | None:
    """Test accuracy against live speedup over the dense fp32 model (paired), per model: the dense
    INT8 schemes and each search's pick. Speedups, not milliseconds: the runs lie hours apart and
    the vCPU's speed moves, while a paired ratio holds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m["model"] for m in (dense or {}).get("models", [])] or sorted({r["model"] for r in (pruned or {}).get("rows", [])})
    if not models:
        return None
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        d = next((m for m in (dense or {}).get("models", []) if m["model"] == model), None)
        if d:
            ax.scatter([1.0], [100 * d["fp32_test"]], marker="s", color="k", label="dense fp32")
            for s in d["schemes"]:
                if s["int8_ms"] is not None:
                    chosen = s["name"] == d["chosen"]
                    ax.scatter([s["speedup"]], [100 * s["test_accuracy"]], marker="*" if chosen else "o", s=80 if chosen else 30)
                    ax.annotate(f"dense {s['name']}", (s["speedup"], 100 * s["test_accuracy"]), fontsize=7)
        for r in (pruned or {}).get("rows", []):
            if r["model"] == model and "error" not in r:
                color = "tab:blue" if r["precision"] == "fp32" else "tab:red"
                blocks = len(r.get("removed_blocks") or [])
                ax.scatter([r["speedup"]], [100 * r["test_accuracy"]], color=color, marker="D" if blocks else "^")
                label = f"{r['precision']} search @{r['budget']}" + (f", -{blocks} blocks" if blocks else "")
                ax.annotate(label, (r["speedup"], 100 * r["test_accuracy"]), fontsize=7)
        ax.set_title(model)
        ax.set_xlabel("live speedup over dense fp32 (ort-cpu-1t, paired)")
        ax.set_ylabel("test accuracy, %")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- markdown -----------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return f"{100 * x:.2f}" if x is not None else "-"


def dense_markdown(res: dict[str, Any]) -> str:
    from bench.common import header

    lines = [
        f"## INT8 schemes on the dense zoo models (`{res['device']}`, Fashion-MNIST test set)",
        "",
        header(res["machine"]),
        f"ISA flags: {', '.join(res['isa']) or '-'}; calibration: {res['calibration_size']} train images (MinMax); "
        "per-channel int8 weights; every INT8 graph timed paired with the fp32 graph (A B B A, 5 windows of 50 ms, "
        "min), accuracy by onnxruntime on the exact graph (batch 1).",
        "",
        "| model | fp32 ms | "
        + " | ".join(f"{s['name']} ms (x)" for s in res["models"][0]["schemes"])
        + " | chosen | test acc fp32 -> chosen |",
        "|---|---|" + "---|" * len(res["models"][0]["schemes"]) + "---|---|",
    ]
    for m in res["models"]:
        cells = [f"{s['int8_ms']:.3f} ({s['speedup']:.2f}x)" if s["int8_ms"] else "failed" for s in m["schemes"]]
        c = next((s for s in m["schemes"] if s["name"] == m["chosen"]), None)
        acc = f"{_pct(m['fp32_test'])} -> {_pct(c['test_accuracy'])}" if c else f"{_pct(m['fp32_test'])} (fp32 kept)"
        lines.append(f"| {m['model']} | {m['fp32_ms']:.3f} | " + " | ".join(cells) + f" | {m['chosen'] or 'fp32'} | {acc} |")
    lines += ["", "Test accuracy (%) of every scheme:", ""]
    lines += ["| model | fp32 | " + " | ".join(s["name"] for s in res["models"][0]["schemes"]) + " |"]
    lines += ["|---|---|" + "---|" * len(res["models"][0]["schemes"])]
    for m in res["models"]:
        lines.append(
            f"| {m['model']} | {_pct(m['fp32_test'])} | " + " | ".join(_pct(s["test_accuracy"]) for s in m["schemes"]) + " |"
        )
    h2h = [
        f"{m['model']}: {s['name']} took {s['head_to_head']['ratio']:.3f}x the time of {s['head_to_head']['vs']}"
        for m in res["models"]
        for s in m["schemes"]
        if s.get("head_to_head")
    ]
    if h2h:
        lines += ["", "Close schemes timed head to head (INT8 against INT8, paired): " + "; ".join(h2h) + "."]
    lines += ["", "Targets (the chosen scheme):", ""]
    for m in res["models"]:
        c = next((s for s in m["schemes"] if s["name"] == m["chosen"]), None)
        if c is None:
            lines.append(f"- {m['model']}: fp32 kept ({m['reason']}): not slower than fp32; the 1.8x target is **not met**")
            continue
        loss = 100 * (m["fp32_test"] - c["test_accuracy"])
        ok = c["speedup"] >= 1.8 and loss <= 0.3
        lines.append(
            f"- {m['model']}: {c['name']} {c['speedup']:.2f}x, test {loss:+.2f} points lost "
            f"(target >= 1.8x at <= 0.3 points: **{'met' if ok else 'not met'}**); "
            f"never slower than fp32: **{'met' if c['speedup'] > 1 else 'not met'}**"
        )
    lines += [
        "",
        "For comparison, the issue's Intel Xeon (AVX-512 VNNI, AMX; 200 calibration images) ran QDQ S8S8 at 0.59x / "
        "0.44x / 0.99x and QDQ U8S8 at 1.92x / 2.26x / 2.00x of fp32 on resnet20 / resnet56 / mobilenetv2: the same "
        "order of schemes as here. The documented first choice (QDQ S8S8) is slower than fp32 on both CPUs for the "
        "resnets.",
        "",
        f"Results: `bench/results/{res['name']}.json`.",
    ]
    return "\n".join(lines)


def calibration_markdown(res: dict[str, Any]) -> str:
    from bench.common import header

    lines = [
        f"## INT8 calibration size ({res['scheme']}, Fashion-MNIST)",
        "",
        header(res["machine"]),
        "Calibration images are the first N of the train split; calibration time is the first quantize_static call "
        "(MinMax ranges computed) minus a second one that reuses the ranges. Accuracy by onnxruntime on the INT8 graph "
        "(val: 5000 images, test: 10000).",
        "",
        "| model | calibration images | calibration s | val acc % | test acc % |",
        "|---|---|---|---|---|",
    ]
    for m in res["models"]:
        for r in m["rows"]:
            label = "fp32 (none)" if r["images"] == 0 else str(r["images"])
            lines.append(f"| {m['model']} | {label} | {r.get('calibration_s', '-')} | {_pct(r['val'])} | {_pct(r['test'])} |")
    from hilprune.quantize.defaults import CALIBRATION_SIZE

    spans = []
    for m in res["models"]:
        q = [r for r in m["rows"] if r["images"]]
        test = [100 * r["test"] for r in q]
        spans.append(f"{m['model']} by {max(test) - min(test):.2f} points (fp32 {_pct(m['rows'][0]['test'])})")
    lines += [
        "",
        f"Across calibration sizes the INT8 test accuracy moves {'; '.join(spans)}: a few of the 10,000 test images, "
        "with no trend in the number of calibration images, while calibration time grows with it (timings on a "
        "shared 2-core VM are noisy). hilprune's default "
        f"(`--calibration-size`, hilprune/quantize/defaults.py) is {CALIBRATION_SIZE}.",
        "",
        f"Results: `bench/results/{res['name']}.json`.",
    ]
    return "\n".join(lines)


def pruned_markdown(res: dict[str, Any]) -> str:
    from bench.common import header

    s = res["search"]
    dense = {m["model"]: m for m in (_load("prune_quantize_dense") or {}).get("models", [])}
    lines = [
        f"## Pruning and INT8 together (`{res['device']}`, {', '.join(dict.fromkeys(res['budgets'].split(', ')))}, "
        "Fashion-MNIST)" + (": quick run (a smoke test of the method, not a result)" if res.get("quick") else ""),
        "",
        header(res["machine"]),
        f"Per model and budget, `bench/search_precision.py --precisions fp32,int8`: one `hilprune search` with "
        f"`--precision fp32` (widths alone) and one with `--precision int8` (widths searched under INT8 prices and "
        f"INT8 accuracy), agents {s['agents']}, {s['evals']} evaluations each, round_to {s['round_to']}, proxy kd:40; "
        f"each pick exported with `--precision auto` after {res['finetune_epochs']:g} epoch(s) of distillation (the "
        "same for every row). Speedup: the shipped graph paired live with the dense fp32 model; accuracy: all 10,000 "
        "test images. The dense rows come from the `prune_quantize_dense` section (no fine-tune).",
        "",
        "| model | budget | search | pick | INT8 groups | shipped | live speedup | meets budget | test acc. | vs dense fp32 "
        "| run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in dict.fromkeys(r["model"] for r in res["rows"]):
        d = dense.get(model)
        if d:
            c = next((x for x in d["schemes"] if x["name"] == d["chosen"]), None)
            lines.append(f"| {model} | - | dense fp32 | - | - | fp32 | 1.00x | - | {_pct(d['fp32_test'])}% | - | - |")
            if c:
                delta = 100 * (c["test_accuracy"] - d["fp32_test"])
                lines.append(
                    f"| {model} | - | dense INT8 | - | all | int8 ({c['name']}) | {c['speedup']:.2f}x | - | "
                    f"{_pct(c['test_accuracy'])}% | {delta:+.2f} | - |"
                )
        for r in (r for r in res["rows"] if r["model"] == model):
            if "error" in r:
                lines.append(f"| {model} | {r['budget']} | {r['precision']} | {r['error']} |" + " |" * 6 + f" `{r['cell']}` |")
                continue
            shipped = r["shipped"] + (f" ({r['scheme']})" if r.get("scheme") else "")
            delta = 100 * (r["test_accuracy"] - r["dense_test_accuracy"])
            search = r["precision"] + (f", {len(r['removed_blocks'])} blocks removed" if r.get("removed_blocks") else "")
            search += f", {r['latency_source']}" if r.get("latency_source", "lut") != "lut" else ""
            lines.append(
                f"| {model} | {r['budget']} | {search} | {r['agent']}:{r['trial']} | {r['int8_groups']}/{r['groups']} "
                f"| {shipped} | {r['speedup']:.2f}x | {'yes' if r['meets_budget'] else 'no'} | {_pct(r['test_accuracy'])}% "
                f"| {delta:+.2f} | `{r['cell']}` |"
            )
    r56 = [r for r in res["rows"] if r["model"] == "resnet56" and r.get("shipped") == "int8"]
    within = [r for r in r56 if 100 * (r["dense_test_accuracy"] - r["test_accuracy"]) <= 0.5]
    if within:
        best = max(within, key=lambda r: r["speedup"])
        loss = 100 * (best["dense_test_accuracy"] - best["test_accuracy"])
        verdict = "met" if best["speedup"] >= 3.5 else "not met"
        lines += [
            "",
            f"Target pruned+INT8 >= 3.5x at <= 0.5 points lost on resnet56: the fastest INT8 pick within 0.5 points runs "
            f"{best['speedup']:.2f}x ({loss:+.2f} points lost, budget {best['budget']}): **{verdict}**.",
        ]
    elif r56:
        lines += [
            "",
            "Target pruned+INT8 >= 3.5x at <= 0.5 points lost on resnet56: no INT8 pick within 0.5 points: **not met**.",
        ]
    else:
        lines += ["", "Target pruned+INT8 >= 3.5x at <= 0.5 points lost on resnet56: **not measured** in this run."]
    if res.get("note"):
        lines += ["", res["note"]]
    if res.get("plot"):
        lines += ["", f"![Pareto]({res['plot']})"]
    cells = ", ".join(f"`{n}`" for n in dict.fromkeys(r["cell"] for r in res["rows"]))
    lines += ["", f"Results: `bench/results/{res['name']}.json` (each cell's run: {cells} in bench/results)."]
    return "\n".join(lines)


def _load(name: str) -> dict[str, Any] | None:
    """An earlier part's results (bench/results/<name>.json), if any."""
    import json

    from bench.common import RESULTS

    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="dense,calibration,uniform,pruned")
    ap.add_argument("--uniform-ratios", default="0,0.25,0.5,0.75")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--device", default="ort-cpu-1t")
    ap.add_argument("--calibration-size", type=int, default=None, help="default: hilprune.quantize's")
    ap.add_argument("--calibration-sizes", default="50,100,200,400")
    ap.add_argument("--calibration-models", default="resnet20,mobilenetv2")
    ap.add_argument("--budgets", default="0.5,0.3")
    ap.add_argument(
        "--cells",
        default="",
        help="pruned part: model@budget[:results-name] instead of --models x --budgets (a results name: a search_precision "
        "run made under another name and its own settings, e.g. --remove-blocks; read back as is when it exists)",
    )
    ap.add_argument("--search-agents", default="uniform,random,tpe")
    ap.add_argument("--search-evals", type=int, default=30)
    ap.add_argument("--finetune-epochs", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="pruned part: resnet20 at 0.5, 6 evaluations; calibration 50,100")
    ap.add_argument(
        "--note",
        default="",
        help="pruned part: a paragraph for its docs section (what the numbers say; with --markdown-only too)",
    )
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the docs sections from bench/results")
    args = ap.parse_args()

    from bench.common import machine, preset, rewrite_section, write_json, write_section

    names = {
        "dense": "prune_quantize_dense",
        "calibration": "int8_calibration",
        "uniform": "prune_quantize_uniform",
        "pruned": "prune_quantize",
    }
    if args.quick:
        names = {k: f"{v}_quick" for k, v in names.items()}
    render = {
        "dense": dense_markdown,
        "calibration": calibration_markdown,
        "uniform": uniform_markdown,
        "pruned": pruned_markdown,
    }
    parts = args.parts.split(",")
    if args.markdown_only:  # --note is the pruned part's paragraph
        for part in parts:
            rewrite_section(names[part], render[part], note=args.note if part == "pruned" else "")
        return
    if args.quick:
        preset(ap, args, calibration_sizes="50,100", calibration_models="resnet20", budgets="0.5", search_agents="uniform")
        preset(ap, args, search_evals=6, uniform_ratios="0,0.5", models="resnet20")
        preset(ap, args, finetune_epochs=0.05)
    if args.calibration_size is None:
        from hilprune.quantize.defaults import CALIBRATION_SIZE

        args.calibration_size = CALIBRATION_SIZE
    _quiet()
    import torch

    torch.set_num_threads(1)
    from hilprune.data import load_dataset
    from hwprofiler.cpu import cpu_info

    bundle = load_dataset(DATASET)
    info = machine()
    results: dict[str, Any] = {}
    for part in ("dense", "calibration", "uniform", "pruned"):
        if part not in parts:
            continue
        t0 = time.time()
        if part == "dense":
            res = dense_part(args, bundle)
        elif part == "calibration":
            res = calibration_part(args, bundle)
        elif part == "uniform":
            res = uniform_part(args, bundle)
        else:
            dense = results.get("dense") or _load(names["dense"]) or _load("prune_quantize_dense")
            res = pruned_part(args)
            plot = pareto_plot(dense, res, ROOT / "docs" / "img" / f"{names['pruned']}.png")
            res["plot"] = str(plot.relative_to(ROOT / "docs")) if plot else None
        res |= {
            "name": names[part],
            "machine": info,
            "isa": cpu_info()["isa"],
            "wall_s": round(time.time() - t0, 1),
            "quick": args.quick,
        }
        results[part] = res
        path = write_json(names[part], res)
        _say(f"wrote {path}")
        if not args.no_doc:
            write_section(names[part], render[part](res))


if __name__ == "__main__":
    main()
