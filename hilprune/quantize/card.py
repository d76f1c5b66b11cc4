"""The model card's INT8 section: what was quantized, how, and why this scheme."""

from __future__ import annotations

from typing import Any


def _pct(x: float | None) -> str:
    return f"{100 * x:.2f}%" if x is not None else "-"


def _ms(x: float | None) -> str:
    return f"{x:.4g} ms" if x is not None else "-"


def candidates_table(report: dict[str, Any]) -> str:
    """One row per scheme tried: its paired timing against fp32, validation accuracy and verdict."""
    rows = [
        "| scheme | format | activations / weights | per-channel | reduce_range | INT8 | fp32 (paired) | speedup | val accuracy | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["candidates"]:
        speed = f"{c['speedup']:.2f}x" if c.get("speedup") else "-"
        verdict = c["verdict"] + (f" ({c['error']})" if c.get("error") else "")
        rows.append(
            f"| {c['name']} | {c['format']} | {c['activations']} / {c['weights']} | {c['per_channel']} | {c['reduce_range']} "
            f"| {_ms(c['int8_ms'])} | {_ms(c['fp32_ms'])} | {speed} | {_pct(c['val_accuracy'])} | {verdict} |"
        )
    return "\n".join(rows)


def markdown(report: dict[str, Any]) -> str:
    """The `## Precision` section of MODEL_CARD.md from `QuantizeOutcome.to_dict()`."""
    acc, cal = report["accuracy"], report["calibration"]
    tol = 100 * report["accuracy_tolerance"]
    lines = ["## Precision", ""]
    if report["precision"] == "int8":
        s = report["scheme"]
        agree = report["agreement_val"]
        lines += [
            f"`model.onnx` is **INT8**: onnxruntime static quantization (`quantize_static`), format "
            f"{s['format'].upper()}, {s['activations']} activations and int8 weights, "
            f"{'per-channel' if s['per_channel'] else 'per-tensor'} weight scales"
            f"{', 7-bit weights (reduce_range)' if s['reduce_range'] else ''}; MinMax calibration on "
            f"{cal['images']} images of the **train** split. `model.fp32.onnx` is the same model in fp32.",
            "",
            f"Why this scheme: {report['reason']}.",
            "",
            "| | fp32 | INT8 |",
            "|---|---|---|",
            f"| test accuracy | {_pct(acc['fp32']['test'])} | {_pct(acc['int8']['test'])} |",
            f"| validation accuracy | {_pct(acc['fp32']['val'])} | {_pct(acc['int8']['val'])} |",
            f"| live latency (paired) | {_ms(report['live_latency_ms']['fp32'])} | {_ms(report['live_latency_ms']['int8'])} |",
            "",
            f"Output agreement on {agree['images']} validation images: top-1 {_pct(agree['top1'])}, "
            f"max abs logit difference {agree['max_abs_logit_diff']:.3g}.",
        ]
    else:
        lines += [f"`model.onnx` stays **fp32**: {report['reason']}."]
    if report.get("excluded_nodes"):
        lines += ["", f"Left in fp32 by the policy's per-group precision: {', '.join(report['excluded_nodes'])}."]
    lines += [
        "",
        f"Every candidate was quantized on the client and timed on `{report['device']}` paired with the fp32 graph "
        f"(interleaved A B B A, hwprofiler.measure_paired). A scheme is kept when it runs at least "
        f"{report['min_speedup']:g}x faster than fp32 and its validation accuracy is within {tol:.2g} points of fp32's; "
        "the fastest such scheme wins.",
        "",
        candidates_table(report),
        "",
    ]
    return "\n".join(lines)
