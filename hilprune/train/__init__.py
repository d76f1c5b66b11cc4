"""Training, fine-tuning, evaluation and BN recalibration."""

from .bn_recalib import recalibrate_bn
from .loop import TrainConfig, TrainResult, augmentation_for, evaluate, finetune, pick_device, seed_everything, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "augmentation_for",
    "evaluate",
    "finetune",
    "pick_device",
    "recalibrate_bn",
    "seed_everything",
    "train",
]
