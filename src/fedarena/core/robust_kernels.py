"""Tensor kernels of the robust rules, shared by defenses and attacks (core: they import
no component).

Distances (:func:`pairwise_sq_distances`, :func:`pairwise_cosine_distances`), Krum scores
(:func:`krum_scores`, :func:`lowest_scores`), coordinate-wise statistics
(:func:`trimmed_mean`, :func:`sorted_slice_mean`, :func:`coordinate_median`), the
geometric median and centered clipping. Attacks that simulate a rule (Fang's Krum
attack) use the same kernels as the rule.

**The NaN policy** of every rule, stated once: a client's non-finite values never crash
a rule, and never make its output non-finite while there are no more such clients than
the rule tolerates.

* Row statistics (distances, norms, weights, means): a row holding a NaN or Inf, or
  whose squared norm overflows (1e30 in float32), is *faulty* (:func:`row_sq_norms`).
  It is infinitely far from every other row, gets weight 0 and is left out of means
  (:func:`zero_faulty_rows`, :func:`clean_rows`, :func:`mean_of`).
* Coordinate order statistics (median, trimmed mean): NaN sorts above +Inf
  (:func:`sanitize_nan`), so trimming removes it like any extreme value.
* Sign votes (signSGD, RLR, the AND-mask): a NaN entry abstains and +-Inf votes +-1
  (:func:`fedarena.core.sign_masks.sign_votes`).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np
import torch

# ----------------------------------------------------------------------------- helpers

#: columns per block in coordinate-wise kernels (sort / selection on a cache-sized block)
CHUNK_COLS = 1 << 13
#: upper bound of iterative rules' iteration counts (RFA's Weiszfeld steps, CC's clipping
#: iterations): the papers use 1 to 10; a bound keeps a typo from hanging a run
MAX_ITERATIONS = 1000


def row_sq_norms(U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared L2 norm of each row and the ``(n,)`` bool mask of *faulty* rows.

    A row is faulty when it holds a NaN/Inf or its squared norm would overflow the Gram
    arithmetic (``> finfo.max / 8``, e.g. a 1e30 row in float32). Faulty rows get a
    squared norm of +inf. One pass over ``U``. Half-precision rows are measured in
    float32 (the Gram arithmetic of :func:`pairwise_sq_distances` runs in float32 too).
    """
    dtype = work_dtype(U)
    sq = torch.linalg.vector_norm(U, dim=1, dtype=dtype).square()
    bad = ~torch.isfinite(sq) | (sq > torch.finfo(dtype).max / 8)
    return sq.masked_fill(bad, math.inf), bad


def work_dtype(U: torch.Tensor) -> torch.dtype:
    return torch.float32 if U.dtype in (torch.float16, torch.bfloat16) else U.dtype


def safe_row_norms(U: torch.Tensor) -> torch.Tensor:
    """L2 norm of each row that does not overflow for huge finite rows (1e30 in float32):
    rows whose plain norm is not finite are recomputed as ``a * ||row / a||`` with
    ``a = max |row|``. NaN rows give NaN; rows holding an Inf give +inf."""
    norms = torch.linalg.vector_norm(U, dim=1)
    over = ~torch.isfinite(norms)
    if bool(over.any()):
        rows = U[over]
        a = rows.abs().amax(dim=1)
        finite = torch.isfinite(a) & (a > 0)
        scaled = torch.linalg.vector_norm(rows / torch.where(finite, a, 1.0).unsqueeze(1), dim=1)
        fixed = torch.where(finite, a * scaled, torch.where(torch.isnan(a), a, torch.full_like(a, math.inf)))
        norms = norms.clone()
        norms[over] = fixed
    return norms


#: the Gram expansion is redone on centred rows when some distance is below
#: ``CENTER_BELOW * eps * (||a||^2 + ||b||^2)`` (it would keep fewer than ~3 of its digits)
CENTER_BELOW = 2.0**16


def pairwise_sq_distances(
    U: torch.Tensor,
    sq: Optional[torch.Tensor] = None,
    bad: Optional[torch.Tensor] = None,
    center: Optional[bool] = None,
) -> torch.Tensor:
    """``(n, n)`` squared Euclidean distances from one Gram matrix:
    ``||a||^2 + ||b||^2 - 2 a.b``, clamped at 0, exact 0 on the diagonal.

    Faulty rows (see :func:`row_sq_norms`) are at +inf from every other row, so one NaN
    or 1e30 row never turns a distance into NaN. Cost: one GEMM ``U U^T``.

    Precision: the absolute error is about ``eps * (||a||^2 + ||b||^2)``, so rows whose
    distances are tiny next to their norms lose every digit in float32 (rows
    ``1 + 1e-3 N(0, 1)`` at d = 1e4, as client momenta at beta = 0.99 look: relative error
    ~0.5, and Krum picks a wrong row). Centring (subtracting the mean of the non-faulty
    rows) leaves the distances unchanged and shrinks the error to the rows' spread
    (~1e-6 relative on that example), for one more pass and an ``n x d`` copy.
    ``center=None`` (the default, used by Krum, Multi-Krum, Bulyan and NNM) centres
    exactly when it matters: when some distance is below ``CENTER_BELOW * eps`` times
    its two squared norms, the matrix is recomputed from centred rows; spread-out rows
    (the common case) cost one GEMM as before. ``True`` always centres, ``False`` never.
    """
    if sq is None or bad is None:
        sq, bad = row_sq_norms(U)
    U = U.to(work_dtype(U))
    if center:
        return _centred_sq_distances(U, bad)
    D = _gram_sq_distances(U, U @ U.T, sq, bad)
    if center is None:
        scale = sq.unsqueeze(1) + sq.unsqueeze(0)  # faulty pairs: D = scale = +inf, never "too close"
        scale.fill_diagonal_(0.0)  # the diagonal (D = 0) neither
        if bool((D < CENTER_BELOW * torch.finfo(U.dtype).eps * scale).any()):
            return _centred_sq_distances(U, bad)
    return D


def _centred_sq_distances(U: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    clean = zero_faulty_rows(U, bad)
    keep = (~bad).to(U.dtype)
    Uc = clean - (keep / keep.sum().clamp_min(1)) @ clean  # the mean as one GEMV
    G = Uc @ Uc.T
    return _gram_sq_distances(Uc, G, G.diagonal().clone().masked_fill_(bad, math.inf), bad)


def _gram_sq_distances(U: torch.Tensor, G: torch.Tensor, sq: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    D = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * G).clamp_min_(0.0)
    if bool(bad.any()):
        far = bad.unsqueeze(1) | bad.unsqueeze(0)
        D = D.masked_fill(far, math.inf)
    D.fill_diagonal_(0.0)
    return D


def pairwise_cosine_distances(U: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``(n, n)`` cosine distances ``1 - cos(a, b)`` in [0, 2] from one Gram matrix.

    Faulty rows are at +inf from every other row; a zero row is at distance 1 from all.
    """
    sq, bad = row_sq_norms(U)
    U = U.to(work_dtype(U))
    G = U @ U.T
    norms = sq.sqrt().masked_fill(bad, 1.0).clamp_min(eps)
    D = (1.0 - G / norms.unsqueeze(1) / norms.unsqueeze(0)).clamp_(0.0, 2.0)
    zero = sq <= eps * eps
    D = D.masked_fill(zero.unsqueeze(1) | zero.unsqueeze(0), 1.0)
    if bool(bad.any()):
        D = D.masked_fill(bad.unsqueeze(1) | bad.unsqueeze(0), math.inf)
    D.fill_diagonal_(0.0)
    return torch.nan_to_num_(D, nan=math.inf)


def krum_scores(D: torch.Tensor, f: int, active: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Krum score of every row (Blanchard et al. 2017, Sec. 4): the sum of its distances
    to its ``r - f - 2`` nearest *other* rows, ``r`` being the number of active rows
    (all rows by default). ``D``: ``(n, n)`` distances (squared Euclidean for Krum,
    any other for variants). The neighbour count is clamped to ``0 .. r-1``.
    Inactive rows score +inf and are nobody's neighbour.
    """
    n = D.shape[0]
    D = torch.nan_to_num(D, nan=math.inf)
    D = D.clone() if active is None else D.masked_fill(~active.unsqueeze(0), math.inf)
    D.fill_diagonal_(math.inf)
    r = n if active is None else int(active.sum())
    k = max(0, min(r - f - 2, r - 1))
    if k == 0:
        scores = torch.zeros(n, dtype=D.dtype, device=D.device)
    else:
        scores = torch.topk(D, k, dim=1, largest=False, sorted=False).values.sum(dim=1)
    if active is not None:
        scores = scores.masked_fill(~active, math.inf)
    return scores


def lowest_scores(scores: torch.Tensor, m: int, bad: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Indices of the ``m`` lowest scores; faulty rows (``bad``) come after every other
    row even when scores tie at +inf, then the lower index wins ties."""
    key = torch.nan_to_num(scores, nan=math.inf, posinf=torch.finfo(scores.dtype).max)
    if bad is not None:
        key = key.masked_fill(bad, math.inf)
    return torch.argsort(key, stable=True)[:m]


def multi_krum_select(D: torch.Tensor, f: int, m: int, bad: torch.Tensor) -> torch.Tensor:
    """Multi-Krum's one-shot selection (Blanchard et al. 2017, Sec. 4): the indices of the
    ``m`` rows with the lowest Krum scores under distances ``D``, lowest first, faulty rows
    left out (so fewer than ``m``, or none, when the ``m`` best include faulty rows)."""
    idx = lowest_scores(krum_scores(D, f), m, bad)
    return idx[~bad[idx]]


def sanitize_nan(U: torch.Tensor) -> torch.Tensor:
    """``U`` with NaN replaced by +inf, so coordinate-wise sorts put it at the top (a
    copy only when ``U`` holds a NaN; the check is one summation pass)."""
    if not bool(torch.isfinite(U.sum())) and bool(torch.isnan(U).any()):
        return torch.nan_to_num(U, nan=math.inf, posinf=math.inf, neginf=-math.inf)
    return U


def column_blocks(d: int, cols: int = CHUNK_COLS):
    for a in range(0, d, cols):
        yield slice(a, min(d, a + cols))


def for_blocks(fn, d: int, cols: int = CHUNK_COLS) -> None:
    """Call ``fn(slice)`` on every column block, on ``torch.get_num_threads()`` threads
    (NumPy's sort/partition release the GIL; blocks write disjoint outputs)."""
    blocks = list(column_blocks(d, cols))
    workers = min(torch.get_num_threads(), len(blocks))
    if workers <= 1:
        for b in blocks:
            fn(b)
        return
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(fn, blocks))


def use_numpy(U: torch.Tensor) -> bool:
    return U.device.type == "cpu" and U.dtype in (torch.float32, torch.float64) and not U.requires_grad


def trimmed_mean(U: torch.Tensor, trim: int) -> torch.Tensor:
    """Coordinate-wise trimmed mean along dim 0: per column, drop the ``trim`` largest
    and ``trim`` smallest values and average the other ``n - 2 trim`` (Yin et al.
    2018, Def. 2; the Fall-of-CC paper's TM with 0-based kept positions
    ``trim .. n-trim-1``). ``trim = 0`` is the mean. NaN counts as the largest value.
    """
    n = U.shape[0]
    if not 0 <= 2 * trim < n:
        raise ValueError(f"trim must satisfy 0 <= 2*trim < n (trim={trim}, n={n})")
    if trim == 0:
        return mean_rows(U)
    return sorted_slice_mean(U, trim, n - trim)


def sorted_slice_mean(U: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Per column, the mean of the values at sorted positions ``lo .. hi-1`` (0-based):
    the trimmed mean's kernel, asymmetric slices included (the Invariant Aggregator
    code's middle 10 %). NaN counts as the largest value (:func:`sanitize_nan`).

    On CPU: one ``numpy`` sort of each block of columns, transposed so that every
    coordinate's n values are contiguous (NumPy's SIMD sort: 1.4-1.9x faster than two
    ``numpy.partition`` selections and about 7x faster than ``torch.sort`` at n = 25-100).
    """
    n = U.shape[0]
    if not 0 <= lo < hi <= n:
        raise ValueError(f"the kept slice must satisfy 0 <= lo < hi <= n (lo={lo}, hi={hi}, n={n})")
    U = sanitize_nan(U)
    out = torch.empty(U.shape[1], dtype=U.dtype, device=U.device)
    if use_numpy(U):
        src, dst = U.numpy(), out.numpy()

        def slice_block(cols: slice) -> None:
            block = np.ascontiguousarray(src[:, cols].T)  # (c, n)
            block.sort(axis=1)
            dst[cols] = block[:, lo:hi].mean(axis=1)

        for_blocks(slice_block, U.shape[1])
        return out
    for cols in column_blocks(U.shape[1]):
        block = U[:, cols].T.contiguous()
        out[cols] = torch.sort(block, dim=1).values[:, lo:hi].mean(dim=1)
    return out


def coordinate_median(U: torch.Tensor, even: str = "mean") -> torch.Tensor:
    """Coordinate-wise median along dim 0 (Yin et al. 2018, Def. 1). For even ``n``:
    ``even="mean"`` averages the two middle values (the usual median, the CC reference
    code's), ``"lower"`` takes the lower one (``torch.median``, the RLR reference
    code's). NaN counts as the largest value.

    On CPU: one ``numpy`` sort of each transposed block of columns (NumPy's SIMD sort:
    1.0-1.9x faster than a ``numpy.partition`` selection at n = 20-100, which is about 2x
    faster than ``torch.median`` / ``torch.kthvalue`` at n = 100).
    """
    n = U.shape[0]
    U = sanitize_nan(U)
    lo = (n - 1) // 2
    two = n % 2 == 0 and even == "mean"
    out = torch.empty(U.shape[1], dtype=U.dtype, device=U.device)
    if use_numpy(U):
        src, dst = U.numpy(), out.numpy()

        def median_block(cols: slice) -> None:
            block = np.ascontiguousarray(src[:, cols].T)
            block.sort(axis=1)
            dst[cols] = 0.5 * (block[:, lo] + block[:, lo + 1]) if two else block[:, lo]

        for_blocks(median_block, U.shape[1])
        return out
    for cols in column_blocks(U.shape[1]):
        block = U[:, cols].T.contiguous()
        if two:
            mid = torch.topk(block, n // 2 + 1, dim=1, largest=False, sorted=True).values[:, lo : lo + 2]
            out[cols] = mid.mean(dim=1)
        else:
            out[cols] = torch.kthvalue(block, lo + 1, dim=1).values
    return out


def mean_rows(U: torch.Tensor) -> torch.Tensor:
    """Mean of the rows as one GEMV (faster than ``U.mean(0)`` on CPU)."""
    return torch.full((U.shape[0],), 1.0 / U.shape[0], dtype=U.dtype, device=U.device) @ U


def zero_faulty_rows(U: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """``U`` with faulty rows set to 0 (a copy only when there is one), so that a weight
    of 0 on such a row contributes 0 instead of ``0 * NaN = NaN``."""
    return U.masked_fill(bad.unsqueeze(1), 0.0) if bool(bad.any()) else U


def clean_rows(U: torch.Tensor, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U in dtype with its faulty rows set to 0, the faulty-row mask)``; faulty as in
    :func:`row_sq_norms`, measured in ``U``'s own dtype (a 1e30 row in float32 is faulty
    even though float64 would hold its norm)."""
    _, bad = row_sq_norms(U)
    return zero_faulty_rows(U.to(dtype), bad), bad


def geometric_median(
    U: torch.Tensor,
    iters: int = 3,
    nu: float = 0.1,
    alpha: Optional[torch.Tensor] = None,
    init: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smoothed Weiszfeld (Pillutla et al., "Robust Aggregation for Federated Learning",
    IEEE TSP 2022, Algorithm 2): ``iters`` steps of
    ``b_i = alpha_i / max(nu, ||z - u_i||)``, ``z = sum_i b_i u_i / sum_i b_i``,
    from ``init`` (default 0, the Fall-of-CC reference code's start), ``alpha``
    default uniform. Returns ``(z, b / sum b)``. Faulty rows get weight 0.
    """
    n, d = U.shape
    sq, bad = row_sq_norms(U)
    clean = zero_faulty_rows(U, bad)
    alpha = torch.full((n,), 1.0 / n, dtype=U.dtype, device=U.device) if alpha is None else alpha.to(U)
    alpha = alpha.masked_fill(bad, 0.0)
    z = torch.zeros(d, dtype=U.dtype, device=U.device) if init is None else init.to(U)
    w = alpha / alpha.sum().clamp_min(torch.finfo(U.dtype).tiny)
    for _ in range(iters):
        dist = distances_to(clean, sq, z)
        b = alpha / dist.clamp_min(nu)
        b = b.masked_fill(bad, 0.0)
        total = b.sum()
        if not bool(total > 0):  # every row faulty: nothing to average
            return torch.zeros_like(z), b
        w = b / total
        z = w @ clean
    return z, w


def distances_to(U: torch.Tensor, sq: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``||u_i - z||`` for every row, via ``||u||^2 - 2 u.z + ||z||^2`` (one GEMV),
    recomputed exactly (``U - z``) for rows where cancellation makes it inaccurate."""
    zz = torch.dot(z, z)
    d2 = sq - 2.0 * (U @ z) + zz
    # relative cancellation error ~ eps * (||u||^2 + ||z||^2); recompute rows near z
    tol = 64 * torch.finfo(U.dtype).eps * (sq + zz)
    near = torch.isfinite(sq) & (d2 <= 1024 * tol)
    if bool(near.any()):
        d2 = d2.clone()
        d2[near] = exact_sq_distances(U, z, torch.nonzero(near).flatten())
    return d2.clamp_min(0.0).sqrt()


def exact_sq_distances(U: torch.Tensor, z: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``||u_i - z||^2`` for ``rows``, accumulated over column blocks (no ``n x d`` temporary)."""
    acc = torch.zeros(rows.numel(), dtype=U.dtype, device=U.device)
    every = rows.numel() == U.shape[0]
    for cols in column_blocks(U.shape[1], 1 << 16):
        block = U[:, cols] if every else U[rows, cols]
        acc += torch.linalg.vector_norm(block - z[cols], dim=1).square()
    return acc


def centered_clip(
    U: torch.Tensor, center: torch.Tensor, tau: float, iterations: int = 1
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Centered Clipping (Karimireddy, He, Jaggi, ICML 2021, Eq. 2 / Algorithm 2):
    ``iterations`` times ``v <- v + (1/n) sum_i (u_i - v) min(1, tau / ||u_i - v||)``
    from ``v = center``. Returns ``(v, weights, clipped)``: the last iteration's
    per-row weights ``min(1, tau/||u_i - v||) / n`` and how many rows it clipped.
    A faulty row (NaN/Inf) contributes 0; a huge finite row is clipped to ``tau``.
    """
    n = U.shape[0]
    _, bad = row_sq_norms(U)
    nanrow = ~torch.isfinite(U).all(dim=1) if bool(bad.any()) else bad
    clean = zero_faulty_rows(U, nanrow)
    v = center.to(U)
    w = torch.zeros(n, dtype=U.dtype, device=U.device)
    clipped = 0
    for _ in range(iterations):
        if bool(bad.any()):
            dist = safe_row_norms(clean - v)
        else:
            sq = torch.linalg.vector_norm(clean, dim=1).square()
            dist = distances_to(clean, sq, v)
        scale = torch.where(dist > tau, tau / dist, torch.ones_like(dist))
        scale = scale.masked_fill(nanrow | ~torch.isfinite(dist), 0.0)
        clipped = int((dist > tau).sum())
        w = scale / n
        v = v + (w @ clean - w.sum() * v)
    return v, w, clipped


def mean_of(U: torch.Tensor, idx: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """Mean of rows ``idx`` leaving out faulty ones (0 if all are faulty)."""
    keep = idx[~bad[idx]]
    if keep.numel() == 0:
        return torch.zeros(U.shape[1], dtype=U.dtype, device=U.device)
    w = torch.zeros(U.shape[0], dtype=U.dtype, device=U.device)
    w[keep] = 1.0 / keep.numel()
    return w @ zero_faulty_rows(U, bad)
