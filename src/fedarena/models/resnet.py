"""Residual networks for 32x32 inputs (He et al., "Deep Residual Learning for Image
Recognition", CVPR 2016), in the variants FL-security papers train.

* ``resnet18``: the usual CIFAR ResNet-18 (3x3 stem with stride 1, no max-pool,
  BasicBlocks [2, 2, 2, 2] with widths 64/128/256/512, 1x1-conv + BN shortcuts,
  global average pooling): 11,173,962 parameters with 3x32x32 inputs and 10 classes.
* ``resnet20``: by default the Fall-of-CC / ROP library's "resnet20"
  (``../shared/specs/rop-centered-clipping.md`` section 5.2): widths 32/64/128,
  BasicBlocks [2, 2, 2], 1x1-conv + BN shortcuts, bias-free convolutions: 696,618
  parameters (10 classes). ``variant="he"`` gives He et al.'s canonical CIFAR ResNet-20
  (widths 16/32/64, [3, 3, 3], parameter-free "option A" shortcuts that subsample and
  zero-pad channels): 269,722 parameters (the "0.27M" ResNet-20).

The library's network ends in ``log_softmax``; it is left out here because
``cross_entropy(log_softmax(z)) == cross_entropy(z)`` (log_softmax is idempotent), so
training and predictions are the same.

Normalisation is BatchNorm (``norm="batch"``, as in the papers); its running statistics
are buffers, which the engine keeps outside the update vector and trains on the
sequential path. ``norm="group"`` uses GroupNorm (32 groups, or one per channel when
there are fewer channels; the library's ``gn`` option), which has no buffers and so runs
on the vectorized path. Weights use PyTorch's default initialisation.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import MODELS

Norm = Literal["batch", "group"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(min(32, channels), channels)
    return nn.BatchNorm2d(channels)


class BasicBlock(nn.Module):
    """Two 3x3 conv + norm layers with a residual connection (He et al. 2016, Fig. 2).

    ``shortcut``: ``"conv"`` (option B: 1x1 conv + norm when the shape changes) or
    ``"pad"`` (option A: subsample by the stride and zero-pad the new channels).
    """

    def __init__(self, cin: int, cout: int, stride: int, norm: str, shortcut: str = "conv"):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = _norm(norm, cout)
        self.stride, self.pad = stride, cout - cin
        self.mode = shortcut
        self.shortcut: nn.Module = nn.Sequential()
        if shortcut == "conv" and (stride != 1 or cin != cout):
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), _norm(norm, cout))

    def _skip(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "pad" and (self.stride != 1 or self.pad):
            x = x[:, :, :: self.stride, :: self.stride]
            return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return self.shortcut(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self._skip(x))


class CifarResNet(nn.Module):
    """3x3 stem (stride 1, no max-pool) -> stages of BasicBlocks -> global average pool -> linear."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        widths: tuple[int, ...],
        blocks: tuple[int, ...],
        norm: str,
        shortcut: str,
    ):
        super().__init__()
        c = input_shape[0]
        self.conv1 = nn.Conv2d(c, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = _norm(norm, widths[0])
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stage = []
            for j in range(n):
                stage.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1, norm, shortcut))
                cin = w
            layers.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


@MODELS.register("resnet18")
class ResNet18(CifarResNet):
    """CIFAR ResNet-18 (He et al. 2016): 3x3 stem, no max-pool, BatchNorm (11,173,962 params on 3x32x32)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *, norm: Norm = "batch"):
        super().__init__(input_shape, num_classes, (64, 128, 256, 512), (2, 2, 2, 2), norm, "conv")


@MODELS.register("resnet20")
class ResNet20(CifarResNet):
    """ResNet-20; default: the Fall-of-CC library's variant (696,618 params), variant="he": He et al.'s 0.27M one."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        variant: Literal["lib", "he"] = "lib",
        norm: Norm = "batch",
    ):
        if variant == "he":
            super().__init__(input_shape, num_classes, (16, 32, 64), (3, 3, 3), norm, "pad")
        else:
            super().__init__(input_shape, num_classes, (32, 64, 128), (2, 2, 2), norm, "conv")
