"""One place that turns the CLI's model options into a model: every command that takes a
model (`--model`, `--dataset`, `--input-shape`, `--num-classes`, `--checkpoint`) calls
`resolve_model`, so they all behave the same."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..data.registry import dataset_info
from ..errors import ModelError
from .checkpoints import load_weights, shipped_checkpoint
from .registry import ZOO, build_zoo_model
from .user import is_user_model_spec, load_user_model


def parse_input_shape(text: str | tuple[int, ...] | list[int] | None) -> tuple[int, int, int] | None:
    """'1,28,28' -> (1, 28, 28)."""
    if text is None:
        return None
    if isinstance(text, (tuple, list)):
        parts = [int(p) for p in text]
    else:
        try:
            parts = [int(p) for p in str(text).replace("x", ",").split(",") if p.strip()]
        except ValueError:
            raise ModelError(f"--input-shape must be C,H,W (e.g. 3,32,32), got {text!r}") from None
    if len(parts) != 3 or min(parts) <= 0:
        raise ModelError(f"--input-shape must be three positive integers C,H,W, got {text!r}")
    return (parts[0], parts[1], parts[2])


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the same dense model (and name it in a policy)."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    dataset: str | None = None
    checkpoint: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def build(self, with_weights: bool = True) -> nn.Module:
        """A fresh dense model in eval mode, with the checkpoint's weights when one is set.

        Initialization is seeded (in a forked RNG): the same spec always gives the same model,
        so its ONNX graph, and every cache keyed by it, stays the same between runs.
        """
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = (
                load_user_model(self.name)
                if is_user_model_spec(self.name)
                else build_zoo_model(self.name, self.input_shape, self.num_classes)
            )
        if with_weights and self.checkpoint:
            load_weights(model, Path(self.checkpoint))
        return model.eval()

    def identity(self) -> dict[str, Any]:
        """What a policy records about its model, to refuse being applied to another one."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "dataset": self.dataset,
            "checkpoint": Path(self.checkpoint).name if self.checkpoint else None,
        }


def resolve_model(
    model: str,
    dataset: str | None = None,
    input_shape: str | tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    checkpoint: str | Path | None = None,
    use_shipped: bool = True,
) -> ModelSpec:
    """Resolve CLI options to a ModelSpec.

    Shape and classes come from `--dataset` unless `--input-shape`/`--num-classes` say
    otherwise; a zoo model with a dataset uses the shipped checkpoint unless `--checkpoint`
    is given (or `use_shipped` is False, as when training from scratch).
    """
    if not model:
        raise ModelError("--model is required (a zoo name, 'file.py:factory' or 'package.module:factory')")
    user = is_user_model_spec(model)
    if not user and model not in ZOO:
        raise ModelError(f"unknown model {model!r}; zoo models: {', '.join(ZOO)} (or a user model 'file.py:factory')")
    shape = parse_input_shape(input_shape)
    info = dataset_info(dataset) if dataset else None
    if shape is None:
        if info is None:
            raise ModelError(f"--model {model} needs --dataset or --input-shape C,H,W")
        shape = info.input_shape
    classes = num_classes if num_classes is not None else (info.num_classes if info else 10)
    ckpt: str | None = str(checkpoint) if checkpoint else None
    if ckpt is None and use_shipped and not user and dataset:
        found = shipped_checkpoint(model, dataset)
        ckpt = str(found) if found else None
    if ckpt is not None and not Path(ckpt).is_file():
        raise ModelError(f"checkpoint not found: {ckpt}")
    spec = ModelSpec(name=model, input_shape=shape, num_classes=classes, dataset=dataset, checkpoint=ckpt)
    if checkpoint:  # a checkpoint the user named must be one, and of this model, in every command
        spec.build(with_weights=True)
    return spec
