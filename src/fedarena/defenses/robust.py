"""Byzantine-robust aggregators and the tensor helpers they share.

Every rule maps the round's update matrix ``U`` (n x d, one row per client) to one
vector with tensor operations on ``U``: no loop over coordinates, and no pairwise loop
over clients (Krum, Multi-Krum and Bulyan take every pairwise distance from one Gram
matrix).

Rules (``defense.name``; parameters under ``defense.``):

=============  ==============================================================
``median``     coordinate-wise median (Yin et al., ICML 2018)
``trimmed-mean`` coordinate-wise trimmed mean, ``trim`` values dropped per side
``krum``       Krum (Blanchard et al., NeurIPS 2017)
``multi-krum`` mean of the ``m`` best Krum scores (same paper, Sec. 4)
``bulyan``     Bulyan (El Mhamdi et al., ICML 2018)
``rfa``        geometric median by smoothed Weiszfeld (Pillutla et al., 2022)
``cc``         Centered Clipping (Karimireddy et al., ICML 2021)
``sign``       signSGD with majority vote (Bernstein et al., ICLR 2019)
=============  ==============================================================

``ctx.f`` is the number of attackers a rule assumes: the config's ``defense.f``,
declared, never the round's true count (its default is documented in
:meth:`fedarena.config.ExperimentConfig.declared_f`).

Faulty rows: a NaN, Inf or huge (e.g. 1e30 in float32) row never crashes a rule and,
as long as there are no more such rows than the rule tolerates, never makes its output
non-finite. Distance-based rules treat such a row as infinitely far from every other
row (:func:`row_sq_norms` flags it, :func:`pairwise_sq_distances` puts it at +inf);
coordinate-wise rules sort NaN to the top of every coordinate (:func:`sanitize_nan`)
so trimming removes it.

The tensor kernels (``pairwise_sq_distances``, ``pairwise_cosine_distances``,
``krum_scores``, ``lowest_scores``, ``trimmed_mean``, ``coordinate_median``,
``geometric_median``, ``centered_clip``, the faulty-row policy) live in
:mod:`fedarena.core.robust_kernels`, where other rules and the attacks that simulate a
rule (Fang's) import them from.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..core.robust_kernels import (
    MAX_ITERATIONS,
    centered_clip,
    column_blocks,
    coordinate_median,
    for_blocks,
    geometric_median,
    krum_scores,
    lowest_scores,
    mean_of,
    multi_krum_select,
    pairwise_sq_distances,
    row_sq_norms,
    sanitize_nan,
    trimmed_mean,
    use_numpy,
    work_dtype,
)
from ..core.sign_masks import sign_votes
from ..errors import ConfigError
from ..registry import DEFENSES
from .base import Aggregate, Aggregator, RoundContext, check_f


class RowRule(Aggregator):
    """Base of the rules here: validates ``(n, f)`` again on the rows that reach it
    (pre-stages such as bucketing change the row count)."""

    def validate(self, n: int, f: int) -> None:  # pragma: no cover - overridden
        pass

    def _checked(self, U: torch.Tensor, ctx: RoundContext) -> tuple[int, int]:
        n, f = U.shape[0], int(ctx.f)
        if n == 0:
            raise ValueError("no rows to aggregate")
        try:
            self.validate(n, f)
        except ConfigError as e:
            rows = ctx.extras.get("row_of_client") if ctx.extras else None
            if rows is None or rows.numel() == n:
                raise
            raise ConfigError(
                e.field, f"{e.problem}; the pre-stages merged {rows.numel()} clients into {n} rows", e.valid
            ) from None
        return n, f


# ----------------------------------------------------------------------------- rules


@DEFENSES.register("median")
class Median(RowRule):
    """Coordinate-wise median (Yin et al., ICML 2018).

    Def. 1 of the paper. ``even``: for an even number of rows, ``"mean"`` of the two middle values (default)
    or the ``"lower"`` one (``torch.median``, as the RLR reference code). Tolerates up
    to ``ceil(n/2) - 1`` faulty rows.

    >>> import torch; from fedarena.core.robust_kernels import coordinate_median
    >>> coordinate_median(torch.tensor([[1., 5.], [2., 0.], [9., 1.]])).tolist()
    [2.0, 1.0]
    """

    def __init__(self, *, even: str = "mean"):
        if even not in ("mean", "lower"):
            raise ConfigError("defense.even", f"unknown value {even!r}", "mean, lower")
        self.even = even

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        self._checked(U, ctx)
        return Aggregate(coordinate_median(U, self.even))


@DEFENSES.register("trimmed-mean")
class TrimmedMean(RowRule):
    """Coordinate-wise trimmed mean, ``trim`` values dropped per side (Yin et al., ICML 2018).

    Def. 2 of the paper: per coordinate, drop the ``trim`` largest and ``trim``
    smallest values and average the rest.

    ``trim``: values dropped per side; default the declared ``defense.f``. Needs
    ``2 trim < n``.
    """

    def __init__(self, *, trim: Optional[int] = None):
        if trim is not None and trim < 0:
            raise ConfigError("defense.trim", f"must be >= 0 (got {trim})", "0 .. (n-1)//2")
        self.trim = trim

    def validate(self, n: int, f: int) -> None:
        b = f if self.trim is None else self.trim
        if 2 * b >= n:
            field = "defense.f" if self.trim is None else "defense.trim"
            raise ConfigError(
                field, f"trimmed-mean drops {b} values per side, must be < n/2 = {n / 2:g}", f"0..{(n - 1) // 2}"
            )

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        _, f = self._checked(U, ctx)
        b = f if self.trim is None else self.trim
        return Aggregate(trimmed_mean(U, b), info={"trim": b})


@DEFENSES.register("krum")
class Krum(RowRule):
    """Krum: the update closest to its n - f - 2 neighbours (Blanchard et al., NeurIPS 2017).

    Sec. 4 of the paper: the row with the lowest score, the sum of squared distances to
    its ``n - f - 2`` nearest other rows. Needs
    ``n >= 2f + 3``. ``weights``: the selection mask.

    Note: the CC reference code squares the (already squared) distances again; this
    follows the paper.
    """

    def validate(self, n: int, f: int) -> None:
        check_f("krum", n, f, 2, 3)

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n, f = self._checked(U, ctx)
        sq, bad = row_sq_norms(U)
        scores = krum_scores(pairwise_sq_distances(U, sq, bad), f)
        best = lowest_scores(scores, 1, bad)
        mask = torch.zeros(n, dtype=torch.bool, device=U.device)
        mask[best] = True
        update = U[best[0]].clone() if not bool(bad[best[0]]) else torch.zeros_like(U[0])
        return Aggregate(update, mask, {"selected": int(best[0])})


@DEFENSES.register("multi-krum")
class MultiKrum(RowRule):
    """Multi-Krum: mean of the m best Krum scores (Blanchard et al., NeurIPS 2017).

    Sec. 4 of the paper: the mean of the ``m`` rows with the lowest Krum scores.
    ``m`` default ``n - f``. Needs ``n >= 2f + 3``.

    (The Fall-of-CC reference code uses ``m = n - f - 2`` and returns the *sum* of the
    selected rows; set ``defense.m`` for the former, the latter is a bug.)
    """

    def __init__(self, *, m: Optional[int] = None):
        if m is not None and m < 1:
            raise ConfigError("defense.m", f"must be >= 1 (got {m})", "1..n")
        self.m = m

    def validate(self, n: int, f: int) -> None:
        check_f("multi-krum", n, f, 2, 3)
        if self.m is not None and self.m > n:
            raise ConfigError("defense.m", f"must be <= n = {n} (got {self.m})", f"1..{n}")

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n, f = self._checked(U, ctx)
        m = n - f if self.m is None else self.m
        sq, bad = row_sq_norms(U)
        idx = multi_krum_select(pairwise_sq_distances(U, sq, bad), f, m, bad)  # a faulty row is never averaged
        mask = torch.zeros(n, dtype=torch.bool, device=U.device)
        mask[idx] = True
        return Aggregate(mean_of(U, idx, bad), mask, {"selected": int(idx.numel())})


def bulyan_select(D: torch.Tensor, f: int, theta: int, bad: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Bulyan's selection (El Mhamdi et al. 2018, Algorithm 1, step 1): ``theta`` times,
    run Krum on the rows not yet selected and move its choice to the selection.
    Returns the selected indices in the order chosen."""
    n = D.shape[0]
    active = torch.ones(n, dtype=torch.bool, device=D.device)
    chosen = []
    for _ in range(theta):
        scores = krum_scores(D, f, active)
        i = lowest_scores(scores, 1, None if bad is None else bad | ~active)[0]
        chosen.append(i)
        active[i] = False
    return torch.stack(chosen)


def closest_to_median_mean(S: torch.Tensor, beta: int, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per coordinate, the mean of the ``beta`` values closest to the coordinate-wise
    median of the rows ``rows`` of ``S`` (all rows by default): Bulyan's step 2
    (El Mhamdi et al. 2018). NaN counts as +inf.

    The ``beta`` nearest values of a sorted column form a window ``[s, s + beta)``;
    the window whose farther end is nearest to the median is taken (ties: the lowest
    ``s``). Columns are sorted in blocks (``numpy.sort`` on CPU), so the selected rows
    are never copied as a whole.
    """
    S = sanitize_nan(S)
    rows = torch.arange(S.shape[0], device=S.device) if rows is None else rows.to(S.device)
    theta = int(rows.numel())
    if not 1 <= beta <= theta:
        raise ValueError(f"beta must be in 1..{theta} (got {beta})")
    out = torch.empty(S.shape[1], dtype=S.dtype, device=S.device)
    lo, starts = (theta - 1) // 2, theta - beta + 1
    if use_numpy(S):
        src, dst, r = S.numpy(), out.numpy(), rows.cpu().numpy()
        edge = np.arange(starts - 1)  # when beta >= starts-1, every window holds starts-1 .. beta-1
        pos = np.arange(theta)

        def bulyan_block(cols: slice) -> None:
            block = np.sort(np.ascontiguousarray(src[r, cols].T), axis=1)  # (c, theta)
            med = block[:, lo] if theta % 2 else 0.5 * (block[:, lo] + block[:, lo + 1])
            with np.errstate(invalid="ignore"):  # inf - inf when more rows are faulty than tolerated
                right = block[:, beta - 1 : beta - 1 + starts] - med[:, None]
                cost = np.maximum(med[:, None] - block[:, :starts], right)
                cost[np.isnan(cost)] = np.inf
                s = cost.argmin(axis=1)[:, None]
                if beta >= starts - 1:  # fixed core + the two ragged edges (fewer masked values)
                    total = block[:, starts - 1 : beta].sum(axis=1)
                    total += np.where(edge >= s, block[:, : starts - 1], 0).sum(axis=1)  # window start s
                    total += np.where(edge < s, block[:, beta:], 0).sum(axis=1)  # window end s + beta
                else:
                    total = np.where((pos >= s) & (pos < s + beta), block, 0).sum(axis=1)
            dst[cols] = total / beta

        for_blocks(bulyan_block, S.shape[1])
        return out
    offsets = torch.arange(beta, device=S.device)
    for cols in column_blocks(S.shape[1]):
        block = torch.sort(S[rows, cols].T.contiguous(), dim=1).values  # (c, theta)
        med = block[:, lo] if theta % 2 else 0.5 * (block[:, lo] + block[:, lo + 1])
        left = med.unsqueeze(1) - block[:, :starts]
        right = block[:, beta - 1 : beta - 1 + starts] - med.unsqueeze(1)
        cost = torch.nan_to_num(torch.maximum(left, right), nan=math.inf)
        s = torch.argmin(cost, dim=1)
        out[cols] = torch.gather(block, 1, s.unsqueeze(1) + offsets).mean(dim=1)
    return out


@DEFENSES.register("bulyan")
class Bulyan(RowRule):
    """Bulyan: repeated Krum, then a mean around the median (El Mhamdi et al., ICML 2018).

    Algorithm 1 of El Mhamdi, Guerraoui, Rouault: select
    ``theta = n - 2f`` rows by repeated Krum (each time on the rows not yet selected),
    then per coordinate average the ``beta = theta - 2f`` selected values closest to
    their median. Needs ``n >= 4f + 3``. ``weights``: the selection mask.

    (Flower and the Fall-of-CC reference code replace step 2 by a trimmed mean; this
    follows the paper.)
    """

    def validate(self, n: int, f: int) -> None:
        check_f("bulyan", n, f, 4, 3)

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n, f = self._checked(U, ctx)
        theta, beta = n - 2 * f, n - 4 * f
        sq, bad = row_sq_norms(U)
        idx = bulyan_select(pairwise_sq_distances(U, sq, bad), f, theta, bad)
        mask = torch.zeros(n, dtype=torch.bool, device=U.device)
        mask[idx] = True
        return Aggregate(closest_to_median_mean(U, beta, idx), mask, {"beta": beta})


@DEFENSES.register("rfa")
class RFA(RowRule):
    """RFA: geometric median by smoothed Weiszfeld (Pillutla et al., IEEE TSP 2022).

    Algorithm 2 of Pillutla, Kakade, Harchaoui: ``iters`` steps with
    smoothing ``nu``, from 0 (the Fall-of-CC setting: 3 steps, nu = 0.1).

    ``weighted``: ``alpha_i`` proportional to the clients' sample counts (the paper's
    weights) instead of uniform. ``weights``: the final Weiszfeld weights (sum 1).
    """

    def __init__(self, *, iters: int = 3, nu: float = 0.1, weighted: bool = False):
        if not 1 <= iters <= MAX_ITERATIONS:
            raise ConfigError("defense.iters", f"must be in 1..{MAX_ITERATIONS} (got {iters})", f"1..{MAX_ITERATIONS}")
        if not nu > 0:
            raise ConfigError("defense.nu", f"must be > 0 (got {nu})", "> 0")
        self.iters, self.nu, self.weighted = iters, nu, weighted

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n, _ = self._checked(U, ctx)
        alpha = None
        if self.weighted and ctx.num_samples is not None and ctx.num_samples.numel() == n:
            alpha = ctx.num_samples.to(U.dtype).to(U.device)
            alpha = alpha / alpha.sum()
        z, w = geometric_median(U.to(work_dtype(U)), self.iters, self.nu, alpha)
        z = z.to(U.dtype)
        pos = w[w > 0]
        spread = float(pos.max() / pos.min()) if pos.numel() else 0.0
        return Aggregate(z, w, {"weight_max": float(w.max()), "weight_spread": spread})


@DEFENSES.register("cc")
class CenteredClipping(RowRule):
    """Centered Clipping around the previous aggregate (Karimireddy et al., ICML 2021).

    Eq. 2 / Algorithm 2 of Karimireddy, He, Jaggi::

        v <- v + (1/n) sum_i (u_i - v) min(1, tau / ||u_i - v||)     (l times)

    The center ``v`` is this rule's previous output, kept across rounds and starting at
    0 (the Fall-of-CC paper's reference ``m~_{t-1}``); :meth:`reset` forgets it.
    ``tau``: clipping radius (raw, not scaled by ``1 - beta``; default 1 as the Fall-of-CC
    reference code); ``iterations``: l (default 1). ``weights``: per-row weights of the
    last iteration, ``min(1, tau/||u_i - v||) / n``; ``info["clipped"]``: rows clipped.
    """

    def __init__(self, *, tau: float = 1.0, iterations: int = 1):
        if not tau > 0:
            raise ConfigError("defense.tau", f"must be > 0 (got {tau})", "> 0")
        if not 1 <= iterations <= MAX_ITERATIONS:
            raise ConfigError(
                "defense.iterations", f"must be in 1..{MAX_ITERATIONS} (got {iterations})", f"1..{MAX_ITERATIONS}"
            )
        self.tau, self.iterations = float(tau), int(iterations)
        self.center: Optional[torch.Tensor] = None

    def reset(self) -> None:
        self.center = None

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        self._checked(U, ctx)
        work = U.to(work_dtype(U))  # half precision: clip in float32
        if self.center is None or self.center.shape[0] != U.shape[1]:
            self.center = torch.zeros(U.shape[1], dtype=work.dtype, device=U.device)
        v, w, clipped = centered_clip(work, self.center, self.tau, self.iterations)
        self.center = v.detach().clone()
        return Aggregate(v.to(U.dtype), w, {"clipped": clipped, "clipped_frac": clipped / U.shape[0]})


@DEFENSES.register("sign")
class SignMajority(RowRule):
    """signSGD majority vote: sign of the sum of signs (Bernstein et al., ICLR 2019).

    Algorithm 3 of the paper (the RLR paper's Eq. 4): ``sign(sum_i sign(u_i))``,
    coordinates with a tied vote get 0.

    The output has entries in {-1, 0, +1}; the step size is the server's: under
    ``fl.algorithm=fedavg`` the model moves by ``fl.server_lr * vote`` (the RLR paper
    uses ``server_lr = 1e-3`` with sign), under ``fedsgd`` by ``-lr * vote`` (signSGD).
    A NaN entry abstains; ``info["tie_frac"]``: fraction of tied coordinates.
    """

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        self._checked(U, ctx)
        out = torch.sign(sign_votes(U))  # a NaN entry abstains; +-inf votes +-1
        return Aggregate(out, info={"tie_frac": float((out == 0).to(torch.float32).mean())})
