"""SignGuard: norm filtering, sign-statistics clustering, then a clipped mean.

Xu, Huang, Song, Lan, "SignGuard: Byzantine-robust Federated Learning through
Collaborative Malicious Gradient Filtering", ICDCS 2022 (arXiv:2109.05872), Algorithm 1.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import DEFENSES
from ._rows import nonfinite_rows_fast as nonfinite_rows
from .base import Aggregate, Aggregator, RoundContext
from ..core.robust_kernels import safe_row_norms


def sign_features(X: torch.Tensor) -> torch.Tensor:
    """``(n, 3)`` fractions of positive, zero and negative coordinates of each row
    (SignGuard's sign statistics, Sec. IV-B)."""
    d = X.shape[1]
    pos = (X > 0).sum(1).to(torch.float64)
    neg = (X < 0).sum(1).to(torch.float64)
    return torch.stack([pos, d - pos - neg, neg], dim=1) / d


def largest_cluster(feats: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """Bool mask of the largest cluster of ``feats``: ``meanshift`` (the paper's choice:
    ``sklearn.cluster.MeanShift``, bandwidth by ``estimate_bandwidth``) or ``kmeans``
    (two clusters, Blades' choice; the cluster labelled 1 is taken when it holds more
    than ``n // 2`` rows, else the one labelled 0). Identical features: one cluster."""
    n = feats.shape[0]
    if n < 2 or np.ptp(feats, axis=0).max() <= 0:
        return np.ones(n, dtype=bool)
    if method == "kmeans":
        from sklearn.cluster import KMeans

        labels = KMeans(n_clusters=2, random_state=seed, n_init=10).fit(feats).labels_
        flag = 1 if labels.sum() > n // 2 else 0
        return labels == flag
    from sklearn.cluster import MeanShift, estimate_bandwidth

    bw = estimate_bandwidth(feats, quantile=0.5)
    if not bw > 0:
        bw = float(np.ptp(feats, axis=0).max())
    labels = MeanShift(bandwidth=bw).fit(feats).labels_
    return labels == np.bincount(labels).argmax()


@DEFENSES.register("signguard")
class SignGuard(Aggregator):
    """SignGuard: norm filter, sign-statistics clustering, clipped mean (Xu et al., ICDCS 2022).

    Algorithm 1 of the paper, on the round's rows ``g_i``:

    1. ``M = median_i ||g_i||``; ``S1 = {i : lower <= ||g_i|| / M <= upper}`` (L = 0.1, R = 3.0);
    2. on a random ``coords`` fraction of the coordinates (the round's defense generator;
       the fraction is a setting here, default 0.1), each row's sign statistics
       (fractions of positive, zero, negative entries) are clustered (Mean-Shift,
       bandwidth ``sklearn.cluster.estimate_bandwidth`` at quantile 0.5); ``S2`` = the
       largest cluster;
    3. the aggregate is the mean over ``S1 & S2`` of ``g_i min(1, M / ||g_i||)``.

    ``variant="blades"``: Blades' implementation instead: every row is first clipped to
    ``M`` (so only the lower bound filters), the statistics use every coordinate and are
    clustered by 2-means (``random_state=0``). ``weights``: the accept mask
    (``S1 & S2``). Rows holding NaN/Inf are rejected before everything else.
    """

    def __init__(
        self,
        *,
        lower: float = 0.1,
        upper: float = 3.0,
        coords: float = 0.1,
        clustering: Literal["meanshift", "kmeans"] = "meanshift",
        variant: Literal["paper", "blades"] = "paper",
    ):
        if not 0 <= lower <= 1 <= upper:
            raise ConfigError(
                "defense.lower", f"need 0 <= lower <= 1 <= upper (got {lower}, {upper})", "paper: lower=0.1, upper=3.0"
            )
        if not 0 < coords <= 1:
            raise ConfigError("defense.coords", f"must be in (0, 1] (got {coords})", "0 < coords <= 1, default 0.1")
        if clustering not in ("meanshift", "kmeans"):
            raise ConfigError("defense.clustering", f"unknown method {clustering!r}", "meanshift, kmeans")
        if variant not in ("paper", "blades"):
            raise ConfigError("defense.variant", f"unknown variant {variant!r}", "paper, blades")
        self.lower, self.upper, self.coords, self.clustering, self.variant = lower, upper, coords, clustering, variant

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n, d = U.shape
        ok = ~nonfinite_rows(U)
        rows = torch.nonzero(ok).flatten()
        norms = safe_row_norms(U).to(torch.float64)
        M = float(np.median(norms[ok].cpu().numpy())) if bool(ok.any()) else 0.0  # even n: mean of the middle two
        clipped = torch.minimum(norms, torch.full_like(norms, M)) if self.variant == "blades" else norms
        ratio = clipped / max(M, 1e-30)
        s1 = ok & (ratio >= self.lower) & (ratio <= (self.upper if self.variant == "paper" else float("inf")))
        if self.variant == "blades" or self.coords >= 1:
            X = U[rows]
        else:
            gen = ctx.generator if ctx.generator is not None and ctx.generator.device.type == "cpu" else None
            if gen is None:
                gen = torch.Generator().manual_seed(int(ctx.round))
            k = max(1, int(round(self.coords * d)))
            cols = torch.randperm(d, generator=gen)[:k].to(U.device)
            X = U.index_select(1, cols)[rows]
        method = "kmeans" if self.variant == "blades" else self.clustering
        sub = largest_cluster(sign_features(X).cpu().numpy(), method)
        s2 = torch.zeros(n, dtype=torch.bool, device=U.device)
        s2[rows[torch.from_numpy(sub).to(rows.device)]] = True
        keep = s1 & s2
        scale = torch.where(norms > M, M / norms.clamp_min(1e-30), torch.ones_like(norms))
        coef = torch.where(keep, scale, torch.zeros_like(scale)) / max(int(keep.sum()), 1)
        Uc = torch.where(keep.unsqueeze(1), U, torch.zeros((), dtype=U.dtype, device=U.device))
        info = {
            "accepted": int(keep.sum()),
            "norm_rejected": int((ok & ~s1).sum()),
            "sign_rejected": int((ok & ~s2).sum()),
            "median_norm": M,
        }
        return Aggregate(coef.to(U.dtype) @ Uc, keep, info)
