"""Training, fine-tuning, evaluation and BN recalibration."""

from .bn_recalib import recalibrate_bn
from .distill import KDConfig, finetune_kd, kd_loss
from .loop import TrainConfig, TrainResult, augmentation_for, evaluate, finetune, pick_device, seed_everything, train

__all__ = [
    "KDConfig",
    "finetune_kd",
    "kd_loss",
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
