"""ARC, adaptive robust clipping: a pre-aggregation stage that clips the largest rows.

Allouah, Guerraoui, Gupta, Jellouli, Rizk, Stephan, "The Vital Role of Gradient Clipping
in Byzantine-Resilient Distributed Learning", arXiv:2405.14432, 2024 (Algorithm 1, ARC).
Switch on with ``defense.arc: true``; it composes with any aggregator (the paper pairs
it with NNM and a robust rule) and reads the declared ``defense.f``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..registry import STAGES
from .base import PreStage, RoundContext
from ..core.robust_kernels import safe_row_norms
from .stages import reusable_buffer


def arc_clip_count(n: int, f: int) -> int:
    """How many rows ARC clips: ``k = floor(2 (f / n) (n - f))`` (at most ``n - 1``).

    >>> arc_clip_count(3, 1), arc_clip_count(10, 2), arc_clip_count(25, 5)
    (1, 3, 8)
    """
    if n <= 0 or f <= 0:
        return 0
    return max(0, min(n - 1, math.floor(2 * f * (n - f) / n)))


def adaptive_robust_clip(U: torch.Tensor, f: int, out: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, float]:
    """ARC (Algorithm 1): with the row norms sorted increasingly, the ``k`` largest rows
    (:func:`arc_clip_count`) are scaled to the norm of the largest row left unclipped,
    ``C = ||x_{(n-k)}||``; the others stay. Returns ``(rows, C)`` (``C = inf``: nothing clipped).

    A NaN/Inf row counts as the largest and stays non-finite (the aggregator deals with
    it); a huge finite row is scaled to ``C``. Ties in norm: the lower row index counts as smaller.
    """
    n = U.shape[0]
    k = arc_clip_count(n, f)
    if k == 0:
        return U, math.inf
    norms = safe_row_norms(U)
    key = torch.nan_to_num(norms, nan=math.inf)
    order = torch.argsort(key, stable=True)
    C = float(key[order[n - k - 1]])
    if not math.isfinite(C):
        return U, C
    top = order[n - k :]
    scale = torch.ones(n, dtype=U.dtype, device=U.device)
    big = norms[top] > C
    scale[top] = torch.where(big, C / norms[top].clamp_min(torch.finfo(U.dtype).tiny), scale[top])
    if out is None:
        return U * scale.unsqueeze(1), C
    return torch.mul(U, scale.unsqueeze(1), out=out), C


@STAGES.register("arc")
class ARC(PreStage):
    """Adaptive robust clipping: the k largest updates clipped to the next one's norm (Allouah et al. 2024).

    ``k = floor(2 (f/n) (n - f))`` of the ``n`` rows, ``f`` the declared ``defense.f``
    (Algorithm 1 of "The Vital Role of Gradient Clipping in Byzantine-Resilient
    Distributed Learning"). Switch on with ``defense.arc: true``. Runs after server-side
    ``defense.clip`` and before ``defense.nnm`` and bucketing (the paper applies ARC first,
    then NNM). ``info`` of the round: none; the threshold is in :attr:`last_threshold`.
    """

    order = 20

    def __init__(self, *, arc: bool = False):
        self.arc = arc
        self.last_threshold = math.inf
        self._buf: Optional[torch.Tensor] = None

    def __call__(self, U: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        self._buf = reusable_buffer(self._buf, U)
        out, self.last_threshold = adaptive_robust_clip(U, int(ctx.f), self._buf)
        return out

    def reset(self) -> None:
        self._buf = None
        self.last_threshold = math.inf
