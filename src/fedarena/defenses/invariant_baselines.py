"""Baselines of the Invariant Aggregator paper's Table 1 (Wang et al., AISTATS 2024, App. D.6)
that no other module provides: Multi-Krum with cosine distance, Multi-Krum followed by a
trimmed mean, SparseFed and FLTrust.

The paper names these methods but gives no hyper-parameters; the defaults are the
spec's recommendations (``invariant-aggregator.md`` section 3 and Appendix B) and are
stated in each docstring. FLIP (Zhang et al., 2023) is not provided: it needs a
Neural-Cleanse-style trigger-inversion optimiser on every benign client and an
inference-time confidence threshold, none of whose settings the paper gives.

Every rule follows the rules' NaN policy (:mod:`fedarena.core.robust_kernels`): a NaN/Inf
row is faulty and gets an infinite distance (Multi-Krum), a zero trust score (FLTrust)
or is left out of the mean (SparseFed), so the aggregate stays finite.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..errors import ConfigError
from ..registry import DEFENSES
from .base import Aggregate, Aggregator, RoundContext, check_f
from .invariant import trim_slice, trimmed_mean
from ..core.robust_kernels import clean_rows, multi_krum_select, pairwise_cosine_distances, pairwise_sq_distances


# ---------------------------------------------------------------- shared helpers
def _check_krum(n: int, f: int, m: Optional[int]) -> int:
    check_f("multi-krum", n, f, 2, 3)
    mm = n - f if m is None else m
    if not 1 <= mm <= n:
        raise ConfigError("defense.m", f"must be in 1..{n} (got {mm})", f"1..{n}")
    return mm


# ---------------------------------------------------------------- Multi-Krum variants
def _multi_krum_rows(U: torch.Tensor, f: int, m: Optional[int], distances) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-Krum selection under a distance (``U -> (n, n)``): the selected rows (in
    float64, none when every candidate is faulty) and the accept mask."""
    n = U.shape[0]
    m = _check_krum(n, f, m)
    X, bad = clean_rows(U)
    sel = multi_krum_select(distances(U.double()), f, m, bad)
    accepted = torch.zeros(n, dtype=torch.bool, device=U.device)
    accepted[sel] = True
    return X[sel], accepted


@DEFENSES.register("multi-krum-cos")
class MultiKrumCosine(Aggregator):
    """Multi-Krum with cosine distance (the paper's Multi-Krum_C, App. D.6; cosine idea from FLAME).

    Krum scores use ``1 - cos(g_i, g_j)`` in place of the squared Euclidean distance; the
    ``m`` (default ``n - f``) lowest-score rows are averaged without weights.
    """

    def __init__(self, *, m: Optional[int] = None):
        self.m = m

    def validate(self, n: int, f: int) -> None:
        _check_krum(n, f, self.m)

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        S, accepted = _multi_krum_rows(U, ctx.f, self.m, pairwise_cosine_distances)
        agg = S.mean(0) if len(S) else torch.zeros(U.shape[1], dtype=S.dtype, device=U.device)
        return Aggregate(agg.to(U.dtype), weights=accepted, info={"num_selected": int(len(S))})


@DEFENSES.register("multi-krum-tm")
class MultiKrumTrimmedMean(Aggregator):
    """Multi-Krum then coordinate-wise trimmed mean (the paper's "Krum Trimmed-Mean", App. D.6).

    Selects ``m`` (default ``n - f``) rows by Euclidean Krum score (Blanchard et al. 2017),
    then takes the ``trim_frac``-trimmed mean (default 0.25, ``ceil(trim_frac m)`` per side)
    of the selected rows: Bulyan-like, without Bulyan's beta rule.
    """

    def __init__(self, *, m: Optional[int] = None, trim_frac: float = 0.25):
        if not 0.0 <= trim_frac < 0.5:
            raise ConfigError("defense.trim_frac", f"must be in [0, 0.5) (got {trim_frac})", "0 <= trim_frac < 0.5")
        self.m, self.trim_frac = m, trim_frac

    def validate(self, n: int, f: int) -> None:
        m = _check_krum(n, f, self.m)
        lo, hi = trim_slice(m, self.trim_frac)
        if hi - lo < 1:
            raise ConfigError(
                "defense.trim_frac",
                f"trims {lo} of the {m} selected rows per side, keeping none",
                "a smaller trim_frac",
            )

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        S, accepted = _multi_krum_rows(U, ctx.f, self.m, pairwise_sq_distances)
        lo, hi = trim_slice(len(S), self.trim_frac)
        if not len(S):
            agg = torch.zeros(U.shape[1], dtype=S.dtype, device=U.device)
        else:
            agg = trimmed_mean(S, self.trim_frac) if hi > lo else S.mean(0)
        return Aggregate(agg.to(U.dtype), weights=accepted, info={"num_selected": int(len(S))})


# ---------------------------------------------------------------- SparseFed
@DEFENSES.register("sparsefed")
class SparseFed(Aggregator):
    """SparseFed (Panda et al., AISTATS 2022, Alg. 1): clipped mean, server momentum, error
    feedback, global top-k.

    Each round: clip every row to L2 norm ``norm_bound`` (``None``: the median row norm of the
    first round, then fixed); ``u = rho u + mean(clipped)``; ``e = e + u``; apply
    ``top_k(e)`` (``k = ceil(k_frac d)`` largest magnitudes); ``e -= top_k(e)`` and zero the
    momentum at the applied coordinates (FetchSGD's momentum stopping). The server
    learning rate is applied by the engine after. Defaults (spec, App. B): ``k_frac=0.1``,
    ``rho=0.9``. ``u``, ``e`` and the first-round clip live in the object; ``reset()``
    clears them.
    """

    def __init__(self, *, k_frac: float = 0.1, norm_bound: Optional[float] = None, rho: float = 0.9):
        if not 0.0 < k_frac <= 1.0:
            raise ConfigError("defense.k_frac", f"must be in (0, 1] (got {k_frac})", "0 < k_frac <= 1")
        if not 0.0 <= rho < 1.0:
            raise ConfigError("defense.rho", f"must be in [0, 1) (got {rho})", "0 <= rho < 1")
        if norm_bound is not None and norm_bound <= 0:
            raise ConfigError(
                "defense.norm_bound",
                f"must be > 0 (got {norm_bound})",
                "> 0, or unset for the first round's median norm",
            )
        self.k_frac, self.clip_fixed, self.rho = k_frac, norm_bound, rho
        self.reset()

    def reset(self) -> None:
        self.clip = self.clip_fixed
        self.u: Optional[torch.Tensor] = None
        self.e: Optional[torch.Tensor] = None

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        X, bad = clean_rows(U)
        norms = torch.linalg.vector_norm(X, dim=1)
        if self.clip is None:
            good = norms[~bad]
            self.clip = float(good.median()) if len(good) else 1.0
            self.clip = self.clip if self.clip > 0 else 1.0
        scale = (self.clip / norms.clamp_min(1e-30)).clamp(max=1.0)
        C = X * scale[:, None]
        w = (~bad).double()
        mean = (w[:, None] * C).sum(0) / w.sum().clamp_min(1.0)
        if self.u is None:
            self.u = torch.zeros_like(mean)
            self.e = torch.zeros_like(mean)
        self.u = self.rho * self.u + mean
        self.e = self.e + self.u
        d = mean.numel()
        k = max(1, math.ceil(self.k_frac * d - 1e-9))
        idx = torch.topk(self.e.abs(), k).indices
        out = torch.zeros_like(self.e)
        out[idx] = self.e[idx]
        self.e[idx] = 0.0
        self.u[idx] = 0.0
        return Aggregate(
            out.to(U.dtype),
            weights=(~bad).to(U.dtype) / max(1, int((~bad).sum())),
            info={"clip": self.clip, "error_norm": float(torch.linalg.vector_norm(self.e))},
        )


# ---------------------------------------------------------------- FLTrust
@DEFENSES.register("fltrust")
class FLTrust(Aggregator):
    """FLTrust (Cao et al., NDSS 2021): ReLU-cosine trust scores against the server's own update.

    The server trains the benign recipe on a root dataset of ``root_size`` clean training
    samples (default 100, the FLTrust default; held out by the engine) from the global
    model to get ``g0``. Then ``TS_i = ReLU(cos(g_i, g0))`` and
    ``agg = sum_i TS_i (||g0|| / ||g_i||) g_i / sum_i TS_i`` (each row rescaled to
    ``||g0||``); ``agg = 0`` when every score is 0. Unweighted by sample counts.
    """

    def __init__(self, *, root_size: int = 100):
        if root_size < 1:
            raise ConfigError("defense.root_size", f"must be >= 1 (got {root_size})", ">= 1, e.g. 100")
        self.root_size = root_size

    @staticmethod
    def combine(U: torch.Tensor, g0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(aggregate, trust scores)`` for reports ``U`` and the server update ``g0``."""
        X, bad = clean_rows(U)
        g0 = clean_rows(g0.unsqueeze(0))[0][0]  # a faulty server update trusts nobody
        n0 = torch.linalg.vector_norm(g0)
        norms = torch.linalg.vector_norm(X, dim=1)
        ok = (~bad) & (norms > 0)
        cos = (X @ g0) / (norms.clamp_min(1e-300) * n0.clamp_min(1e-300))
        ts = torch.where(ok & (n0 > 0), torch.relu(cos), torch.zeros_like(cos))
        total = ts.sum()
        if total <= 0:
            return torch.zeros(U.shape[1], dtype=U.dtype, device=U.device), ts.to(U.dtype)
        scaled = X * (n0 / norms.clamp_min(1e-300))[:, None]
        agg = (ts[:, None] * scaled).sum(0) / total
        return agg.to(U.dtype), (ts / total).to(U.dtype)

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        if ctx.root_gradient is None:
            raise ConfigError(
                "defense.root_size", "FLTrust needs the engine's root dataset (ctx.root_gradient is None)", ">= 1"
            )
        g0 = ctx.root_gradient(ctx.global_params).to(U.device)
        agg, w = self.combine(U, g0)
        return Aggregate(
            agg, weights=w, info={"root_norm": float(torch.linalg.vector_norm(g0)), "trusted": int((w > 0).sum())}
        )
