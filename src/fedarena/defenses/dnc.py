"""DnC, Divide-and-Conquer: spectral outlier removal on random coordinate subsets.

Shejwalkar & Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning Attacks
and Defenses for Federated Learning", NDSS 2021, Algorithm 2.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import ConfigError
from ..registry import DEFENSES
from ._rows import nonfinite_rows_fast as nonfinite_rows
from .base import Aggregate, Aggregator, RoundContext
from ..core.robust_kernels import mean_of


def dnc_scores(X: torch.Tensor) -> torch.Tensor:
    """Outlier scores of Algorithm 2, step 5: ``s_i = <x_i - mu, v>^2`` with ``v`` the top
    right singular vector of the centred rows. From the ``n x n`` Gram matrix of the
    centred rows ``K = U S^2 U^T``: ``X_c v = sigma u``, so ``s_i = lambda u_i^2``
    (``lambda`` its top eigenvalue) -- no ``d x d`` matrix and no SVD of ``X``."""
    X = X.to(torch.float64)
    Xc = X - X.mean(0)
    vals, vecs = torch.linalg.eigh(Xc @ Xc.T)
    return vals[-1].clamp_min(0) * vecs[:, -1].square()


@DEFENSES.register("dnc")
class DnC(Aggregator):
    """DnC: remove the rows with the largest projections on the top singular vector (Shejwalkar & Houmansadr, NDSS 2021).

    Algorithm 2 of the paper, ``iters`` times: sample ``b = subsample`` coordinates at
    random (all of them when ``b >= d``), centre the sampled rows, score each row by its
    squared projection on the top right singular vector (:func:`dnc_scores`), and keep
    the ``n - floor(c f)`` rows with the lowest scores; the good set is the intersection
    over the iterations and the aggregate is its mean. ``f`` is the declared
    ``defense.f`` (Blades and FLPoison pass the true number of attackers; set
    ``defense.f`` to it for their convention).

    Args:
        subsample: ``b``, coordinates per iteration (Blades' default, 10000).
        subsample_frac: a fraction of the ``d`` coordinates instead (FLPoison: 0.2).
        iters: ``niters`` (Blades and FLPoison: 5).
        c: the filtering fraction (the paper's ``c``; Blades and FLPoison: 1.0).

    Rows holding NaN/Inf are removed first and count towards the ``floor(c f)`` removed
    per iteration. The coordinate samples come from the round's defense generator.
    ``weights``: the accept mask.
    """

    def __init__(
        self, *, subsample: int = 10000, subsample_frac: Optional[float] = None, iters: int = 5, c: float = 1.0
    ):
        if subsample < 1:
            raise ConfigError("defense.subsample", f"must be >= 1 (got {subsample})", ">= 1, Blades: 10000")
        if subsample_frac is not None and not 0.0 < subsample_frac <= 1.0:
            raise ConfigError(
                "defense.subsample_frac", f"must be in (0, 1] (got {subsample_frac})", "0 < frac <= 1, or null"
            )
        if not 1 <= iters <= 1000:
            raise ConfigError("defense.iters", f"must be in 1..1000 (got {iters})", "1..1000, paper code: 5")
        if not c >= 0:
            raise ConfigError("defense.c", f"must be >= 0 (got {c})", ">= 0, Blades and FLPoison: 1.0")
        self.subsample, self.subsample_frac, self.iters, self.c = int(subsample), subsample_frac, int(iters), float(c)

    def validate(self, n: int, f: int) -> None:
        if int(self.c * f) >= n:
            raise ConfigError(
                "defense.f",
                f"dnc removes floor(c f) = {int(self.c * f)} of n = {n} rows, none would remain",
                f"f with floor(c f) < {n}",
            )

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n, d = U.shape
        bad = nonfinite_rows(U)
        rows = torch.nonzero(~bad).flatten()
        drop = max(0, min(int(self.c * int(ctx.f)) - int(bad.sum()), len(rows) - 1))
        b = (
            d
            if self.subsample_frac is None and self.subsample >= d
            else (max(1, int(self.subsample_frac * d)) if self.subsample_frac is not None else self.subsample)
        )
        good = torch.zeros(n, dtype=torch.bool)
        good[rows.cpu()] = True
        if drop > 0:
            gen = ctx.generator
            if gen is None or gen.device.type != "cpu":
                gen = torch.Generator().manual_seed(
                    int(ctx.round) if gen is None else int(gen.initial_seed()) + int(ctx.round)
                )
            for _ in range(self.iters):
                cols = None if b >= d else torch.randperm(d, generator=gen)[:b].to(U.device)
                X = U[rows] if cols is None else U.index_select(1, cols)[rows]
                s = dnc_scores(X).cpu()
                worst = torch.argsort(s, descending=True, stable=True)[:drop]
                good[rows.cpu()[worst]] = False
        good = good.to(U.device)
        idx = torch.nonzero(good).flatten()
        return Aggregate(mean_of(U, idx, bad), good, {"accepted": int(good.sum()), "subsample": b})
