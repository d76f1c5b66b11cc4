"""VGG-11 with BatchNorm for small inputs: a max-pool is skipped once the feature map is
down to 1x1, so 28x28 and 8x8 inputs work as well as 32x32."""

from __future__ import annotations

import torch
from torch import nn

_VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class VGG(nn.Module):
    def __init__(self, cfg: list, in_channels: int = 3, num_classes: int = 10, input_size: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, size = in_channels, input_size
        for v in cfg:
            if v == "M":
                if size >= 2:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            layers += [nn.Conv2d(cin, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            cin = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def vgg11(in_channels: int = 3, num_classes: int = 10, input_size: int = 32) -> VGG:
    return VGG(_VGG11, in_channels, num_classes, input_size)
