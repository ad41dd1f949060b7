"""Robust rules from the EPFL robust-learning line of work (the aggregators ByzFL ships).

=============  ==============================================================
``mda``        Minimum-Diameter Averaging (El Mhamdi et al., PODC 2020)
``monna``      MoNNA: mean of a trusted row's n - f nearest neighbours
               (Farhadkhani et al., ICML 2023)
``meamed``     mean around the median, per coordinate (Xie, Koyejo, Gupta 2018)
``caf``        Covariance-bound Agnostic Filter (Allouah, Guerraoui, Stephan, ICML 2025)
``smea``       Smallest Maximum Eigenvalue Averaging (Allouah et al., ICML 2023)
=============  ==============================================================

Every rule reads the declared number of attackers ``ctx.f`` (``defense.f``) and needs
``2f < n``. MDA and SMEA search every subset of ``n - f`` rows: they enumerate the
``C(n, f)`` sets of rows left out, in batches, on the ``n x n`` Gram matrix only (one
``U U^T`` per round, never an ``n x d`` copy per subset), and refuse a configuration with
more than ``max_subsets`` subsets (one ``defense.max_subsets`` line). CAF and SMEA take
exact largest eigenvalues of the ``n x n`` (weighted, centred) Gram matrix, whose
non-zero eigenvalues are those of the ``d x d`` covariance; ByzFL estimates them with
one power-iteration step from a random vector, so its choice can differ from ours (and
from run to run) when two candidates are close.

A row holding NaN/Inf (or too large to square) is at +inf from every other row: MDA,
MoNNA and SMEA never select it while ``n - f`` other rows remain; CAF gives it weight 0
before it starts; Meamed sorts NaN to the top of every coordinate.
"""

from __future__ import annotations

import itertools
import math

import torch

from ..errors import ConfigError
from ..registry import DEFENSES
from .base import Aggregate, RoundContext
from ..core.robust_kernels import (
    distances_to,
    mean_of,
    pairwise_sq_distances,
    row_sq_norms,
    work_dtype,
    zero_faulty_rows,
)
from .robust import RowRule, closest_to_median_mean

#: rows of the ``C(n, f)`` enumeration evaluated together (a (B, n, n) temporary)
SUBSET_BATCH = 512
#: default bound on the subsets MDA and SMEA may enumerate per round
MAX_SUBSETS = 200_000


def _check_half(name: str, n: int, f: int) -> None:
    if not 0 <= 2 * f < n:
        raise ConfigError("defense.f", f"{name} needs 2f < n (n={n}, f={f})", f"0..{(n - 1) // 2}")


def _check_subsets(name: str, n: int, f: int, limit: int) -> None:
    count = math.comb(n, f)
    if count > limit:
        raise ConfigError(
            "defense.f",
            f"{name} searches every subset of n - f rows: C({n}, {f}) = {count:.3g} "
            f"subsets is more than defense.max_subsets = {limit}",
            "a smaller defense.f, or a larger defense.max_subsets",
        )


def _removed_sets(n: int, f: int):
    """Batches of the sets of ``f`` rows left out, ordered so that the kept sets come in
    the lexicographic order of ``itertools.combinations(range(n), n - f)`` (the kept set
    of a later batch never wins a tie)."""
    it = itertools.combinations(range(n - 1, -1, -1), f)  # complements of lexicographic kept sets
    while True:
        chunk = list(itertools.islice(it, SUBSET_BATCH))
        if not chunk:
            return
        yield torch.tensor(chunk, dtype=torch.long).reshape(len(chunk), f)


def _keep_masks(removed: torch.Tensor, n: int, device) -> torch.Tensor:
    keep = torch.ones(removed.shape[0], n, dtype=torch.bool, device=device)
    if removed.shape[1]:
        keep.scatter_(1, removed.to(device), False)
    return keep


def _mask_of(idx: torch.Tensor, n: int, device) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool, device=device)
    mask[idx] = True
    return mask


def _first_near_min(values: torch.Tensor, rtol: float) -> int:
    """Index of the first value within ``rtol`` (relative) of the minimum: ties that only
    rounding separates go to the first candidate, whatever the BLAS blocking."""
    v = torch.nan_to_num(values, nan=math.inf)
    best = float(v.min())
    if not math.isfinite(best):
        return 0
    return int(torch.nonzero(v <= best + rtol * max(abs(best), 1e-30)).flatten()[0])


def _subset_search(n: int, f: int, score, device) -> tuple[torch.Tensor, float]:
    """Score every kept set of ``n - f`` rows (``score(keep masks (B, n)) -> (B,)``) and
    return the first near-minimal one's mask and score."""
    masks, values = [], []
    for removed in _removed_sets(n, f):
        keep = _keep_masks(removed, n, device)
        masks.append(removed)
        values.append(score(keep).to(torch.float64).cpu())
    allv = torch.cat(values)
    j = _first_near_min(allv, TIE_RTOL)
    removed = torch.cat(masks)[j : j + 1]
    return _keep_masks(removed, n, device)[0], float(allv[j])


#: relative tolerance under which two subsets' scores count as tied (float32 rounding of the
#: Gram expansion is ~1e-7 relative)
TIE_RTOL = 1e-5


def min_diameter_subset(D: torch.Tensor, f: int) -> tuple[torch.Tensor, float]:
    """The subset of ``n - f`` rows with the smallest diameter ``max_{i,j in S} D_ij``
    (``D``: ``(n, n)`` distances, +inf for faulty rows). Ties (within ``TIE_RTOL``): the
    first subset in the lexicographic order of kept sets. Returns ``(bool mask (n,), diameter)``."""
    n = D.shape[0]
    D = torch.nan_to_num(D, nan=math.inf)
    zero = torch.zeros((), dtype=D.dtype, device=D.device)

    def diameters(keep: torch.Tensor) -> torch.Tensor:
        pair = keep.unsqueeze(2) & keep.unsqueeze(1)
        return torch.where(pair, D.unsqueeze(0), zero).amax(dim=(1, 2))

    return _subset_search(n, f, diameters, D.device)


@DEFENSES.register("mda")
class MDA(RowRule):
    """Minimum-Diameter Averaging: the mean of the n - f rows of smallest diameter.

    El Mhamdi, Guerraoui, Guirguis, Hoang, Rouault, "Genuinely Distributed Byzantine
    Machine Learning", PODC 2020 (MDA, Sec. 4)::

        S* = argmin_{|S| = n - f} max_{i, j in S} ||x_i - x_j||,   MDA(x) = mean_{i in S*} x_i

    Exhaustive over the ``C(n, f)`` subsets (the problem is NP-hard in general), on one
    Gram matrix; ``max_subsets`` bounds the search. Ties (within a relative ``TIE_RTOL``,
    above float32 rounding) go to the lexicographically first kept set (ByzFL's order). ``weights``: the selection mask. Needs ``2f < n``.

    >>> import torch; from fedarena.defenses.base import RoundContext
    >>> U = torch.tensor([[1., 2., 3.], [4., 5., 6.], [7., 8., 9.]])
    >>> MDA()(U, RoundContext(0, None, torch.arange(3), torch.ones(3), f=1)).update.tolist()
    [2.5, 3.5, 4.5]
    """

    def __init__(self, *, max_subsets: int = MAX_SUBSETS):
        if max_subsets < 1:
            raise ConfigError("defense.max_subsets", f"must be >= 1 (got {max_subsets})", ">= 1")
        self.max_subsets = int(max_subsets)

    def validate(self, n: int, f: int) -> None:
        _check_half("mda", n, f)
        _check_subsets("mda", n, f, self.max_subsets)

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n, f = self._checked(U, ctx)
        sq, bad = row_sq_norms(U)
        D = pairwise_sq_distances(U, sq, bad)  # squared distances: same argmin as distances
        mask, diam = min_diameter_subset(D, f)
        idx = torch.nonzero(mask & ~bad).flatten()
        return Aggregate(mean_of(U, idx, bad), mask, {"diameter": math.sqrt(diam) if math.isfinite(diam) else diam})


@DEFENSES.register("monna")
class MoNNA(RowRule):
    """MoNNA: the mean of the n - f nearest neighbours of a trusted row.

    Farhadkhani, Guerraoui, Gupta, Hoang, Pinot, Stephan, "Robust Collaborative Learning
    with Linear Gradient Overhead", ICML 2023 (Algorithm 1): ``MoNNA(x) = mean_{i in
    N_idx} x_i`` with ``N_idx`` the ``n - f`` rows nearest (L2) to row ``idx``, itself
    included. The rule is meant for peer-to-peer learning, where ``idx`` is the
    aggregating node's own (correct) vector; on a server, ``idx`` is the position of a row
    the server trusts (default 0, ByzFL's default). Ties in distance go to the lower row
    index. ``weights``: the selection mask. Needs ``2f < n``.
    """

    def __init__(self, *, idx: int = 0):
        if idx < 0:
            raise ConfigError("defense.idx", f"must be >= 0 (got {idx})", "0..n-1")
        self.idx = int(idx)

    def validate(self, n: int, f: int) -> None:
        _check_half("monna", n, f)
        if self.idx >= n:
            raise ConfigError("defense.idx", f"must be < n = {n} (got {self.idx})", f"0..{n - 1}")

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n, f = self._checked(U, ctx)
        sq, bad = row_sq_norms(U)
        if bool(bad[self.idx]):
            dist = torch.full((n,), math.inf, dtype=sq.dtype, device=U.device)
            dist[self.idx] = 0.0
        else:  # distances to one row: one GEMV (no n x n Gram matrix)
            work = zero_faulty_rows(U, bad).to(work_dtype(U))
            dist = distances_to(work, sq.masked_fill(bad, 0.0), work[self.idx])
        dist = torch.nan_to_num(dist, nan=math.inf).masked_fill(bad, math.inf)
        dist[self.idx] = -1.0  # the trusted row is always its own first neighbour
        order = torch.argsort(dist, stable=True)[: n - f]
        idx = order[~bad[order]]
        return Aggregate(mean_of(U, idx, bad), _mask_of(idx, n, U.device), {"reference_row": self.idx})


@DEFENSES.register("meamed")
class Meamed(RowRule):
    """Mean around the median: per coordinate, the mean of the n - f values closest to the median.

    Xie, Koyejo, Gupta, "Generalized Byzantine-tolerant SGD", arXiv:1802.10116, 2018
    (Definition 4, "mean around median")::

        [Meamed(x)]_k = 1/(n-f) sum_{j=1}^{n-f} [x_{pi_k(j)}]_k

    ``pi_k`` sorts the values of coordinate ``k`` by distance to their median. Ties: the
    lower of two equally close values wins. The median of an even number of values is
    the mean of the two middle ones (ByzFL uses ``np.median`` on arrays, likewise, but
    ``torch.median``, the lower one, on tensors). Needs ``2f < n``; NaN counts as +inf.
    """

    def validate(self, n: int, f: int) -> None:
        _check_half("meamed", n, f)

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n, f = self._checked(U, ctx)
        return Aggregate(closest_to_median_mean(U, n - f))


def _centred_gram(U: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """``(n, n)`` Gram matrix of the rows after subtracting the mean of the finite rows
    (distances and covariances are unchanged; the centring keeps the precision of the
    rows' spread), computed in ``U``'s working precision and returned in float64."""
    X = zero_faulty_rows(U, bad).to(work_dtype(U))
    keep = (~bad).to(X.dtype)
    X = X - (keep / keep.sum().clamp_min(1)) @ X
    X = X.masked_fill(bad.unsqueeze(1), 0.0)
    return (X @ X.T).to(torch.float64)


def _weighted_top_eig(G: torch.Tensor, c: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Top eigenpair of the weighted covariance ``Sigma_c = sum_i c_i (x_i - mu)(x_i - mu)^T / sum c``
    from the Gram matrix ``G = X X^T``. Returns ``(lambda_max, mu weights (n,), t)``
    with ``mu = w^T X`` and ``t_i = <x_i - mu, v>`` the projections on the top eigenvector."""
    s = c.sum()
    w = c / s
    Gw = G @ w
    K = G - Gw.unsqueeze(0) - Gw.unsqueeze(1) + w @ Gw  # (x_i - mu).(x_j - mu)
    r = c.clamp_min(0).sqrt()
    vals, vecs = torch.linalg.eigh(r.unsqueeze(1) * K * r.unsqueeze(0) / s)
    lam, u = float(vals[-1]), vecs[:, -1]
    if lam <= 0:
        return 0.0, w, torch.zeros_like(c)
    # v = X_c^T diag(r) u / sqrt(s lam):  t = X_c v = K diag(r) u / sqrt(s lam)
    t = K @ (r * u) / math.sqrt(float(s) * lam)
    return lam, w, t


@DEFENSES.register("caf")
class CAF(RowRule):
    """CAF: covariance-bound agnostic filter, a spectral down-weighting of outliers.

    Allouah, Guerraoui, Stephan, "Towards Trustworthy Federated Learning with Untrusted
    Participants", ICML 2025 (Algorithm 1). From weights ``c_i = 1``, while
    ``sum_i c_i > n - 2f``:

    1. ``mu_c = sum_i c_i x_i / sum_i c_i``;
    2. ``(lambda, v)``: the top eigenpair of ``Sigma_c = sum_i c_i (x_i - mu_c)(x_i - mu_c)^T / sum_i c_i``;
    3. ``tau_i = <x_i - mu_c, v>^2``, ``c_i <- c_i (1 - tau_i / max_j tau_j)``;

    and return the ``mu_c`` of the iteration with the smallest ``lambda``. Each iteration
    zeroes at least one weight, so at most ``n`` iterations. The eigenpair is exact (from
    the ``n x n`` weighted Gram matrix; ByzFL takes one power-iteration step from a random
    vector). ``weights``: the normalised ``c`` of the chosen iteration (0: filtered out).
    With ``f = 0`` the loop never runs: the mean. Needs ``2f < n``.
    """

    def validate(self, n: int, f: int) -> None:
        _check_half("caf", n, f)

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n, f = self._checked(U, ctx)
        sq, bad = row_sq_norms(U)
        G = _centred_gram(U, bad)
        c = (~bad).to(torch.float64)
        best_lam, best_w, iters = math.inf, c / c.sum().clamp_min(1), 0
        while float(c.sum()) > n - 2 * f and iters < n:
            iters += 1
            lam, w, t = _weighted_top_eig(G, c)
            if lam < best_lam:
                best_lam, best_w = lam, w
            tau = t.square().masked_fill(c <= 0, 0.0)
            top = float(tau.max())
            if top <= 0:  # every remaining row equal along every direction: nothing to filter
                break
            c = (c * (1.0 - tau / top)).clamp_min(0.0)
        w = best_w.to(U.device)
        update = w.to(work_dtype(U)) @ zero_faulty_rows(U, bad).to(work_dtype(U))
        return Aggregate(update.to(U.dtype), w.to(U.dtype), {"lambda_max": best_lam, "iterations": iters})


@DEFENSES.register("smea")
class SMEA(RowRule):
    """SMEA: the mean of the n - f rows whose covariance has the smallest top eigenvalue.

    Allouah, Guerraoui, Gupta, Pinot, Stephan, "On the Privacy-Robustness-Utility
    Trilemma in Distributed Learning", ICML 2023 (SMEA, Sec. 4)::

        S* = argmin_{|S| = n - f} lambda_max( 1/|S| sum_{i in S} (x_i - mu_S)(x_i - mu_S)^T ),
        SMEA(x) = mu_{S*}

    Exhaustive over the ``C(n, f)`` subsets, batched, with exact eigenvalues of each
    subset's centred ``(n-f) x (n-f)`` Gram matrix (``max_subsets`` bounds the search);
    ties (within ``TIE_RTOL``) go to the lexicographically first kept set. ``weights``:
    the selection mask.
    Needs ``2f < n``.
    """

    def __init__(self, *, max_subsets: int = MAX_SUBSETS):
        if max_subsets < 1:
            raise ConfigError("defense.max_subsets", f"must be >= 1 (got {max_subsets})", ">= 1")
        self.max_subsets = int(max_subsets)

    def validate(self, n: int, f: int) -> None:
        _check_half("smea", n, f)
        _check_subsets("smea", n, f, self.max_subsets)

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n, f = self._checked(U, ctx)
        sq, bad = row_sq_norms(U)
        G = _centred_gram(U, bad)
        k = n - f
        H = torch.eye(k, dtype=torch.float64, device=G.device) - 1.0 / k

        def top_eigenvalues(keep: torch.Tensor) -> torch.Tensor:
            idx = torch.nonzero(keep)[:, 1].reshape(len(keep), k)  # kept rows, ascending
            sub = G[idx.unsqueeze(2), idx.unsqueeze(1)]  # (B, k, k)
            lam = torch.linalg.eigvalsh(H @ sub @ H)[:, -1] / k
            return lam.masked_fill(bad[idx].any(dim=1), math.inf)

        best_mask, best = _subset_search(n, f, top_eigenvalues, G.device)
        mask = best_mask.to(U.device)
        idx = torch.nonzero(mask & ~bad).flatten()
        return Aggregate(mean_of(U, idx, bad), mask, {"lambda_max": best})
