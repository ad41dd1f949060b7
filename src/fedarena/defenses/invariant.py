"""The Invariant Aggregator (Wang, Dimitriadis, Koyejo, Tople, AISTATS 2024, Algorithm 1).

Per coordinate ``k`` the server computes

* the **sign consistency** ``c_k = |(1/N) sum_i sign(g_{i,k})|`` and the **AND-mask**
  ``m_k = 1[c_k > tau]`` (Definition 7; ``sign(0) = 0``),
* the **alpha-trimmed mean** ``tg_k`` dropping ``b = ceil(alpha N)`` values from each tail
  (Definitions 8-9),

and returns ``m * tg`` (Algorithm 1, line 3). The engine then steps
``w_t = w_{t-1} + server_lr * aggregate`` (rows of ``U`` are ``w_local - w_global``, the
negated pseudo-gradients of the paper; signs and the trimmed mean are odd functions, so
aggregating ``-g`` gives ``-aggregate(g)``).

Choices where the paper is ambiguous (spec ``invariant-aggregator.md`` section 7):

* A1: the mask is in {0, 1} on the *normalised* consistency (Definition 7's ``1/N``
  outside the indicator is a typo).
* A2: ``strict=True`` (``>``, Definition 7, Algorithm 1 and the paper's Fig. 2b example
  "masked if tau >= 1/7"); ``strict=False`` gives ``>=`` (the AND-mask paper, the
  authors' code and Theorem 10's ``p_-`` bound). The comparison is made on the integer
  sign sum against ``tau N`` with a 1e-9 tolerance.
* A4: ``trim_mode="ceil"`` trims ``ceil(trim_frac N)`` per side (Definition 9);
  ``trim_mode="middle"`` keeps the sorted slice ``[int(0.45 N), int(0.55 N))`` of the
  authors' code. ``N - 2b < 1`` raises.
* A6: unweighted (sample counts play no role).
* A22: the mean-variance-ratio ablation uses ``r_k = |mean_k| / (std_k + 1e-12)``
  (``ddof=0``) with the mask ``r_k > mv_tau``; ``mv_tau=None`` calibrates it once, in the
  first round, so that the share of masked coordinates equals the sign mask's at ``tau``.

``preset="code"`` is the authors' released variant (``tau=0.6``, ``>=``, middle 10%);
``preset="paper"`` (default) is Algorithm 1 with ``tau=0.2`` (Table 3, CIFAR-10) and
``trim_frac=0.25``. Ablations of Table 4: ``estimator="mean"`` (AND-mask * mean),
``mask="none"`` (trimmed mean alone), ``mask="mean-var"`` (mean-variance ratio).

Non-finite values from malicious clients follow the rules' NaN policy
(:mod:`fedarena.core.robust_kernels`): in the sign mask a NaN abstains and +-Inf votes
+-1; in the trimmed mean NaN sorts above +Inf, so it is trimmed like any extreme value;
the mean ablation and the mean-variance statistic leave faulty rows out.

Example::

    >>> import torch
    >>> U = torch.tensor([[1.0, -0.5, 0.2, 0.0], [2.0, 0.5, 0.1, 0.0], [0.5, -1.0, -0.3, 0.0],
    ...                   [1.5, 2.0, 0.4, 0.0], [9.0, -3.0, 0.3, 1.0]])
    >>> invariant_aggregate(U, tau=0.5, trim_frac=0.2)
    tensor([1.5000, 0.0000, 0.2000, 0.0000])
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch

from ..core.robust_kernels import mean_of, mean_rows, row_sq_norms, sorted_slice_mean
from ..core.sign_masks import adaptive_rescale, and_mask, sign_consistency, sign_votes  # noqa: F401 (public here too)
from ..errors import ConfigError
from ..registry import DEFENSES
from .base import Aggregate, Aggregator, RoundContext

#: tolerance of the trim count (``0.25 * 20`` gives 5, not 6)
TOL = 1e-9

TrimMode = Literal["ceil", "middle"]
MaskKind = Literal["sign", "mean-var", "none"]
Estimator = Literal["trimmed-mean", "mean"]

PRESETS = {
    # Algorithm 1 with Table 3's CIFAR-10 values
    "paper": {"tau": 0.2, "strict": True, "trim_mode": "ceil"},
    # the authors' released code: |mean sign| >= 0.6, sorted slice [int(.45N), int(.55N))
    "code": {"tau": 0.6, "strict": False, "trim_mode": "middle"},
}


def trim_count(n: int, trim_frac: float) -> int:
    """``b = ceil(trim_frac * n)`` values dropped from each tail (Definition 9), with a
    1e-9 tolerance so that e.g. ``0.25 * 20`` gives 5, not 6."""
    return max(0, math.ceil(trim_frac * n - TOL))


def trim_slice(n: int, trim_frac: float, mode: TrimMode = "ceil") -> tuple[int, int]:
    """Sorted positions ``[lo, hi)`` that the trimmed mean keeps.

    ``"ceil"``: ``[b, n - b)`` with ``b = ceil(trim_frac n)`` (Definition 9).
    ``"middle"``: ``[int(0.45 n), int(0.55 n))`` (the authors' code; ``trim_frac`` unused),
    widened to at least one element.
    """
    if mode == "middle":
        lo, hi = int(0.45 * n), int(0.55 * n)
        return (lo, max(hi, lo + 1))
    b = trim_count(n, trim_frac)
    return b, n - b


def trimmed_mean(U: torch.Tensor, trim_frac: float = 0.25, mode: TrimMode = "ceil") -> torch.Tensor:
    """Coordinate-wise trimmed mean of the rows of ``U`` (Definition 9; Xie et al. 2020)."""
    lo, hi = trim_slice(U.shape[0], trim_frac, mode)
    if hi - lo < 1:
        raise ConfigError(
            "defense.trim_frac",
            f"keeps no value with {U.shape[0]} rows (trims {lo} per side)",
            f"< {0.5 - 0.5 / max(U.shape[0], 1):.3f}",
        )
    if lo == 0 and hi == U.shape[0]:
        return mean_rows(U)
    return sorted_slice_mean(U, lo, hi)


def mean_without_faulty(U: torch.Tensor) -> torch.Tensor:
    """The mean of the rows, faulty ones left out (0 when every row is faulty)."""
    _, bad = row_sq_norms(U)
    return mean_of(U, torch.arange(U.shape[0], device=U.device), bad)


def mean_var_ratio(U: torch.Tensor) -> torch.Tensor:
    """``|mean_k| / (std_k + 1e-12)`` per coordinate (population std) over the rows that
    are not faulty, the Table 4 ablation's statistic."""
    _, bad = row_sq_norms(U)
    X = U[~bad] if bool(bad.any()) else U
    if X.shape[0] == 0:
        return torch.zeros(U.shape[1], dtype=U.dtype, device=U.device)
    return X.mean(0).abs() / (X.std(0, unbiased=False) + 1e-12)


def invariant_aggregate(
    U: torch.Tensor, tau: float = 0.2, trim_frac: float = 0.25, strict: bool = True, trim_mode: TrimMode = "ceil"
) -> torch.Tensor:
    """Algorithm 1 as a function: ``and_mask(U, tau) * trimmed_mean(U, trim_frac)``."""
    tm = trimmed_mean(U, trim_frac, trim_mode)
    return torch.where(and_mask(U, tau, strict), tm, torch.zeros_like(tm))


@DEFENSES.register("invariant")
class InvariantAggregator(Aggregator):
    """Invariant Aggregator (Wang et al., AISTATS 2024, Alg. 1): sign-consistency AND-mask x coordinate-wise trimmed mean.

    Parameters (``defense.*``):
        tau: mask threshold on ``|mean_i sign|`` (default 0.2, Table 3 CIFAR-10; the
            preset's value when unset). ``tau < 0`` switches the mask off.
        trim_frac: alpha, share trimmed from each tail (default 0.25, ``ceil(alpha N)`` rows).
        strict: ``>`` (True, Definition 7) or ``>=`` (False, the authors' code).
        trim_mode: ``"ceil"`` (Definition 9) or ``"middle"`` (the code's middle 10%).
        preset: ``"paper"`` or ``"code"`` (tau 0.6, ``>=``, middle 10%); explicit
            ``tau``/``strict``/``trim_mode`` override the preset.
        mask: ``"sign"`` (the AND-mask), ``"mean-var"`` (mean-variance ratio ablation)
            or ``"none"`` (trimmed mean alone).
        estimator: ``"trimmed-mean"`` or ``"mean"`` (the AND-mask x mean ablation).
        mv_tau: threshold of the mean-variance mask; ``None`` calibrates it in round 0.

    Diagnostics: ``pass_frac`` (share of coordinates the mask keeps), ``mv_tau``.
    """

    def __init__(
        self,
        *,
        tau: Optional[float] = None,
        trim_frac: float = 0.25,
        strict: Optional[bool] = None,
        trim_mode: Optional[TrimMode] = None,
        preset: Literal["paper", "code"] = "paper",
        mask: MaskKind = "sign",
        estimator: Estimator = "trimmed-mean",
        mv_tau: Optional[float] = None,
    ):
        p = PRESETS[preset]
        self.tau = float(p["tau"] if tau is None else tau)
        self.strict = bool(p["strict"] if strict is None else strict)
        self.trim_mode: TrimMode = p["trim_mode"] if trim_mode is None else trim_mode
        if not 0.0 <= trim_frac < 0.5:
            raise ConfigError("defense.trim_frac", f"must be in [0, 0.5) (got {trim_frac})", "0 <= trim_frac < 0.5")
        if self.tau > 1.0:
            raise ConfigError("defense.tau", f"must be <= 1 (got {self.tau}); tau = 1 masks every coordinate", "-1..1")
        if mv_tau is not None and mv_tau < 0:
            raise ConfigError("defense.mv_tau", f"must be >= 0 (got {mv_tau})", ">= 0, or unset to calibrate")
        self.trim_frac, self.preset, self.mask_kind, self.estimator = trim_frac, preset, mask, estimator
        self.mv_tau_fixed = mv_tau
        self.mv_tau = mv_tau

    def validate(self, n: int, f: int) -> None:
        if self.estimator == "trimmed-mean":
            lo, hi = trim_slice(n, self.trim_frac, self.trim_mode)
            if hi - lo < 1:
                b_max = (n - 1) // 2
                raise ConfigError(
                    "defense.trim_frac",
                    f"trims {lo} rows per side of {n}, keeping none",
                    f"trim_frac with ceil(trim_frac*{n}) <= {b_max}",
                )

    def reset(self) -> None:
        self.mv_tau = self.mv_tau_fixed

    def mask(self, U: torch.Tensor) -> torch.Tensor:
        """The coordinate mask (bool ``(d,)``) of the configured kind."""
        if self.mask_kind == "none" or (self.mask_kind == "sign" and self.tau < 0):
            return torch.ones(U.shape[1], dtype=torch.bool, device=U.device)
        if self.mask_kind == "sign":
            return and_mask(U, self.tau, self.strict)
        r = mean_var_ratio(U)
        if self.mv_tau is None:  # calibrate once: same masked share as the sign mask at tau
            k = int((~and_mask(U, self.tau, self.strict)).sum())  # coordinates the sign mask drops
            self.mv_tau = float(torch.sort(r).values[k - 1]) if k > 0 else -1.0
        return r > self.mv_tau

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        m = self.mask(U)
        est = (
            trimmed_mean(U, self.trim_frac, self.trim_mode)
            if self.estimator == "trimmed-mean"
            else mean_without_faulty(U)
        )
        info = {"pass_frac": float(m.float().mean())}
        if self.mask_kind == "mean-var":
            info["mv_tau"] = self.mv_tau
        return Aggregate(torch.where(m, est, torch.zeros_like(est)), weights=None, info=info)
