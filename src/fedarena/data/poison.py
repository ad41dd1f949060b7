"""Data-poisoning primitives: backdoor triggers and label maps.

A trigger is a pixel ``mask`` ``(1, H, W)`` with values in [0, 1] and a ``pattern``
``(C, H, W)``. Stamping a raw image ``x`` (pixels in [0, 1], before normalisation, as in
the RLR reference code) either *replaces* the masked pixels,
``x * (1 - mask) + pattern * mask``, or *adds* the mask towards the trigger's brightness,
``clamp(x + mask * (2 * pattern - 1), 0, 1)`` (the logo triggers: a bright logo is added
with saturation, a dark one, ``value = 0``, subtracted; the reference code's uint8
addition wraps modulo 256 -- treated as a bug, see the RLR spec's decision 14).

Triggers (``attack.trigger``):

* ``plus`` -- a plus sign put to the top-left (Ozdayi et al., AAAI 2021, Fig. 1; geometry
  from their code). 28x28: rows 5..9 at col 5 and row 7 at cols 3..7 (9 pixels).
  32x32 (CIFAR-10): rows 5..11 at col 5 and row 8 at cols 2..8 (a 7x7 plus). 8x8 (digits):
  the 3x3 plus {(0,1), (1,0), (1,1), (1,2), (2,1)}; ``trigger_size=5`` gives the 5x5 plus
  (0..4, 2) + (2, 0..4).
* ``square`` -- a filled square at the bottom-right (Liu et al., NDSS 2018, as used by the
  RLR paper). 28x28: rows/cols 21..25; 8x8: rows/cols 6..7; 32x32: rows/cols 25..29.
* ``copyright`` / ``apple`` -- logo watermarks at the bottom-right (Liu et al. 2018). The
  reference repository ships PNG files; we draw our own masks instead: a ring with an
  inner "C", and an apple silhouette (two lobes, a bite, a leaf), rendered at 8x
  super-sampling and area-averaged to an ``s x s`` grayscale mask (28x28: ``s = 8`` at
  rows 20..27, cols 19..26, the region the reference logos occupy).
* ``pixel`` -- one pixel near the bottom-right corner (28x28: (26, 26); 8x8: (7, 7)).
* ``badnets`` -- a 3x3 checkerboard (trigger value and its complement) at the bottom-right
  (Gu et al., 2017, "pattern backdoor"; 28x28: rows/cols 24..26; 8x8: rows/cols 5..7).
* ``dba-lines`` -- the DBA paper's pixel trigger (Xie et al., ICLR 2020, CIFAR config "gap 3
  size 1*6 base (0,0)"; the Invariant Aggregator spec's decision A13): four lines of
  ``size`` rows x 6 columns at rows 0 and 4, cols 0..5 and 9..14 from the top-left corner;
  its four DBA parts are the four lines (local trigger i = line i). ``trigger_size`` is
  the line thickness (Table 9's x1/x2/x4: 1, 2, 4 rows); images narrower than 15
  columns get lines of ``(W - 1) // 2`` columns with a 1-column gap.
* ``nine-pixel`` -- the LeadFL paper's "9-pixel pattern" (Zhu et al., ICML 2023; from the
  backdoors101 synthesizer of its code, the LeadFL spec Sec. 1.4): a 5-row x 3-column box
  with 9 trigger pixels, six of value ``value`` and three of ``1 - value``::

      [[1, 0, 1],
       [-, 1, -],
       [-, -, 0],
       [-, 1, -],
       [1, 0, 1]]          (- = not part of the trigger)

  at rows 3..7, cols 23..25 on 28x28 and 32x32 images; smaller images put the box at the
  top-right (8x8: rows 1..5, cols 5..7). Raw [0, 1] values; the reference stamps the
  MNIST-normalised values into un-normalised images (spec decision A6), not reproduced.

* ``blended`` -- a whole-image blended trigger (Chen, Liu, Li, Lu, Song, "Targeted Backdoor
  Attacks on Deep Learning Systems Using Data Poisoning", 2017, Sec. 4.1, "blended injection
  strategy": ``x' = (1 - alpha) x + alpha k``): the pattern ``k`` is a fixed uniform-noise
  image (``torch.Generator`` seed ``trigger_size``, default 0; the paper's "random pattern"
  variant, its Hello-Kitty image is not reproduced) and the mask is ``alpha`` on every pixel.
  ``value`` is ``alpha``, the blend ratio (default 0.2, the paper's training ratio); ``position``
  does not apply. It splits for DBA like any trigger (row-major chunks of pixels).

Options: ``size`` (the plus's extent, the square's / logo's / checkerboard's side),
``position`` (top-left corner ``(row, col)`` of the trigger's bounding box, or one of
``top-left``, ``top-right``, ``bottom-left``, ``bottom-right``, ``center``) and ``value``
(the trigger's intensity; default 1.0 (white) for grayscale images, 0.0 (black) for colour
images, as the reference code's FMNIST and CIFAR-10 triggers; ``dba-lines``: 1.0, the DBA
code's maximum value). Sizes other than 8, 28
and 32 scale the 28x28 geometry by ``H / 28``.

Distributed backdoor (Xie et al., ICLR 2020; the RLR paper's Table 2): :meth:`Trigger.split`
cuts the trigger into parts, one per attacker; the plus splits into its four arms
(upper vertical incl. centre, lower vertical, left horizontal incl. centre, right
horizontal incl. centre -- the reference code's CIFAR split, whose left part also covers
one pixel right of the centre; we keep the arms symmetric), other triggers into
row-major chunks of their pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence, Union

import torch

from ..errors import ConfigError

TRIGGERS = ("plus", "square", "copyright", "apple", "pixel", "badnets", "dba-lines", "nine-pixel", "blended")
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")
Position = Union[str, Sequence[int], None]


@dataclass
class Trigger:
    """A stamp for raw images.

    ``mask``: ``(1, H, W)`` in [0, 1]; ``pattern``: ``(C, H, W)``; ``blend``: ``"replace"``
    or ``"add"``; ``parts``: optional list of ``(1, H, W)`` masks that split the trigger for
    distributed backdoors (set by the builders that know their geometry, e.g. the plus arms).
    """

    mask: torch.Tensor
    pattern: torch.Tensor
    blend: str = "replace"
    parts: Optional[list[torch.Tensor]] = field(default=None, repr=False)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Stamp the trigger on a batch of raw images ``(N, C, H, W)`` (or one ``(C, H, W)``)."""
        m = self.mask.to(x.device, x.dtype)
        p = self.pattern.to(x.device, x.dtype)
        if self.blend == "add":
            return (x + m * (2 * p - 1)).clamp(0.0, 1.0)
        return x * (1 - m) + p * m

    @property
    def num_pixels(self) -> int:
        """Pixels the trigger touches (non-zero mask entries)."""
        return int((self.mask > 0).sum())

    def split(self, parts: int) -> list["Trigger"]:
        """``parts`` sub-triggers whose union is this trigger (distributed backdoor)."""
        if parts < 1:
            raise ConfigError("attack.dba_parts", f"must be >= 1 (got {parts})", ">= 1")
        if self.parts is not None and len(self.parts) == parts:
            masks = self.parts
        else:
            flat = torch.nonzero(self.mask[0].flatten() > 0).flatten()
            if parts > len(flat):
                raise ConfigError(
                    "attack.dba_parts",
                    f"the trigger has only {len(flat)} pixels (got {parts} parts)",
                    f"1..{len(flat)}",
                )
            masks = []
            for chunk in torch.tensor_split(flat, parts):
                m = torch.zeros_like(self.mask).flatten()
                m[chunk] = self.mask.flatten()[chunk]
                masks.append(m.view_as(self.mask))
        return [replace(self, mask=m, parts=None) for m in masks]


# ---------------------------------------------------------------- geometry
def _scaled(v: float, size: int) -> int:
    return int(round(v * size / 28))


def default_size(name: str, h: int) -> int:
    """Default trigger size for images of height ``h`` (see the module docstring)."""
    table = {
        "plus": {8: 3, 28: 5, 32: 7},
        "square": {8: 2, 28: 5, 32: 5},
        "copyright": {8: 4, 28: 8, 32: 8},
        "apple": {8: 4, 28: 8, 32: 8},
        "pixel": {},
        "badnets": {8: 3, 28: 3, 32: 3},
        "dba-lines": {},
        "nine-pixel": {},
    }[name]
    if h in table:
        return table[h]
    if name == "plus":
        return 2 * max(1, _scaled(2, h)) + 1
    if name == "square":
        return max(2, _scaled(5, h))
    if name in ("copyright", "apple"):
        return max(4, _scaled(8, h))
    if name == "badnets":
        return 3
    return 1  # pixel, dba-lines (one row thick)


def _margin(h: int) -> int:
    return _scaled(2, h) if h >= 16 else 0


def default_position(name: str, h: int, w: int, size: int) -> tuple[int, int]:
    """Default top-left corner of the trigger's bounding box."""
    if name == "dba-lines":
        return (0, 0)
    if name == "plus":
        known = {8: (0, 0), 28: (5, 3), 32: (5, 2)}
        if h in known and w == h:
            return known[h]
        return (_scaled(5, h), _scaled(3, w))
    if name == "square":
        return (h - _margin(h) - size, w - _margin(w) - size)
    if name in ("copyright", "apple"):
        right = 1 if w >= 16 else 0
        return (h - size, w - right - size)
    # pixel, badnets: one pixel in from the bottom-right corner on large images
    m = 1 if h >= 16 else 0
    return (h - m - size, w - m - size)


def resolve_position(position: Position, name: str, h: int, w: int, size: int) -> tuple[int, int]:
    if position is None:
        return default_position(name, h, w, size)
    if isinstance(position, str):
        m = _margin(h)
        named = {
            "top-left": (m, m),
            "top-right": (m, w - m - size),
            "bottom-left": (h - m - size, m),
            "bottom-right": (h - m - size, w - m - size),
            "center": ((h - size) // 2, (w - size) // 2),
        }
        if position not in named:
            raise ConfigError(
                "attack.trigger_position", f"unknown position {position!r}", ", ".join(POSITIONS) + " or [row, col]"
            )
        return named[position]
    pos = tuple(int(v) for v in position)
    if len(pos) != 2:
        raise ConfigError(
            "attack.trigger_position",
            f"expected [row, col] (got {list(position)})",
            ", ".join(POSITIONS) + " or [row, col]",
        )
    return pos  # type: ignore[return-value]


# ---------------------------------------------------------------- logo masks
def _grid(size: int, ss: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample-point coordinates ``(u, v)`` in [0, 1]^2 (u = column, v = row) at ``ss``x super-sampling."""
    n = size * ss
    c = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    v, u = torch.meshgrid(c, c, indexing="ij")
    return u, v


def _downsample(hi: torch.Tensor, size: int, ss: int = 8) -> torch.Tensor:
    return hi.to(torch.float32).reshape(size, ss, size, ss).mean(dim=(1, 3))


def copyright_logo(size: int) -> torch.Tensor:
    """``(size, size)`` intensity mask of a copyright sign: a ring and an inner "C" open to the right."""
    u, v = _grid(size)
    du, dv = u - 0.5, v - 0.5
    r = torch.sqrt(du**2 + dv**2)
    ring = (r >= 0.39) & (r <= 0.5)
    angle = torch.atan2(dv, du)  # 0 = pointing right
    c = (r >= 0.16) & (r <= 0.27) & (angle.abs() >= math.radians(50))
    return _downsample(ring | c, size)


def apple_logo(size: int) -> torch.Tensor:
    """``(size, size)`` intensity mask of an apple silhouette: two lobes, a bite on the right, a leaf."""
    u, v = _grid(size)
    lobes = (((u - 0.37) ** 2 + (v - 0.6) ** 2) <= 0.29**2) | (((u - 0.63) ** 2 + (v - 0.6) ** 2) <= 0.29**2)
    notch = ((u - 0.5) ** 2 + (v - 0.26) ** 2) <= 0.08**2  # the dip at the top
    bite = ((u - 1.0) ** 2 + (v - 0.5) ** 2) <= 0.17**2
    ang = math.radians(-35)
    lu, lv = u - 0.57, v - 0.14
    ru, rv = lu * math.cos(ang) + lv * math.sin(ang), -lu * math.sin(ang) + lv * math.cos(ang)
    leaf = (ru / 0.13) ** 2 + (rv / 0.06) ** 2 <= 1.0
    return _downsample((lobes & ~notch & ~bite) | leaf, size)


# ---------------------------------------------------------------- builder
def make_trigger(
    name: str,
    shape: tuple[int, ...],
    value: Optional[float] = None,
    size: Optional[int] = None,
    position: Position = None,
    blend: Optional[str] = None,
) -> Trigger:
    """Build a named trigger for images of ``shape = (C, H, W)``.

    ``value``: trigger intensity in [0, 1] (default: 1.0 for 1 channel, 0.0 for colour);
    ``size``/``position``: see the module docstring; ``blend``: ``"replace"`` (default
    for pixel triggers) or ``"add"`` (default for the logos).

    >>> t = make_trigger("plus", (1, 28, 28))
    >>> sorted(map(tuple, torch.nonzero(t.mask[0]).tolist()))[:3]
    [(5, 5), (6, 5), (7, 3)]
    """
    if len(shape) != 3:
        raise ConfigError("attack.trigger", f"needs image inputs (C, H, W), got shape {shape}", "an image dataset")
    if name not in TRIGGERS:
        raise ConfigError("attack.trigger", f"unknown trigger {name!r}", ", ".join(TRIGGERS))
    c, h, w = shape
    if name == "blended":
        return _blended(c, h, w, value, size, position, blend)
    value = (1.0 if c == 1 or name == "dba-lines" else 0.0) if value is None else float(value)
    if not 0.0 <= value <= 1.0:
        raise ConfigError("attack.trigger_value", f"must be in [0, 1] (raw pixel range) (got {value})", "0..1")
    blend = blend or ("add" if name in ("copyright", "apple") else "replace")
    if blend not in ("replace", "add"):
        raise ConfigError("attack.trigger_blend", f"unknown blend {blend!r}", "replace, add")
    s = default_size(name, h) if size is None else int(size)
    if s < 1 or s > min(h, w):
        raise ConfigError(
            "attack.trigger_size", f"must be in 1..{min(h, w)} for {h}x{w} images (got {s})", f"1..{min(h, w)}"
        )
    if name == "plus" and s % 2 == 0:
        raise ConfigError("attack.trigger_size", f"the plus needs an odd size (got {s})", "3, 5, 7, ...")
    if name == "pixel":
        s = 1 if size is None else s
    if name == "dba-lines":
        return _dba_lines(c, h, w, s, value, blend, position)
    if name == "nine-pixel":
        return _nine_pixel(c, h, w, value, blend, position)
    r0, c0 = resolve_position(position, name, h, w, s)
    if r0 < 0 or c0 < 0 or r0 + s > h or c0 + s > w:
        raise ConfigError(
            "attack.trigger_position",
            f"a size-{s} trigger at ({r0}, {c0}) does not fit {h}x{w} images",
            f"rows 0..{h - s}, cols 0..{w - s}",
        )

    mask = torch.zeros(1, h, w)
    pattern = torch.full((c, h, w), value)
    parts = None
    if name == "plus":
        a = s // 2
        cr, cc = r0 + a, c0 + a
        mask[0, r0 : r0 + s, cc] = 1
        mask[0, cr, c0 : c0 + s] = 1
        parts = [torch.zeros(1, h, w) for _ in range(4)]
        parts[0][0, cr - a : cr + 1, cc] = 1  # upper vertical (with the centre)
        parts[1][0, cr + 1 : cr + a + 1, cc] = 1  # lower vertical
        parts[2][0, cr, cc - a : cc + 1] = 1  # left horizontal (with the centre)
        parts[3][0, cr, cc : cc + a + 1] = 1  # right horizontal (with the centre)
    elif name in ("square", "pixel"):
        mask[0, r0 : r0 + s, c0 : c0 + s] = 1
    elif name == "badnets":
        mask[0, r0 : r0 + s, c0 : c0 + s] = 1
        rr, cc_ = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        checker = ((rr + cc_) % 2 == 0).float()
        pattern[:, r0 : r0 + s, c0 : c0 + s] = value * checker + (1 - value) * (1 - checker)
    else:
        logo = copyright_logo(s) if name == "copyright" else apple_logo(s)
        mask[0, r0 : r0 + s, c0 : c0 + s] = logo
    return Trigger(mask, pattern, blend, parts)


def blended_pattern(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """The ``blended`` trigger's noise image ``(C, H, W)``, uniform in [0, 1], from ``seed``."""
    return torch.rand(c, h, w, generator=torch.Generator().manual_seed(int(seed)))


def _blended(
    c: int, h: int, w: int, alpha: Optional[float], seed: Optional[int], position: Position, blend: Optional[str]
) -> Trigger:
    """The whole-image blended trigger (see the module docstring)."""
    alpha = 0.2 if alpha is None else float(alpha)
    if not 0.0 < alpha <= 1.0:
        raise ConfigError(
            "attack.trigger_value",
            f"the blended trigger's ratio alpha must be in (0, 1] (got {alpha})",
            "0 < alpha <= 1, e.g. 0.2",
        )
    if position is not None:
        raise ConfigError("attack.trigger_position", "does not apply to the blended (whole-image) trigger", "unset it")
    if blend not in (None, "replace"):
        raise ConfigError("attack.trigger_blend", f"the blended trigger mixes images ({blend!r} given)", "replace")
    if seed is not None and int(seed) < 0:
        raise ConfigError("attack.trigger_size", f"the blended trigger's noise seed must be >= 0 (got {seed})", ">= 0")
    mask = torch.full((1, h, w), alpha)
    return Trigger(mask, blended_pattern(c, h, w, 0 if seed is None else int(seed)), "replace")


#: the LeadFL 9-pixel pattern: 1 = trigger value, 0 = its complement, -1 = not in the trigger
NINE_PIXEL = ((1, 0, 1), (-1, 1, -1), (-1, -1, 0), (-1, 1, -1), (1, 0, 1))


def _nine_pixel(c: int, h: int, w: int, value: float, blend: str, position: Position) -> Trigger:
    """The LeadFL 9-pixel pattern (see the module docstring)."""
    if position is None:
        r0, c0 = (3, 23) if h >= 28 and w >= 28 else (max(0, min(1, h - 5)), w - 3)
    else:
        r0, c0 = resolve_position(position, "nine-pixel", h, w, 3)
    if r0 < 0 or c0 < 0 or r0 + 5 > h or c0 + 3 > w:
        raise ConfigError(
            "attack.trigger_position",
            f"the 5x3 nine-pixel box at ({r0}, {c0}) does not fit {h}x{w} images",
            f"rows 0..{h - 5}, cols 0..{w - 3}",
        )
    pat = torch.tensor(NINE_PIXEL, dtype=torch.float32)
    mask = torch.zeros(1, h, w)
    pattern = torch.full((c, h, w), value)
    mask[0, r0 : r0 + 5, c0 : c0 + 3] = (pat >= 0).float()
    pattern[:, r0 : r0 + 5, c0 : c0 + 3] = torch.where(pat == 0, 1 - value, torch.full_like(pat, value))
    return Trigger(mask, pattern, blend)


def _dba_lines(c: int, h: int, w: int, k: int, value: float, blend: str, position: Position) -> Trigger:
    """The DBA pixel trigger: 4 lines of ``k`` rows, parts = the lines (see the module docstring)."""
    if not 1 <= k <= 4:
        raise ConfigError("attack.trigger_size", f"the DBA line thickness must be in 1..4 (got {k})", "1, 2, 4")
    length, gap = (6, 3) if w >= 15 else ((w - 1) // 2, 1)
    r0, c0 = resolve_position(position, "dba-lines", h, w, k)
    height, width = 4 + k, 2 * length + gap
    if r0 < 0 or c0 < 0 or r0 + height > h or c0 + width > w or length < 1:
        raise ConfigError(
            "attack.trigger_position",
            f"the DBA lines ({height}x{width}) at ({r0}, {c0}) do not fit {h}x{w} images",
            f"rows 0..{h - height}, cols 0..{w - width}",
        )
    parts = []
    for dr in (0, 4):
        for dc in (0, length + gap):
            m = torch.zeros(1, h, w)
            m[0, r0 + dr : r0 + dr + k, c0 + dc : c0 + dc + length] = 1
            parts.append(m)
    mask = torch.stack(parts).amax(dim=0)
    return Trigger(mask, torch.full((c, h, w), value), blend, parts)


def flip_labels(
    y: torch.Tensor, num_classes: int, source: int | None = None, target: int | None = None
) -> torch.Tensor:
    """``y -> C - 1 - y`` for every sample, or ``source -> target`` when both are given."""
    if source is None or target is None:
        return num_classes - 1 - y
    return torch.where(y == source, torch.full_like(y, target), y)


def eligible(y: torch.Tensor, target: int, source: Optional[int] = None) -> torch.Tensor:
    """Bool mask of the samples a backdoor may stamp: class ``source`` when one is set,
    else every sample not already of class ``target``."""
    return (y == source) if source is not None else (y != target)


def poisoned_indices(
    y: torch.Tensor, target: int, source: Optional[int], frac: float, generator: torch.Generator
) -> torch.Tensor:
    """Positions of the samples a backdoor attacker poisons: ``floor(frac * #eligible)``
    of the eligible ones (:func:`eligible`), drawn with ``generator``."""
    cand = torch.nonzero(eligible(y, target, source)).flatten()
    n = int(math.floor(frac * len(cand)))
    return cand[torch.randperm(len(cand), generator=generator)[:n].to(cand.device)]
