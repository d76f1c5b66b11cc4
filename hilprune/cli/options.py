"""Options shared by every command, so that all of them take a model and data the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ModelOpt = Annotated[
    str,
    typer.Option("--model", "-m", help="Zoo name (see 'hilprune zoo'), 'path/to/file.py:factory' or 'package.module:factory'."),
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        "-d",
        help="digits, fashion-mnist or cifar10: sets input shape and classes, and picks the shipped checkpoint.",
    ),
]
InputShapeOpt = Annotated[
    str | None, typer.Option("--input-shape", help="C,H,W of one input (overrides the data set's), e.g. 3,32,32.")
]
NumClassesOpt = Annotated[int | None, typer.Option("--num-classes", help="Number of classes (default: the data set's, else 10).")]
CheckpointOpt = Annotated[
    Path | None,
    typer.Option("--checkpoint", "-c", help="Weights to load (default: the shipped checkpoint for --model and --dataset)."),
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Folder holding the data set files (also $HILPRUNE_DATA).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON object instead of tables.")]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device", help="Target device: a built-in name (see 'hilprune devices'), a TOML file, or remote:http://HOST:PORT."
    ),
]
