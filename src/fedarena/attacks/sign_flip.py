"""Sign flipping and infinite rows, as ByzFL, Blades and FLPoison ship them.

========== ============================== ========= ======== ==========================
name       source                         knowledge collude  sends
========== ============================== ========= ======== ==========================
signflip   Allen-Zhu et al., ICLR 2021    benign    yes      ``-scale * mean(B)`` (ByzFL)
           (``base=own``: Blades)       own       no       ``-scale * own update``
inf        ByzFL ``Inf``                  own       no       rows of +inf (or ``magnitude``)
========== ============================== ========= ======== ==========================
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch

from ..errors import ConfigError
from ..registry import ATTACKS
from .base import Attack, RoundView, Strength, ThreatModel

_OMNISCIENT = ThreatModel(knowledge="benign", collude=True)
_OWN = ThreatModel(knowledge="own", collude=False)


@ATTACKS.register("signflip")
class SignFlip(Attack):
    """Sign flipping: send the negated honest update, scaled by ``scale``.

    Allen-Zhu, Ebrahimian, Li, Alistarh, "Byzantine-Resilient Non-Convex Stochastic
    Gradient Descent", ICLR 2021 (the sign-flipping attack of their experiments).

    ``base="benign-mean"`` (default, ByzFL's ``SignFlipping``): every attacker sends
    ``-scale * mean(B)`` of the round's benign rows ``B`` (omniscient, colluding; IPM with
    epsilon = scale). ``base="own"`` (Blades' and FLPoison's): each attacker trains
    honestly and sends ``-scale * own update`` (the ``bit-flip`` attack; Blades negates
    every local gradient instead, which equals it for one local step). ``scale`` is the
    strength ``attack.optimize`` searches (0..10).

    >>> import torch; from fedarena.attacks.sign_flip import SignFlip
    >>> SignFlip().flip(torch.tensor([[1., 2., 3.], [4., 5., 6.], [7., 8., 9.]])).tolist()
    [-4.0, -5.0, -6.0]
    """

    strength = Strength("scale", 0.0, 10.0)

    def __init__(self, *, scale: float = 1.0, base: Literal["benign-mean", "own"] = "benign-mean"):
        if scale < 0:
            raise ConfigError("attack.scale", f"must be >= 0 (got {scale})", "a float >= 0")
        if base not in ("benign-mean", "own"):
            raise ConfigError("attack.base", f"unknown base {base!r}", "benign-mean, own")
        self.scale, self.base = float(scale), base
        self.threat = _OMNISCIENT if base == "benign-mean" else _OWN
        self.trains = base == "own"

    def flip(self, rows: torch.Tensor) -> torch.Tensor:
        """``-scale * mean(rows)``."""
        return -self.scale * rows.mean(0)

    def craft(self, view: RoundView) -> Optional[torch.Tensor]:
        m = len(view.malicious_ids)
        if self.base == "own":
            return -self.scale * view.own_updates
        B = view.benign_updates
        if B is None or len(B) == 0:
            return None
        return self.flip(B).reshape(1, -1).repeat(m, 1)


@ATTACKS.register("inf")
class Inf(Attack):
    """Infinite rows: every attacker sends a vector of +inf (ByzFL's ``Inf`` attack).

    ``magnitude``: a finite value instead (every coordinate equal to it), so that
    ``attack.optimize`` can search a constant vector's size (0..100 times the RMS
    coordinate of the benign rows). For NaN, -inf, 1e30 and mixed rows see ``nan``.
    """

    threat = _OWN
    trains = False
    strength = Strength("magnitude", 0.0, 100.0, "rms")

    def __init__(self, *, magnitude: Optional[float] = None):
        if magnitude is not None and magnitude < 0:
            raise ConfigError("attack.magnitude", f"must be >= 0 (got {magnitude})", "a float >= 0, or null for +inf")
        self.magnitude = magnitude

    def strength_value(self, view: RoundView) -> float:
        return math.inf if self.magnitude is None else float(self.magnitude)

    def craft(self, view: RoundView) -> torch.Tensor:
        value = math.inf if self.magnitude is None else float(self.magnitude)
        m, d = len(view.malicious_ids), view.layout.dim
        return torch.full((m, d), value, dtype=view.global_params.dtype, device=view.global_params.device)
