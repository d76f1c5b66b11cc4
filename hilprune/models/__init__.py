"""Model zoo, user-model loading and checkpoints."""

from .checkpoints import load_weights, save_checkpoint, shipped_cards, shipped_checkpoint
from .registry import DESCRIPTIONS, ZOO, build_zoo_model
from .resolve import ModelSpec, parse_input_shape, resolve_model
from .user import load_user_model

__all__ = [
    "ZOO",
    "DESCRIPTIONS",
    "ModelSpec",
    "build_zoo_model",
    "load_user_model",
    "load_weights",
    "parse_input_shape",
    "resolve_model",
    "save_checkpoint",
    "shipped_cards",
    "shipped_checkpoint",
]
