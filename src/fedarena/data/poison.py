"""Data-poisoning primitives: backdoor triggers and label maps.

A trigger is a pixel ``mask`` ``(1, H, W)`` in {0, 1} and a ``pattern`` ``(C, H, W)``;
stamping replaces the masked pixels: ``x * (1 - mask) + pattern * mask``. Geometry is
given for 28x28 inputs (the RLR reference code's) and scaled to other sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError

TRIGGERS = ("square", "plus")


@dataclass
class Trigger:
    mask: torch.Tensor  # (1, H, W) float in {0, 1}
    pattern: torch.Tensor  # (C, H, W)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Stamp the trigger on a batch of raw images ``(N, C, H, W)``."""
        m = self.mask.to(x.device, x.dtype)
        return x * (1 - m) + self.pattern.to(x.device, x.dtype) * m

    @property
    def num_pixels(self) -> int:
        return int(self.mask.sum())


def _scale(v: float, size: int) -> int:
    return int(round(v * size / 28))


def make_trigger(name: str, shape: tuple[int, ...], value: float = 1.0) -> Trigger:
    """Build a named trigger for images of ``shape`` = (C, H, W).

    * ``square``: a filled square in the bottom-right corner; on 28x28 rows/cols 21..25
      (5x5), the RLR code's FMNIST square. Side ``max(2, round(5H/28))``, margin
      ``max(1, round(2H/28))``.
    * ``plus``: on 28x28 the RLR code's FMNIST plus: rows 5..9 at col 5 and row 7 at
      cols 3..7 (9 pixels); scaled arms on other sizes.
    """
    if len(shape) != 3:
        raise ConfigError("attack.trigger", f"needs image inputs (C, H, W), got shape {shape}", "an image dataset")
    c, h, w = shape
    mask = torch.zeros(1, h, w)
    if name == "square":
        s = max(2, _scale(5, h))
        m = max(1, _scale(2, h))
        mask[0, h - m - s : h - m, w - m - s : w - m] = 1
    elif name == "plus":
        arm = max(1, _scale(2, h))
        cr, cc = max(arm, _scale(7, h)), max(arm, _scale(5, w))
        mask[0, cr - arm : cr + arm + 1, cc] = 1
        mask[0, cr, cc - arm : cc + arm + 1] = 1
    else:
        raise ConfigError("attack.trigger", f"unknown trigger {name!r}", ", ".join(TRIGGERS))
    return Trigger(mask, torch.full((c, h, w), float(value)))


def flip_labels(y: torch.Tensor, num_classes: int, source: int | None = None, target: int | None = None) -> torch.Tensor:
    """``y -> C - 1 - y`` for every sample, or ``source -> target`` when both are given."""
    if source is None or target is None:
        return num_classes - 1 - y
    return torch.where(y == source, torch.full_like(y, target), y)
