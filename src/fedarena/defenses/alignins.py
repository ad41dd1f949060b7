"""AlignIns: direction alignment inspection against backdoors.

Xu, Li, Ghosh, Xu, Cui, Li, "Detecting Backdoor Attacks in Federated Learning via
Direction Alignment Inspection", CVPR 2025 (arXiv 2503.07978), Sec. 4, Algorithm 1. Per
round, for every update ``u_i`` (a row of ``U``) and the global model ``w``:

* **TDA** (temporal direction alignment, Eq. 4): ``cos(u_i, w)``, the cosine of the update
  with the global model's parameters.
* **MPSA** (masked principal sign alignment ratio, Eq. 5-6): the principal sign
  ``p = sgn(sum_i sgn(u_i))`` (the coordinate-wise majority sign); ``MPSA_i`` is the share
  of the ``k = ceil(topk_ratio * d)`` coordinates of largest ``|u_ij|`` whose sign equals
  ``p_j``.
* **MZ-scores** (Eq. 7): ``MZ(x)_i = (x_i - median(x)) / std(x)`` (population standard
  deviation, as NumPy's default); a client is accepted when ``|MZ(TDA)_i| <= lambda_c`` and
  ``|MZ(MPSA)_i| <= lambda_s``.
* **Post-filtering clipping** (Sec. 4.3): accepted updates are clipped to the median L2
  norm of the accepted updates and averaged.

Per-client decision: the accept mask (``Aggregate.weights``); ``info["client_scores"]``:
``max(|MZ(TDA)|, |MZ(MPSA)|)``. Rows holding NaN/Inf are rejected first and left out of
every statistic. Defaults ``lambda_s = lambda_c = 1.0``, ``topk_ratio = 0.3``.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from ..registry import DEFENSES
from .base import Aggregate, Aggregator, RoundContext, nonfinite_rows


def tda(U: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``(k,)`` cosine of each row with the global parameters ``w`` (0 for a zero vector).

    >>> tda(torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64))
    tensor([1.0000, 0.7071], dtype=torch.float64)
    """
    den = torch.linalg.vector_norm(U, dim=1) * torch.linalg.vector_norm(w)
    return torch.where(den > 0, (U @ w) / den.clamp_min(1e-300), torch.zeros_like(den))


def mpsa(U: torch.Tensor, topk_ratio: float) -> torch.Tensor:
    """``(k,)`` share of each row's top-``ceil(topk_ratio d)`` |coordinates| whose sign is the principal sign."""
    d = U.shape[1]
    k = max(1, math.ceil(topk_ratio * d - 1e-9))
    p = torch.sign(torch.sign(U).sum(0))
    idx = torch.topk(U.abs(), k, dim=1).indices
    return (torch.sign(torch.gather(U, 1, idx)) == p[idx]).to(U.dtype).mean(1)


def mz_scores(x: torch.Tensor) -> torch.Tensor:
    """``(x - median(x)) / std(x)`` (population std; 0 when all equal). The median of an
    even count is the mean of the two middle values.

    >>> [round(v, 4) for v in mz_scores(torch.tensor([1.0, 2.0, 3.0, 10.0], dtype=torch.float64)).tolist()]
    [-0.4243, -0.1414, 0.1414, 2.1213]
    """
    xs = x.sort().values
    n = len(xs)
    med = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    sd = x.std(unbiased=False) if n > 1 else torch.zeros((), dtype=x.dtype, device=x.device)
    return torch.where(sd > 0, (x - med) / sd.clamp_min(1e-300), torch.zeros_like(x))


@DEFENSES.register("alignins")
class AlignIns(Aggregator):
    """AlignIns (Xu et al., CVPR 2025): filter on MZ-scores of TDA and MPSA, then median-norm clipping.

    Args:
        lambda_s: MPSA filtering radius (|MZ| above it: rejected).
        lambda_c: TDA filtering radius.
        topk_ratio: share of coordinates in MPSA's top-k mask.
    """

    def __init__(self, *, lambda_s: float = 1.0, lambda_c: float = 1.0, topk_ratio: float = 0.3):
        for name, v in (("lambda_s", lambda_s), ("lambda_c", lambda_c)):
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"defense.{name}", f"must be a finite number > 0 (got {v})", "> 0, e.g. 1.0")
        if not 0 < topk_ratio <= 1:
            raise ConfigError("defense.topk_ratio", f"must be in (0, 1] (got {topk_ratio})", "0 < r <= 1, e.g. 0.3")
        self.lambda_s, self.lambda_c, self.topk_ratio = float(lambda_s), float(lambda_c), float(topk_ratio)

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n = U.shape[0]
        bad = nonfinite_rows(U)
        idx = torch.nonzero(~bad).flatten()
        X = U[idx].to(torch.float64)
        w = ctx.global_params.to(U.device, torch.float64)
        scores = torch.full((n,), float("inf"), dtype=torch.float64, device=U.device)
        accept = torch.zeros(n, dtype=torch.bool, device=U.device)
        t = m = torch.zeros(0, dtype=torch.float64, device=U.device)
        if len(idx):
            t, m = tda(X, w), mpsa(X, self.topk_ratio)
            zt, zm = mz_scores(t).abs(), mz_scores(m).abs()
            keep = (zt <= self.lambda_c) & (zm <= self.lambda_s)
            accept[idx[keep]] = True
            scores[idx] = torch.maximum(zt, zm)
        rows = torch.nonzero(accept).flatten()
        if len(rows) == 0:
            update = torch.zeros(U.shape[1], dtype=U.dtype, device=U.device)
        else:
            A = U[rows]
            norms = torch.linalg.vector_norm(A, dim=1)
            bound = norms.median()
            update = (A * torch.clamp(bound / norms.clamp_min(1e-30), max=1.0).unsqueeze(1)).mean(0)
        info = {
            "alignins_accepted": float(accept.sum()),
            "client_scores": scores,
            "alignins_tda_mean": float(t.mean()) if len(t) else float("nan"),
            "alignins_mpsa_mean": float(m.mean()) if len(m) else float("nan"),
        }
        return Aggregate(update, weights=accept, info=info)
