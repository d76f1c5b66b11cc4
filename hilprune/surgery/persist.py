"""Saving and reloading pruned models without pickled modules: the weights file holds the
policy and a state_dict; reloading re-applies the policy's structure to the dense model and
loads the weights (torch-pruning's recommended, torch>=2.6-safe route)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError
from ..models import ModelSpec
from ..policy import Policy
from .surgeon import Surgeon

PRUNED_FORMAT = "hilprune.pruned/v1"


def save_pruned(path: str | Path, model: nn.Module, policy: Policy) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": PRUNED_FORMAT, "policy": policy.to_json(), "state_dict": model.state_dict()}, tmp)
    tmp.replace(path)
    return path


def load_pruned(spec: ModelSpec, path: str | Path) -> tuple[nn.Module, Policy]:
    """Rebuild a pruned model saved by `save_pruned` for the dense model `spec`."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"pruned weights not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot read pruned weights {path}: {first}") from exc
    if not isinstance(obj, dict) or obj.get("format") != PRUNED_FORMAT:
        raise ModelError(f"{path} is not a hilprune pruned-weights file")
    policy = Policy.from_dict(json.loads(obj["policy"]), source=str(path))
    surgeon = Surgeon(
        spec.build(with_weights=False), spec.input_shape, spec.identity(), importance="l1", removed_blocks=policy.removed_blocks
    )
    model = surgeon.apply(policy, count=False).model
    model.load_state_dict(obj["state_dict"])
    return model.eval(), policy
