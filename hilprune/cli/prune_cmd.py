"""`hilprune prune`: apply a policy to a model; write the pruned weights, the policy with its
achieved ratios and metrics, and an ONNX export verified against torch.

With `--precision int8` the pruned model is also quantized with the scheme the target device
(`--device`) runs fastest whose validation accuracy holds: `model.onnx` is then the INT8 graph,
`model.fp32.onnx` the float one, and `quantization.json` says what was tried and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import HilpruneError
from ..quantize.defaults import CALIBRATION_SIZE, TOLERANCE
from .options import (
    AccuracyToleranceOpt,
    CalibrationSizeOpt,
    CheckpointOpt,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    InputShapeOpt,
    JsonOpt,
    ModelOpt,
    NumClassesOpt,
    PrecisionOpt,
    SchemesOpt,
)
from .output import console, print_json

CALIBRATION_SAMPLES = 128


def _calibration(dataset: str | None, data_dir: Path | None, importance: str) -> Any:
    """A labelled batch for gradient-based criteria (taylor), or None when the criterion needs none."""
    from ..surgery.importance import NEEDS_GRADIENTS

    if importance not in NEEDS_GRADIENTS:
        return None
    if not dataset:
        raise HilpruneError(
            f"importance {importance!r} ranks channels by gradients on real data: pass --dataset "
            "(or choose l1, l2, fpgm or bn-scale)"
        )
    from ..data import load_dataset

    split = load_dataset(dataset, data_dir).train.subset(CALIBRATION_SAMPLES)
    return split.x, split.y


def _quantize(
    fp32_onnx: bytes,
    policy: Any,
    out: Path,
    dataset: str,
    data_dir: Path | None,
    device: str,
    calibration_size: int,
    tolerance: float,
    schemes: str | None,
    quiet: bool,
) -> dict[str, Any]:
    """Quantize the pruned export for `device`; writes model.onnx (the shipped graph), model.fp32.onnx
    and quantization.json, and records the choice in the policy's metrics."""
    from ..data import load_dataset
    from ..quantize import fp32_nodes, quantize_for_device
    from .int8_output import print_quantization, quantize_options

    opts = quantize_options(calibration_size, tolerance, schemes, fp32_nodes(fp32_onnx, policy))
    bundle = load_dataset(dataset, data_dir)
    with console.status("INT8: quantizing and timing each scheme on the device") as status:
        outcome = quantize_for_device(fp32_onnx, bundle, device, opts, status=lambda msg: status.update(f"INT8: {msg}"))
    report = outcome.to_dict()
    if outcome.int8_bytes is not None:
        (out / "model.fp32.onnx").write_bytes(fp32_onnx)
        (out / "model.onnx").write_bytes(outcome.int8_bytes)
    (out / "quantization.json").write_text(json.dumps(report, indent=2) + "\n")
    policy.metrics["quantization"] = {
        "precision": outcome.precision,
        "scheme": outcome.scheme.name if outcome.scheme else None,
        "device": outcome.device,
        "speedup": report["speedup"],
        "test_accuracy": report["accuracy"],
        "report": "quantization.json",
    }
    if not quiet:
        print_quantization(report)
    return report


def _fmt(n: int) -> str:
    return f"{n / 1e6:.3f}M" if n >= 1e5 else f"{n:,}"


def register(app: typer.Typer) -> None:
    @app.command("prune")
    def prune_cmd(
        model: ModelOpt,
        policy_path: Annotated[
            Path, typer.Option("--policy", "-p", help="Policy JSON ('hilprune policy init' writes a template).")
        ],
        out: Annotated[
            Path, typer.Option("--out", "-o", help="Output folder: pruned.pt, policy.json and model.onnx are written there.")
        ],
        dataset: DatasetOpt = None,
        checkpoint: CheckpointOpt = None,
        input_shape: InputShapeOpt = None,
        num_classes: NumClassesOpt = None,
        importance: Annotated[
            str | None,
            typer.Option(
                "--importance",
                help="Override the policy's channel-importance criterion: l1, l2, fpgm, bn-scale or taylor (taylor needs --dataset).",
            ),
        ] = None,
        data_dir: DataDirOpt = None,
        precision: PrecisionOpt = "fp32",
        device: DeviceOpt = "ort-cpu-1t",
        calibration_size: CalibrationSizeOpt = CALIBRATION_SIZE,
        accuracy_tolerance: AccuracyToleranceOpt = 100 * TOLERANCE,
        schemes: SchemesOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Prune a model by a layer-wise policy: channels are removed, so the result is a smaller dense model.

        --precision int8 also quantizes it, with the scheme --device runs fastest (needs --dataset)."""
        from ..export import TOLERANCE, export_onnx
        from ..models import resolve_model
        from ..policy import Policy
        from ..surgery import Surgeon, save_pruned
        from .int8_output import check_precision
        from .policy_cmd import check_importance, note_analysis

        policy = Policy.load(policy_path)  # cheap checks first: a bad file fails before any model is built
        crit = check_importance(importance or policy.importance)
        if check_precision(precision) == "int8" and not dataset:
            raise HilpruneError("--precision int8 calibrates on the train split and checks accuracy on val: pass --dataset")
        if out.exists() and not out.is_dir():
            raise HilpruneError(f"--out {out} exists and is not a folder")
        spec = resolve_model(model, dataset, input_shape, num_classes, checkpoint)
        calibration = _calibration(dataset, data_dir, crit)
        surgeon = Surgeon(
            spec.build(), spec.input_shape, spec.identity(), importance=crit, calibration=calibration,
            removed_blocks=policy.removed_blocks,
        )  # fmt: skip
        note_analysis(surgeon)
        result = surgeon.apply(policy)
        result.policy.importance = crit
        onnx_path = out / "model.onnx"
        try:
            export = export_onnx(result.model, spec.input_shape, onnx_path, tolerance=TOLERANCE)
        except HilpruneError:
            raise
        except Exception as exc:  # the exporter's own failure: one line, not a traceback
            first = (str(exc).strip().splitlines() or [""])[0]
            raise HilpruneError(f"ONNX export of the pruned model failed: {type(exc).__name__}: {first}") from exc
        result.policy.metrics.update({"max_abs_diff": export.max_abs_diff, "onnx": onnx_path.name})
        quant = None
        if precision == "int8":
            quant = _quantize(
                export.onnx_bytes,
                result.policy,
                out,
                dataset,
                data_dir,
                device,
                calibration_size,
                accuracy_tolerance,
                schemes,
                json_out,
            )
        pruned_path = save_pruned(out / "pruned.pt", result.model, result.policy)
        policy_out = result.policy.save(out / "policy.json")
        report = result.report() | {
            "onnx": str(onnx_path),
            "max_abs_diff": export.max_abs_diff,
            "pruned": str(pruned_path),
            "policy": str(policy_out),
            "importance": crit,
            "model": spec.name,
            "macs_kept": result.macs_after / max(1, result.macs_before),
            "params_kept": result.params_after / max(1, result.params_before),
            "excluded": len(surgeon.excluded),
        }
        if quant is not None:
            report |= {"precision": quant["precision"], "quantization": quant}
        if json_out:
            print_json(report)
            return
        from .output import print_table

        rows = [
            ["MACs", _fmt(result.macs_before), _fmt(result.macs_after), f"{report['macs_kept']:.1%}"],
            ["params", _fmt(result.params_before), _fmt(result.params_after), f"{report['params_kept']:.1%}"],
        ]
        print_table(f"{spec.name} pruned by {policy_path.name} ({crit})", ["", "dense", "pruned", "kept"], rows)
        if surgeon.excluded:
            console.print(f"{len(surgeon.excluded)} layers left unpruned ('hilprune policy show {policy_out}' says why)")
        shipped = (
            f"{onnx_path} (INT8 {quant['scheme']['name']}), {out / 'model.fp32.onnx'}"
            if quant and quant["scheme"]
            else str(onnx_path)
        )
        console.print(
            f"[green]wrote[/] {pruned_path}, {policy_out}, {shipped} (ONNX vs torch max abs diff {export.max_abs_diff:.1e})"
        )
