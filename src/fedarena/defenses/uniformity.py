"""Uniformity filter: drop updates that (nearly) duplicate another one, then average.

The LeadFL report (Sec. V) found ProDiGy (Ergisi, Massny, Bitar, arXiv 2509.09534)
"extremely effective" against PoisonedFL "because the malicious updates are highly
similar". ProDiGy's exact scoring is not available to us (only its abstract: a joint
score of *proximity*, honest updates cluster, and *dissimilarity*, suspicious
uniformity is penalised), so this is not ProDiGy: it is the dissimilarity half alone,
the LeadFL spec's P4 filter, named for what it does.

Rule: ``r_i = min_{j != i} ||u_i - u_j||_2`` (nearest-neighbour distance) and ``m`` the
median of the pairwise distances ``||u_i - u_j||, i < j``; row ``i`` is dropped when
``r_i <= tol * m`` (``tol = 1e-6``: exact duplicates, as colluding PoisonedFL clients
send). The aggregate is the mean of the kept rows. Honest updates trained on different
data never coincide, so without an attack nothing is dropped. When every row would be
dropped (all identical) they are all kept: their mean is that vector anyway.

Distances are computed exactly (``torch.cdist`` without the Gram shortcut, in float64):
identical rows must give exactly 0. Rows holding a NaN/Inf are always dropped.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..registry import DEFENSES
from .base import Aggregate, Aggregator, RoundContext, nonfinite_rows


def nearest_neighbour_distances(U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n,)`` distance of each row to its nearest other row, and the ``(n, n)`` exact
    distance matrix (float64; the diagonal is +inf)."""
    X = U.to(torch.float64)
    D = torch.cdist(X.unsqueeze(0), X.unsqueeze(0), compute_mode="donot_use_mm_for_euclid_dist")[0]
    D.fill_diagonal_(float("inf"))
    return D.min(dim=1).values, D


def uniformity_mask(U: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """``(n,)`` bool: rows kept by the uniformity filter (see the module docstring).

    >>> U = torch.tensor([[0., 0.], [3., 4.], [3., 4.], [6., 8.]])
    >>> uniformity_mask(U).tolist()
    [True, False, False, True]
    """
    n = U.shape[0]
    bad = nonfinite_rows(U)
    keep = ~bad
    if n - int(bad.sum()) < 2:
        return keep
    clean = U[keep]
    nn, D = nearest_neighbour_distances(clean)
    iu = torch.triu_indices(len(clean), len(clean), offset=1, device=D.device)
    med = D[iu[0], iu[1]].median()
    dup = nn <= tol * med
    if bool(dup.all()):
        return keep
    out = keep.clone()
    out[keep.nonzero().squeeze(1)] = ~dup
    return out


@DEFENSES.register("uniformity-filter")
class UniformityFilter(Aggregator):
    """Drop near-duplicate updates (nearest-neighbour distance <= tol x median distance), average the rest.

    The dissimilarity criterion the LeadFL report credits ProDiGy with (Sec. V; LeadFL spec
    P4); not ProDiGy itself, whose scoring is not public in enough detail. ``tol``: the
    share of the median pairwise distance below which a row counts as a duplicate
    (1e-6: exact copies; larger values also catch noise-adapted copies).
    """

    def __init__(self, *, tol: float = 1e-6):
        if not tol >= 0:
            raise ConfigError("defense.tol", f"must be >= 0 (got {tol})", "a share of the median distance, e.g. 1e-6")
        self.tol = float(tol)

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        keep = uniformity_mask(U, self.tol)
        if not bool(keep.any()):
            raise ValueError("uniformity-filter: every row is non-finite")
        w = keep.to(U.dtype) / keep.sum()
        update = w[keep] @ U[keep]
        return Aggregate(update, weights=keep, info={"num_dropped": int((~keep).sum())})
