"""`hilprune train`: train a model and write its checkpoint, metadata JSON and model card."""

from __future__ import annotations

import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from .options import CheckpointOpt, DataDirOpt, InputShapeOpt, JsonOpt, ModelOpt, NumClassesOpt
from .output import console, print_json


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(dev) -> str:
    """'cpu', or the GPU's name so a model card says what it was trained on."""
    if dev.type == "cuda":
        import torch

        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return str(dev)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        model: ModelOpt,
        dataset: Annotated[str, typer.Option("--dataset", "-d", help="Data set to train on: digits, fashion-mnist, cifar10.")],
        out: Annotated[
            Path, typer.Option("--out", "-o", help="Checkpoint path (.pt); a .json and a model card .md are written beside it.")
        ],
        epochs: Annotated[float, typer.Option(help="Training epochs (fractions allowed).")] = 10,
        lr: Annotated[float, typer.Option(help="Peak learning rate (SGD, Nesterov momentum, cosine decay).")] = 0.1,
        batch_size: Annotated[int, typer.Option(help="Batch size.")] = 128,
        seed: Annotated[int, typer.Option(help="Random seed (weights, order, augmentation).")] = 0,
        threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's choice).")] = None,
        input_shape: InputShapeOpt = None,
        num_classes: NumClassesOpt = None,
        checkpoint: CheckpointOpt = None,
        data_dir: DataDirOpt = None,
        device: Annotated[
            str | None, typer.Option("--train-device", help="torch device for training (default: cuda if present, else cpu).")
        ] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Train a model from scratch (or from --checkpoint) on a data set; reports val and test top-1."""
        import torch

        from ..data import load_dataset
        from ..models import resolve_model, save_checkpoint
        from ..train import TrainConfig, augmentation_for, evaluate, pick_device, train

        if threads:
            torch.set_num_threads(threads)
        if epochs <= 0:
            raise typer.BadParameter("--epochs must be positive")
        spec = resolve_model(model, dataset, input_shape, num_classes, checkpoint, use_shipped=False)
        data = load_dataset(dataset, data_dir)
        net = spec.build(with_weights=bool(checkpoint))
        cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, **augmentation_for(data))
        start = time.perf_counter()
        result = train(net, data, cfg, device=device, desc=f"train {model}")
        test_acc = evaluate(net, data.test)
        wall = time.perf_counter() - start
        command = "hilprune " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        meta = {
            "model": model,
            "dataset": dataset,
            "input_shape": list(spec.input_shape),
            "num_classes": spec.num_classes,
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "seed": seed,
            "val_accuracy": result.val_accuracy,
            "test_accuracy": test_acc,
            "wall_s": round(wall, 1),
            "cpu": cpu_name(),
            "threads": torch.get_num_threads(),
            "train_device": device_name(pick_device(device)),
            "torch": torch.__version__,
            "command": command,
            "date": time.strftime("%Y-%m-%d"),
            "history": result.history,
        }
        net.cpu()
        save_checkpoint(out, net, meta)
        import json

        meta_path = out.with_suffix(".json")
        meta_path.write_text(
            json.dumps({k: v for k, v in meta.items() if k != "history"} | {"checkpoint": out.name}, indent=2) + "\n"
        )
        out.with_suffix(".md").write_text(model_card(meta))
        if json_out:
            print_json({"checkpoint": str(out), "val_accuracy": result.val_accuracy, "test_accuracy": test_acc, "wall_s": wall})
        else:
            console.print(
                f"[green]saved[/] {out}  val top-1 {result.val_accuracy:.4f}  test top-1 {test_acc:.4f}  ({wall / 60:.1f} min)"
            )


def model_card(meta: dict) -> str:
    rows = "\n".join(
        f"| {h['epoch']} | {h['loss']:.4f} | {h['val_accuracy']:.4f} | {h['elapsed_s'] / 60:.1f} |" for h in meta["history"]
    )
    return f"""# {meta["model"]} on {meta["dataset"]}

| | |
|---|---|
| command | `{meta["command"]}` |
| seed | {meta["seed"]} |
| epochs | {meta["epochs"]} (batch {meta["batch_size"]}, peak lr {meta["lr"]}, SGD Nesterov, cosine) |
| validation top-1 | {meta["val_accuracy"]:.4f} (fixed-seed split of train) |
| test top-1 | {meta["test_accuracy"]:.4f} |
| wall time | {meta["wall_s"] / 60:.1f} min on {meta["train_device"]} |
| CPU | {meta["cpu"]}, {meta["threads"]} torch threads |
| torch | {meta["torch"]} |
| date | {meta["date"]} |

## Per-epoch validation

| epoch | train loss | val top-1 | elapsed min |
|---|---|---|---|
{rows}
"""
