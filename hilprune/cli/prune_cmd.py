"""`hilprune prune`: apply a policy to a model; write the pruned weights, the policy with its
achieved ratios and metrics, and an ONNX export verified against torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import HilpruneError
from .options import CheckpointOpt, DataDirOpt, DatasetOpt, InputShapeOpt, JsonOpt, ModelOpt, NumClassesOpt
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
        json_out: JsonOpt = False,
    ) -> None:
        """Prune a model by a layer-wise policy: channels are removed, so the result is a smaller dense model."""
        from ..export import TOLERANCE, export_onnx
        from ..models import resolve_model
        from ..policy import Policy
        from ..surgery import Surgeon, save_pruned
        from .policy_cmd import check_importance, note_analysis

        policy = Policy.load(policy_path)  # cheap checks first: a bad file fails before any model is built
        crit = check_importance(importance or policy.importance)
        if out.exists() and not out.is_dir():
            raise HilpruneError(f"--out {out} exists and is not a folder")
        spec = resolve_model(model, dataset, input_shape, num_classes, checkpoint)
        calibration = _calibration(dataset, data_dir, crit)
        surgeon = Surgeon(spec.build(), spec.input_shape, spec.identity(), importance=crit, calibration=calibration)
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
        console.print(
            f"[green]wrote[/] {pruned_path}, {policy_out}, {onnx_path} (ONNX vs torch max abs diff {export.max_abs_diff:.1e})"
        )
