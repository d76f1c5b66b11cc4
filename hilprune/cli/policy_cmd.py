"""`hilprune policy`: write a policy template for a model (`init`) and print one (`show`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import HilpruneError, PolicyError
from .options import CheckpointOpt, DatasetOpt, InputShapeOpt, JsonOpt, ModelOpt, NumClassesOpt
from .output import console, print_json

PolicyPathArg = Annotated[Path, typer.Argument(help="Policy JSON file (hilprune.policy/v1).", show_default=False)]
ImportanceOpt = Annotated[
    str, typer.Option("--importance", help="Channel-importance criterion: l1, l2, fpgm, bn-scale or taylor.")
]


def check_importance(name: str) -> str:
    from ..surgery import IMPORTANCE

    if name not in IMPORTANCE:
        raise HilpruneError(f"unknown importance {name!r}; choose one of {', '.join(IMPORTANCE)}")
    return name


def policy_summary(policy: Any) -> dict[str, Any]:
    """Totals over a policy's groups (channels before/after, mean requested and achieved ratio, layers left unpruned)."""
    before = sum(g.channels_before * g.units for g in policy.groups)
    after = sum(g.channels_after * g.units for g in policy.groups)
    n = max(1, len(policy.groups))
    return {
        "groups": len(policy.groups),
        "channels_before": before,
        "channels_after": after,
        "mean_requested_ratio": sum(g.requested_ratio for g in policy.groups) / n,
        "mean_ratio": sum(g.ratio for g in policy.groups) / n,
        "excluded": len(policy.excluded),
        "removed_blocks": len(policy.removed_blocks),
    }


def channels_text(n: int, units: int) -> str:
    """'4x8' for 4 units of 8 channels (grouped convs), else '8'."""
    return f"{units}x{n}" if units > 1 else str(n)


def print_policy(policy: Any, title: str) -> None:
    """The policy's groups as a table (stdout) and its model identity (one line each)."""
    from rich.console import Console
    from rich.table import Table

    out = Console(soft_wrap=True)
    ident = policy.model
    shape = "x".join(str(d) for d in ident.get("input_shape", []) or [])
    out.print(
        f"[bold]model[/] {ident.get('name')}  input {shape or '?'}  classes {ident.get('num_classes')}  "
        f"dataset {ident.get('dataset') or '-'}  checkpoint {ident.get('checkpoint') or '-'}"
    )
    out.print(
        f"[bold]importance[/] {policy.importance}  [bold]round_to[/] {policy.round_to}  "
        f"[bold]max_ratio[/] {policy.max_ratio}  [bold]groups_signature[/] {ident.get('groups_signature', '-')}"
    )
    table = Table(title=title)
    for col, justify in [
        ("#", "right"),
        ("group", "left"),
        ("kind", "left"),
        ("channels", "right"),
        ("requested", "right"),
        ("achieved", "right"),
        ("precision", "left"),
    ]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for i, g in enumerate(policy.groups):
        channels = f"{channels_text(g.channels_before, g.units)} -> {channels_text(g.channels_after, g.units)}"
        table.add_row(str(i), g.name, g.kind, channels, f"{g.requested_ratio:.3f}", f"{g.ratio:.3f}", g.precision)
    s = policy_summary(policy)
    table.add_row(
        "",
        "total",
        "",
        f"{s['channels_before']} -> {s['channels_after']}",
        f"{s['mean_requested_ratio']:.3f}",
        f"{s['mean_ratio']:.3f}",
        "",
        end_section=True,
    )
    out.print(table)
    if policy.removed_blocks:
        out.print(f"[bold]removed blocks[/] ({len(policy.removed_blocks)}, whole): {', '.join(policy.removed_blocks)}")
    print_excluded(out, policy.excluded)
    metrics = {k: v for k, v in policy.metrics.items() if v is not None}
    if metrics:
        out.print("[bold]metrics[/] " + "  ".join(f"{k} {v}" for k, v in metrics.items()))


def note_analysis(surgeon: Any, slow_s: float = 1.0) -> None:
    """One line on stderr with the analysis' counts, when it took more than `slow_s`."""
    if surgeon.analysis_s > slow_s:
        from torch import nn

        layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in surgeon.dense.modules())
        console.print(
            f"analysed {layers} layers in {surgeon.analysis_s:.1f} s: {len(surgeon.groups)} prunable groups, "
            f"{len(surgeon.excluded)} layers left unpruned"
        )


def print_excluded(out: Any, excluded: list[Any]) -> None:
    """The layers left unpruned, one line each with the reason."""
    if not excluded:
        return
    from rich.markup import escape

    out.print(f"[bold]left unpruned[/] ({len(excluded)} layers; their channels stay as they are):")
    for e in excluded:
        out.print(f"  {escape(e.name)}: {escape(e.reason)}")


def register(app: typer.Typer) -> None:
    policy_app = typer.Typer(
        name="policy", help="Layer-wise pruning policies: write a template, print one.", no_args_is_help=True
    )
    app.add_typer(policy_app, name="policy")

    @policy_app.command("init")
    def init_cmd(
        model: ModelOpt,
        ratio: Annotated[float, typer.Option("--ratio", "-r", help="Prune ratio given to every group (0 keeps all channels).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Policy JSON to write.")],
        dataset: DatasetOpt = None,
        input_shape: InputShapeOpt = None,
        num_classes: NumClassesOpt = None,
        checkpoint: CheckpointOpt = None,
        round_to: Annotated[int, typer.Option("--round-to", help="Keep a multiple of N channels per group (1: any count).")] = 1,
        max_ratio: Annotated[float, typer.Option("--max-ratio", help="Largest ratio the policy may hold for any group.")] = 0.9,
        importance: ImportanceOpt = "l1",
        precision: Annotated[
            str,
            typer.Option(
                "--precision",
                help="Precision of every group: fp32 or int8 (edit a group's 'precision' to mix them; used by --precision int8).",
            ),
        ] = "fp32",
        remove_blocks: Annotated[
            str,
            typer.Option(
                "--remove-blocks",
                help="Residual blocks to remove whole, comma-separated (e.g. layer3.7,layer2.8); "
                "'list' prints the model's removable blocks and exits.",
            ),
        ] = "",
        json_out: JsonOpt = False,
    ) -> None:
        """Write a valid policy with every prunable group at --ratio: a template to edit (its 'requested_ratio' fields)."""
        from ..models import resolve_model
        from ..policy import Policy
        from ..surgery import Surgeon

        check_importance(importance)
        if round_to < 1:
            raise PolicyError(f"--round-to must be a positive integer, got {round_to}")
        spec = resolve_model(model, dataset, input_shape, num_classes, checkpoint)
        blocks = [b.strip() for b in remove_blocks.split(",") if b.strip()]
        if blocks == ["list"]:
            import torch

            from ..surgery import residual_blocks

            found = residual_blocks(spec.build(with_weights=False), torch.randn(1, *spec.input_shape))
            if json_out:
                print_json({"model": spec.name, "removable_blocks": found})
            else:
                console.print(f"{spec.name}: {len(found)} removable residual blocks: {', '.join(found) or 'none'}")
            return
        # Structure only: the groups do not depend on the weights, and ranking by l1 needs no data.
        surgeon = Surgeon(
            spec.build(with_weights=False), spec.input_shape, spec.identity(), importance="l1", removed_blocks=blocks
        )
        note_analysis(surgeon)
        policy = Policy.uniform(
            surgeon.groups,
            ratio,
            spec.identity(),
            importance=importance,
            round_to=round_to,
            max_ratio=max_ratio,
            excluded=surgeon.excluded,
            removed_blocks=blocks,
        ).set_precision(precision)
        if out.is_dir():
            raise HilpruneError(f"--out {out} is a folder; give a file name such as {out / 'policy.json'}")
        policy.save(out)
        if json_out:
            excluded = [{"name": e.name, "reason": e.reason} for e in surgeon.excluded]
            print_json(
                {"policy": str(out), **policy_summary(policy), "excluded_layers": excluded, "analysis_s": surgeon.analysis_s}
            )
            return
        print_policy(policy, f"policy template for {spec.name}")
        console.print(
            f"[green]wrote[/] {out}  ({len(policy.groups)} groups; edit 'requested_ratio', then 'hilprune prune --policy {out}')"
        )

    @policy_app.command("show")
    def show_cmd(path: PolicyPathArg, json_out: JsonOpt = False) -> None:
        """Print a policy: its model, and each group's channels before -> after with requested and achieved ratio."""
        from ..policy import Policy

        policy = Policy.load(path)
        if json_out:
            print_json(policy.to_dict() | {"summary": policy_summary(policy)})
            return
        print_policy(policy, str(path))
