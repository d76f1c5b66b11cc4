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

# INT8 export (`prune` and `export`): the scheme is chosen by measurement on the target device.
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="fp32, or int8: onnxruntime static quantization with the scheme the target device runs fastest "
        "whose validation accuracy holds (fp32 is kept when none does).",
    ),
]
CalibrationSizeOpt = Annotated[
    int, typer.Option("--calibration-size", help="INT8: train images for calibration (never val or test).")
]
AccuracyToleranceOpt = Annotated[
    float,
    typer.Option("--accuracy-tolerance", help="INT8: validation accuracy may fall this many points below fp32's."),
]
SchemesOpt = Annotated[
    str | None,
    typer.Option(
        "--schemes",
        help="INT8: comma-separated schemes to try, e.g. qdq-u8s8,qop-u8s8 (default: every format x type for the device; "
        "-rr adds reduce_range, -pt per-tensor weights).",
    ),
]
