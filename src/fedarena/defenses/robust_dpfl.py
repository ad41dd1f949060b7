"""Robust-DPFL: filter uploads whose coordinates do not average out (Qi, Wang, Huang, AAAI 2024).

"Towards the Robustness of Differentially Private Federated Learning" (LeadFL report,
Sec. VI, Eq. 12). DP noise is zero-mean and independent across coordinates, so the
coordinate mean of an honest upload ``S`` is close to 0, while an amplified poisoned
update carries a systematic bias. Score per upload::

    Z(S) = | (1/d) sum_i S[i] |                                   (12)

The scores are clustered by 1-D K-means with k = 2 (scikit-learn); the cluster with the
larger centroid is dropped and the rest averaged (FedAvg). When the clusters do not
separate -- the larger centroid is below ``separation`` (2) times the smaller, or the
scores take fewer than two distinct values -- everyone is kept (LeadFL spec §4.2 [rec]).

The authors' code takes ``Z`` over the full weight vector ``w_global + Delta`` (spec §5c):
``scope="weights"``. The default ``scope="update"`` scores the upload ``S`` itself, as
Eq. 12 is written.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import DEFENSES
from .base import Aggregate, Aggregator, RoundContext, nonfinite_rows


def dpfl_scores(U: torch.Tensor) -> torch.Tensor:
    """Eq. 12 for every row: ``|mean_i U[r, i]|`` (float64; +inf for non-finite rows).

    >>> dpfl_scores(torch.tensor([[1., -1., 3.], [2., 2., 2.]])).tolist()
    [1.0, 2.0]
    """
    z = U.to(torch.float64).mean(dim=1).abs()
    return z.masked_fill(nonfinite_rows(U), float("inf"))


def kmeans_keep(z: np.ndarray, separation: float = 2.0, seed: int = 0) -> np.ndarray:
    """Bool mask of the rows kept: 1-D K-means (k = 2) on finite scores, the cluster with
    the larger centroid dropped when it is at least ``separation`` times the other.
    Non-finite scores are always dropped."""
    from sklearn.cluster import KMeans

    finite = np.isfinite(z)
    keep = finite.copy()
    zf = z[finite]
    if len(np.unique(zf)) < 2:
        return keep
    km = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(zf.reshape(-1, 1))
    centers = km.cluster_centers_.ravel()
    hi, lo = int(np.argmax(centers)), int(np.argmin(centers))
    if centers[hi] < separation * centers[lo]:
        return keep  # no separation: keep everyone
    idx = np.flatnonzero(finite)
    keep[idx[km.labels_ == hi]] = False
    return keep


@DEFENSES.register("robust-dpfl")
class RobustDPFL(Aggregator):
    """Robust-DPFL: drop the K-means cluster of high |mean coordinate| scores, average the rest (Qi et al., AAAI 2024, Eq. 12).

    ``separation``: the larger centroid must be at least this many times the smaller one
    for a cluster to be dropped (else everyone is kept). ``scope``: score the upload
    (``"update"``, Eq. 12 as written) or the model it yields, ``w + S`` (``"weights"``,
    the authors' code).
    """

    def __init__(self, *, separation: float = 2.0, scope: str = "update"):
        if not separation >= 1:
            raise ConfigError("defense.separation", f"must be >= 1 (got {separation})", "a centroid ratio >= 1, e.g. 2")
        if scope not in ("update", "weights"):
            raise ConfigError("defense.scope", f"unknown value {scope!r}", "update, weights")
        self.separation, self.scope = float(separation), scope

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        if self.scope == "weights" and ctx.global_params is not None:
            z = dpfl_scores(U + ctx.global_params.to(U.dtype).unsqueeze(0)).cpu().numpy()
        else:
            z = dpfl_scores(U).cpu().numpy()
        keep = torch.from_numpy(kmeans_keep(z, self.separation, seed=int(ctx.round)))
        if not bool(keep.any()):
            raise ValueError("robust-dpfl: every row is non-finite")
        keep = keep.to(U.device)
        update = U[keep].mean(0)
        return Aggregate(
            update, weights=keep, info={"num_dropped": int((~keep).sum()), "client_scores": torch.from_numpy(z)}
        )
