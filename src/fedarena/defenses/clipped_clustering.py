"""ClippedClustering: clip to the median of all norms seen so far, keep the larger cosine cluster.

Li, Sahu, Hu, et al., "An Experimental Study of Byzantine-Robust Aggregation Schemes in
Federated Learning", IEEE Transactions on Big Data, 2023 (Sec. 5, "Clipped Clustering");
the rule Blades ships as ``Clippedclustering``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import DEFENSES
from ._rows import nonfinite_rows_fast as nonfinite_rows
from .base import Aggregate, Aggregator, RoundContext
from ..core.robust_kernels import pairwise_cosine_distances, safe_row_norms


def two_cluster_majority(D: np.ndarray, linkage: str) -> np.ndarray:
    """Agglomerative clustering of a precomputed distance matrix into two clusters
    (``sklearn.cluster.AgglomerativeClustering``); bool mask of the larger one (the cluster
    labelled 1 when it holds more than ``n // 2`` rows, else the one labelled 0, as Blades)."""
    n = D.shape[0]
    if n < 3:
        return np.ones(n, dtype=bool)
    from sklearn.cluster import AgglomerativeClustering

    labels = AgglomerativeClustering(n_clusters=2, metric="precomputed", linkage=linkage).fit(D).labels_
    flag = 1 if labels.sum() > n // 2 else 0
    return labels == flag


@DEFENSES.register("clipped-clustering")
class ClippedClustering(Aggregator):
    """ClippedClustering: median-of-history clipping, then the larger of two cosine clusters (Li et al. 2023).

    Every round:

    1. the norms of the round's rows join the history of every norm seen so far
       (kept across rounds and saved in checkpoints); ``tau = min(median(history), max_tau)``;
       rows longer than ``tau`` are scaled to ``tau``;
    2. agglomerative clustering (``linkage``, default average) of the pairwise cosine
       distances into two clusters; the larger cluster is kept;
    3. the aggregate is the mean of the kept clipped rows.

    ``history=False``: the median of this round's norms only. ``weights``: the accept
    mask. Rows holding NaN/Inf are rejected and never enter the history.
    """

    def __init__(
        self,
        *,
        linkage: Literal["average", "single", "complete"] = "average",
        max_tau: float = 1e5,
        history: bool = True,
    ):
        if linkage not in ("average", "single", "complete"):
            raise ConfigError("defense.linkage", f"unknown linkage {linkage!r}", "average, single, complete")
        if not max_tau > 0:
            raise ConfigError("defense.max_tau", f"must be > 0 (got {max_tau})", "> 0, Blades: 1e5")
        self.linkage, self.max_tau, self.history = linkage, float(max_tau), history
        self.norm_history = torch.zeros(0, dtype=torch.float64)

    def reset(self) -> None:
        self.norm_history = torch.zeros(0, dtype=torch.float64)

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n = U.shape[0]
        ok = ~nonfinite_rows(U)
        norms = safe_row_norms(U).to(torch.float64)
        fresh = norms[ok].cpu()
        pool = torch.cat([self.norm_history, fresh]) if self.history else fresh
        if self.history:
            self.norm_history = pool
        tau = min(float(np.median(pool.cpu().numpy())), self.max_tau) if pool.numel() else 0.0
        rows = torch.nonzero(ok).flatten()
        X = U if rows.numel() == n else U[rows]
        D = pairwise_cosine_distances(X).to(torch.float64).cpu().numpy()  # one Gram GEMM in U's precision
        D = np.clip(np.nan_to_num(0.5 * (D + D.T), nan=2.0, posinf=2.0), 0.0, 2.0)
        np.fill_diagonal(D, 0.0)
        sub = two_cluster_majority(D, self.linkage)
        keep = torch.zeros(n, dtype=torch.bool, device=U.device)
        keep[rows[torch.from_numpy(sub).to(rows.device)]] = True
        scale = torch.where(norms > tau, tau / norms.clamp_min(1e-30), torch.ones_like(norms))
        coef = torch.where(keep, scale, torch.zeros_like(scale)) / max(int(keep.sum()), 1)
        Uc = torch.where(keep.unsqueeze(1), U, torch.zeros((), dtype=U.dtype, device=U.device))
        info = {"accepted": int(keep.sum()), "clip_bound": tau}
        return Aggregate(coef.to(U.dtype) @ Uc, keep, info)
