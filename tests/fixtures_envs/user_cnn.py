"""A user model for the environment tests: 1x8x8 input (the digits data set), 10 classes, with a
two-branch concat and a residual add, loaded as 'tests/fixtures_envs/user_cnn.py:build'."""

from __future__ import annotations

import torch
from torch import nn


def cbr(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class BranchyNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = cbr(1, 16)
        self.left = cbr(16, 8, k=1)
        self.right = cbr(16, 12)
        self.mix = cbr(20, 24)  # consumes the concat (8 + 12 channels)
        self.res = nn.Sequential(nn.Conv2d(24, 24, 3, 1, 1, bias=False), nn.BatchNorm2d(24))
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.mix(torch.cat([self.left(x), self.right(x)], dim=1))
        x = torch.relu(x + self.res(x))
        return self.fc(x.mean(dim=(2, 3)))


def build() -> BranchyNet:
    return BranchyNet()
