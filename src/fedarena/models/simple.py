"""Small models: an MLP and a LeNet-style CNN (``mlp``, ``cnn``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import MODELS


@MODELS.register("mlp")
class MLP(nn.Module):
    """Flatten -> Linear(hidden) -> ReLU -> ... -> Linear(num_classes)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *, hidden: tuple[int, ...] = (64,)):
        super().__init__()
        for h in hidden:
            if not 1 <= h <= 100_000:
                raise ConfigError(
                    "model.hidden",
                    f"layer widths must be in 1..100000 (got {list(hidden)})",
                    "a list of positive integers, e.g. [64] or [200, 200]",
                )
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)
        #: one layer per Linear for layer-wise metrics (``net.1``, ``net.3``, ...)
        self.layer_groups = tuple(f"net.{i}" for i, m in enumerate(layers) if isinstance(m, nn.Linear))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@MODELS.register("cnn")
class LeNet(nn.Module):
    """LeNet-5 style CNN for 28x28 inputs (44,426 parameters with 1 channel, 10 classes).

    Conv(C,6,5) -> ReLU -> MaxPool2 -> Conv(6,16,5) -> ReLU -> MaxPool2 -> FC 120 -> FC 84 -> FC classes
    (LeCun et al. 1998, with ReLU and max-pooling). Inputs smaller than 28x28 get padding 2
    in both convolutions so that the feature map stays at least 1x1 (8x8 digits: 16x2x2).
    Its five layers for layer-wise metrics (``layer_groups``): conv1, conv2, fc1, fc2, fc3."""

    layer_groups = ("features.0", "features.3", "classifier.0", "classifier.2", "classifier.4")

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        c, h, w = input_shape
        pad = 2 if h < 28 else 0
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=pad),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=pad),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, c, h, w)).shape[1]
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
