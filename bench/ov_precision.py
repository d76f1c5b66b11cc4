"""OpenVINO's inference precision on this CPU: f32 (what `ov-cpu-1t` compiles) against bf16.

    python bench/ov_precision.py [--models resnet20,resnet56,mobilenetv2] [--rounds 4] [--test-size 2000]
        [--results-name ov_precision] [--no-doc] [--markdown-only [--note TEXT]]

OpenVINO runs a float model in bf16 on CPUs that have bf16 units unless told otherwise
(`INFERENCE_PRECISION_HINT`); the built-in OpenVINO devices ask for f32 so that the latency is that
of the model whose accuracy the search measures. This bench says what that costs here: each zoo
model (Fashion-MNIST checkpoint, batch 1, one thread, LATENCY hint) compiled both ways and timed by
hwprofiler's live measurement, the two alternating A B B A for `--rounds` rounds (the minimum of
each precision's windows is kept: noise on a shared CPU only adds time), with onnxruntime's CPU
provider beside them for scale, and each precision's test accuracy by OpenVINO on `--test-size`
test images with its top-1 agreement with f32. Writes bench/results/<results-name>.json and the
docs/benchmarks.md section of that name. On a CPU without bf16 units (OpenVINO's
OPTIMIZATION_CAPABILITIES lack BF16) hwprofiler refuses a bf16 device; this bench times the bf16
compile there anyway, since that is the cost the refusal spares a user, and the table says so.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_output_options, header, machine, note_lines, publish, rewrite_section, write_json  # noqa: E402

NAME = "ov_precision"
DATASET = "fashion-mnist"


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def predictions(data: bytes, spec: Any, x: Any) -> tuple[Any, str]:
    """Top-1 classes of OpenVINO compiled as `spec` says, one image at a time (the graph's batch), and
    the inference precision OpenVINO compiled it in (its hint may be ignored: bf16 runs f32 on AVX2)."""
    import numpy as np

    from hwprofiler.runtimes.ov import compile_onnx

    compiled = compile_onnx(data, spec)
    precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    request = compiled.create_infer_request()
    out = []
    for i in range(len(x)):
        result = request.infer({0: np.ascontiguousarray(x[i : i + 1])})
        out.append(int(next(iter(result.values())).argmax()))
    return np.array(out), precision


def one_model(model: str, rounds: int, test_size: int) -> dict[str, Any]:
    import hwprofiler
    from hilprune.data import load_dataset
    from hilprune.export import to_onnx_bytes
    from hilprune.models import resolve_model
    from hwprofiler.runtimes import ov

    ov.allow_emulated_precision = True  # time bf16 even where it is emulated: that is what this bench shows

    spec = resolve_model(model, DATASET)
    data = to_onnx_bytes(spec.build(), spec.input_shape)
    f32 = hwprofiler.load_device("ov-cpu-1t")
    bf16 = replace(f32, name="ov-cpu-1t-bf16", runtime_options=f32.runtime_options | {"INFERENCE_PRECISION_HINT": "bf16"})
    ort = hwprofiler.load_device("ort-cpu-1t")
    times: dict[str, list[float]] = {"f32": [], "bf16": [], "ort": []}
    for r in range(rounds):
        order = [("f32", f32), ("bf16", bf16), ("ort", ort)]
        for name, dev in order if r % 2 == 0 else order[::-1]:
            times[name].append(float(hwprofiler.measure_onnx(data, dev, cache=False).latency_ms))
    test = load_dataset(DATASET).test.subset(test_size)
    x, y = test.x.numpy(), test.y.numpy()
    (pred_f32, _), (pred_bf16, compiled_as) = predictions(data, f32, x), predictions(data, bf16, x)
    row: dict[str, Any] = {
        "model": model,
        "f32_ms": min(times["f32"]),
        "bf16_ms": min(times["bf16"]),
        "ort_ms": min(times["ort"]),
        "rounds_ms": times,
        "f32_acc": float((pred_f32 == y).mean()),
        "bf16_acc": float((pred_bf16 == y).mean()),
        "agreement": float((pred_f32 == pred_bf16).mean()),
        "bf16_compiled_as": compiled_as,
        "test_images": int(len(y)),
    }
    _say(
        f"{model}: f32 {row['f32_ms']:.3f} ms, bf16 {row['bf16_ms']:.3f} ms ({row['f32_ms'] / row['bf16_ms']:.2f}x), "
        f"onnxruntime {row['ort_ms']:.3f} ms; test acc f32 {100 * row['f32_acc']:.2f}%, bf16 {100 * row['bf16_acc']:.2f}%"
    )
    return row


def _bf16_fallback(rows: list[dict[str, Any]]) -> str:
    """What OpenVINO made of the bf16 hint on a CPU without bf16 units, as its compiled models said."""
    compiled: set[str | None] = {r.get("bf16_compiled_as") for r in rows}
    if compiled == {"f32"}:
        return "and OpenVINO compiled the bf16 hint as f32: its column is the f32 graph timed again"
    if compiled == {"bf16"}:
        return "so its column is OpenVINO emulating it"
    if None in compiled:  # results from before the compiled precision was recorded
        return "so OpenVINO emulates it or runs f32"
    return f"and OpenVINO compiled the bf16 hint as {' or '.join(sorted(str(c) for c in compiled))}, by model"


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"## OpenVINO f32 against bf16 on this CPU ({res.get('name', NAME)})",
        "",
        header(res["machine"]),
        "Each dense zoo model (Fashion-MNIST), batch 1, one thread, LATENCY hint: OpenVINO compiled with "
        "`INFERENCE_PRECISION_HINT` f32 (the built-in `ov-cpu-1t`) and bf16 (OpenVINO's own default on CPUs with bf16 "
        f"units), onnxruntime's CPU provider for scale; hwprofiler's live measurement, {res['rounds']} rounds alternating "
        f"the three, minimum kept. Accuracy: OpenVINO on {res['test_size']} test images.",
        "",
        "| model | onnxruntime ms | OpenVINO f32 ms | OpenVINO bf16 ms | bf16 over f32 | bf16 over onnxruntime | test acc f32 → bf16 | top-1 agreement |",
        "|---|---|---|---|---|---|---|---|",
    ]
    caps = res.get("capabilities")
    if caps is not None:
        lines[3] += f" OpenVINO's CPU capabilities here: {', '.join(caps)}; bf16 is " + (
            "native."
            if "BF16" in caps
            else f"not native, {_bf16_fallback(res['rows'])} (hwprofiler refuses `ov-cpu-1t-bf16` here)."
        )
    for r in res["rows"]:
        lines.append(
            f"| {r['model']} | {r['ort_ms']:.3f} | {r['f32_ms']:.3f} | {r['bf16_ms']:.3f} | {r['f32_ms'] / r['bf16_ms']:.2f}x | "
            f"{r['ort_ms'] / r['bf16_ms']:.2f}x | {100 * r['f32_acc']:.2f} → {100 * r['bf16_acc']:.2f}% | "
            f"{100 * r['agreement']:.2f}% |"
        )
    return "\n".join(lines + note_lines(res)) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20,resnet56,mobilenetv2")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--test-size", type=int, default=2000)
    add_output_options(ap, NAME)
    args = ap.parse_args(argv)
    if args.markdown_only:
        rewrite_section(args.results_name, markdown, note=args.note)
        return 0
    from hwprofiler.runtimes.ov import capabilities

    res = {
        "name": args.results_name,
        "machine": machine(),
        "rounds": args.rounds,
        "test_size": args.test_size,
        "capabilities": capabilities(),
        "rows": [],
    }
    for model in args.models.split(","):
        res["rows"].append(one_model(model, args.rounds, args.test_size))
        write_json(args.results_name, res)  # after every model
    publish(args, res, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
