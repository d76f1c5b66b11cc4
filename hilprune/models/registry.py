"""The zoo: model names mapped to factories `(in_channels, num_classes, input_size) -> nn.Module`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import ModelError
from .digits_cnn import digits_cnn
from .mobilenetv2 import mobilenetv2
from .resnet import resnet20, resnet56
from .vgg import vgg11

Factory = Callable[..., nn.Module]

ZOO: dict[str, Factory] = {
    "resnet20": resnet20,
    "resnet56": resnet56,
    "mobilenetv2": mobilenetv2,
    "vgg11": vgg11,
    "digits-cnn": digits_cnn,
}

DESCRIPTIONS: dict[str, str] = {
    "resnet20": "CIFAR-style ResNet-20 (He et al. 2016), 0.27M params",
    "resnet56": "CIFAR-style ResNet-56 (He et al. 2016), 0.85M params",
    "mobilenetv2": "CIFAR-style MobileNetV2 (Sandler et al. 2018), width 1.0",
    "vgg11": "VGG-11 with BatchNorm, pools skipped below 2x2",
    "digits-cnn": "4-conv CNN for 8x8 digits (tests, quick demo)",
}


def build_zoo_model(name: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build a zoo model for the given (C, H, W) input and class count."""
    if name not in ZOO:
        raise ModelError(f"unknown model {name!r}; zoo models: {', '.join(ZOO)} (or a user model 'file.py:factory')")
    c, h, _w = input_shape
    return ZOO[name](in_channels=c, num_classes=num_classes, input_size=h)
