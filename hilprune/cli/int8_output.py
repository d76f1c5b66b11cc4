"""What `prune` and `export` share for `--precision int8`: options checked once, the result printed."""

from __future__ import annotations

from typing import Any

from ..errors import HilpruneError
from .output import console, print_table

PRECISIONS = ("fp32", "int8")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise HilpruneError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def quantize_options(
    calibration_size: int, tolerance_points: float, schemes: str | None, exclude: list[str] | None = None
) -> Any:
    """QuantizeOptions from the CLI's values (tolerance in accuracy points)."""
    import hwprofiler

    from ..quantize import QuantizeOptions, Scheme

    if calibration_size < 1:
        raise HilpruneError("--calibration-size must be at least 1")
    if not 0 <= tolerance_points <= 100:
        raise HilpruneError("--accuracy-tolerance is in accuracy points, between 0 and 100")
    try:
        parsed = [Scheme.parse(s) for s in schemes.split(",") if s.strip()] if schemes else None
    except hwprofiler.DeviceError as e:
        raise HilpruneError(str(e)) from None
    return QuantizeOptions(
        calibration_size=calibration_size, tolerance=tolerance_points / 100, schemes=parsed, exclude_nodes=exclude or []
    )


def _pct(x: float | None) -> str:
    return f"{100 * x:.2f}%" if x is not None else "-"


def print_quantization(report: dict[str, Any]) -> None:
    """The candidates table and the choice, for people."""
    rows = []
    for c in report["candidates"]:
        speed = f"{c['speedup']:.2f}x" if c.get("speedup") else "-"
        ms = f"{c['int8_ms']:.4g} / {c['fp32_ms']:.4g}" if c.get("int8_ms") else "-"
        rows.append([c["name"], ms, speed, _pct(c["val_accuracy"]), c["verdict"]])
    print_table(
        f"INT8 schemes on {report['device']} (paired with fp32; calibration: {report['calibration']['images']} train images)",
        ["scheme", "INT8 / fp32 ms", "speedup", "val accuracy", "verdict"],
        rows,
    )
    acc = report["accuracy"]
    if report["precision"] == "int8":
        agree = report["agreement_val"]
        console.print(
            f"[green]INT8[/] {report['scheme']['name']}: test accuracy {_pct(acc['int8']['test'])} (fp32 {_pct(acc['fp32']['test'])}), "
            f"live {report['live_latency_ms']['int8']:.4g} ms (fp32 {report['live_latency_ms']['fp32']:.4g} ms, {report['speedup']:.2f}x); "
            f"agreement on {agree['images']} val images: top-1 {_pct(agree['top1'])}, max |logit diff| {agree['max_abs_logit_diff']:.3g}"
        )
    else:
        console.print(f"[yellow]{report['reason']}[/] (fp32 test accuracy {_pct(acc['fp32']['test'])})")
