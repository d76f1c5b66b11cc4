"""Checkpoint files: the zoo's shipped ones (found by model and dataset name) and users' own.

A checkpoint is a plain dict saved with `torch.save` and read with `weights_only=True`:
no pickled code runs when one is loaded.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError

CHECKPOINT_FORMAT = "hilprune.checkpoint/v1"
SHIPPED_DIR = Path(__file__).parent / "checkpoints"


def shipped_checkpoint(model: str, dataset: str) -> Path | None:
    """The zoo checkpoint for (model, dataset), or None when none is shipped."""
    path = SHIPPED_DIR / f"{model}__{dataset}.pt"
    return path if path.is_file() else None


def shipped_cards() -> list[dict[str, Any]]:
    """Metadata of every shipped checkpoint (from the JSON written next to it by `hilprune train`)."""
    cards = []
    for meta in sorted(SHIPPED_DIR.glob("*.json")):
        cards.append(json.loads(meta.read_text()))
    return cards


def save_checkpoint(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Plain JSON types only (torch.__version__ is a TorchVersion, which weights_only loading refuses).
    meta = json.loads(json.dumps(meta, default=str))
    payload = {"format": CHECKPOINT_FORMAT, "meta": meta, "state_dict": model.state_dict()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint: a hilprune checkpoint dict or a bare state_dict."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    try:
        # TorchVersion (a str subclass) is allowed: checkpoints written before meta was sanitized hold one.
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or "This file can still be loaded" in text:
            raise ModelError(
                f"checkpoint {path} holds Python objects besides tensors; hilprune loads weights only (for safety): "
                "save `model.state_dict()` with torch.save, or train with `hilprune train`"
            ) from None
        raise ModelError(f"{path} is not a PyTorch checkpoint (damaged, truncated or another kind of file)") from None
    except Exception as exc:  # torch's unpickler raises anything on garbage (IndexError, EOFError, ...)
        raise ModelError(
            f"{path} is not a PyTorch checkpoint (damaged, truncated or another kind of file): {type(exc).__name__}"
        ) from None
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return obj["state_dict"], obj.get("meta", {})
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise ModelError(f"{path} is neither a hilprune checkpoint nor a state_dict")


def load_weights(model: nn.Module, path: Path) -> dict[str, Any]:
    """Load weights into `model`; a shape mismatch is a clear error naming the first bad tensor."""
    state, meta = load_state(path)
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ModelError(
                f"checkpoint {path} does not fit this model: {key} is {tuple(value.shape)} there, "
                f"{tuple(own[key].shape)} here (pruned weights need their policy: use 'hilprune prune')"
            )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        parts = [
            f"{len(names)} tensor(s) {what} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
            for names, what in ((missing, "this model needs are not in it"), (unexpected, "in it are not in this model"))
            if names
        ]
        made_for = f"; it was trained for {meta['model']}" if isinstance(meta.get("model"), str) else ""
        raise ModelError(f"checkpoint {path} does not fit this model: {'; '.join(parts)}{made_for}")
    return meta
