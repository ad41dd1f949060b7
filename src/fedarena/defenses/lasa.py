"""LASA: layer-adaptive sparsified aggregation.

Xu, Zhang, Hu, "Achieving Byzantine-Resilient Federated Learning via Layer-Adaptive
Sparsified Model Aggregation", WACV 2025 (Algorithm 1); the rule FLPoison ships as ``LASA``.
"""

from __future__ import annotations


import numpy as np
import torch

from ..errors import ConfigError
from ..registry import DEFENSES
from ._rows import nonfinite_rows_fast as nonfinite_rows
from .base import Aggregate, Aggregator, RoundContext
from ..core.robust_kernels import safe_row_norms


def mz_keep(x: torch.Tensor, bound: float) -> torch.Tensor:
    """Median z-score filter: keep ``|x_i - median(x)| / std(x) < bound`` (population
    std; the median of an even count is the mean of the two middle values). A zero
    spread keeps every value."""
    x = x.to(torch.float64)
    med = float(np.median(x.cpu().numpy()))
    sd = float(x.std(unbiased=False)) if x.numel() > 1 else 0.0
    if not sd > 0:
        return torch.ones_like(x, dtype=torch.bool)
    return (x - med).abs() / sd < bound


def topk_sparsify(X: torch.Tensor, keep: float) -> torch.Tensor:
    """Per row, zero every entry whose magnitude is not above the row's ``(1 - keep)``
    quantile of magnitudes (the ``floor(keep * d)`` largest stay; ties at the threshold go)."""
    d = X.shape[1]
    k = int(d * keep)
    if k >= d:
        return X
    if k <= 0:
        return torch.zeros_like(X)
    thr = torch.kthvalue(X.abs(), d - k, dim=1, keepdim=True).values
    return torch.where(X.abs() > thr, X, torch.zeros((), dtype=X.dtype, device=X.device))


@DEFENSES.register("lasa")
class LASA(Aggregator):
    """LASA: median-norm clipping, top-k sparsification, per-layer norm and sign filtering (Xu et al., WACV 2025).

    1. Clipping: every row is scaled by ``min(1, M / ||u_i||)``, ``M`` the median norm.
    2. Sparsification: each row keeps its ``1 - sparsity`` fraction of largest-magnitude
       entries among the multi-dimensional (weight) tensors; biases and other 1-D
       tensors stay dense (as FLPoison).
    3. Per parameter tensor ``l`` of the sparsified rows: the norm ``||u_i^l||`` and the
       positive direction purity ``PDP_i^l = (1 + sum sgn(u_i^l) / sum |sgn(u_i^l)|) / 2``
       are filtered by median z-scores (:func:`mz_keep`) with bounds ``norm_bound``
       (FLPoison's default 2; 1 for CIFAR) and ``sign_bound`` (1); the clients passing
       both form ``B_l`` (all clients when none does).
    4. Layer ``l`` of the aggregate is the mean of the clipped (dense) rows of ``B_l``.

    ``weights``: per client, the fraction of the model's coordinates whose layer accepted
    it (0: rejected in every layer). Without a layout (unit tests) the whole vector is one
    layer. Rows holding NaN/Inf are rejected in every layer.
    """

    def __init__(self, *, sparsity: float = 0.3, norm_bound: float = 2.0, sign_bound: float = 1.0):
        if not 0.0 <= sparsity < 1.0:
            raise ConfigError(
                "defense.sparsity", f"must be in [0, 1) (got {sparsity})", "0 <= sparsity < 1, FLPoison: 0.3"
            )
        for key, v in (("norm_bound", norm_bound), ("sign_bound", sign_bound)):
            if not v > 0:
                raise ConfigError(f"defense.{key}", f"must be > 0 (got {v})", "> 0")
        self.sparsity, self.norm_bound, self.sign_bound = float(sparsity), float(norm_bound), float(sign_bound)

    def _layers(self, ctx: RoundContext, d: int) -> list[tuple[slice, bool]]:
        lay = ctx.layout
        if lay is None or lay.dim != d:
            return [(slice(0, d), True)]
        return [(lay.slice(nm), len(shape) >= 2) for nm, shape in zip(lay.names, lay.shapes)]

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n, d = U.shape
        ok = ~nonfinite_rows(U)
        rows = torch.nonzero(ok).flatten()
        X = U[rows]
        norms = safe_row_norms(X).to(torch.float64)
        M = float(np.median(norms.cpu().numpy())) if rows.numel() else 0.0
        scale = torch.where(norms > M, M / norms.clamp_min(1e-30), torch.ones_like(norms)).to(U.dtype)
        clipped = X * scale.unsqueeze(1)
        layers = self._layers(ctx, d)
        sparse_cols = [sl for sl, multi in layers if multi]
        S = X.clone()
        if sparse_cols and self.sparsity > 0:
            cols = torch.cat([torch.arange(sl.start, sl.stop, device=U.device) for sl in sparse_cols])
            S[:, cols] = topk_sparsify(X[:, cols], 1.0 - self.sparsity)
        out = torch.zeros(d, dtype=U.dtype, device=U.device)
        covered = torch.zeros(len(rows), dtype=torch.float64, device=U.device)
        for sl, _ in layers:
            part = S[:, sl]
            ln = torch.linalg.vector_norm(part.to(torch.float64), dim=1)
            sg = torch.sign(part)
            tot = sg.abs().sum(1).to(torch.float64)
            pdp = 0.5 * (1 + sg.sum(1).to(torch.float64) / tot.clamp_min(1))
            keep = mz_keep(ln, self.norm_bound) & mz_keep(pdp, self.sign_bound)
            if not bool(keep.any()):
                keep = torch.ones_like(keep)
            out[sl] = clipped[keep, sl].mean(0)
            covered += keep.to(torch.float64) * (sl.stop - sl.start)
        w = torch.zeros(n, dtype=torch.float64, device=U.device)
        w[rows] = covered / d
        return Aggregate(out, w.to(U.dtype), {"median_norm": M, "fully_accepted": int((w >= 1).sum())})
