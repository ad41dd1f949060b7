"""FLARE: trust scores from the latent space of the clients' models.

Wang, Xu, Ahmed, Pal, Siraj, "FLARE: Defending Federated Learning against Model
Poisoning Attacks via Latent Space Representations", AsiaCCS 2022, Sec. 4, Algorithm 1:

1. The server feeds a small clean auxiliary set (``root_size`` training samples the engine
   holds out) through every local model ``w + u_i`` and keeps the penultimate-layer
   representations (PLRs; the input of the model's last layer).
2. ``MMD^2(P_i, P_j)`` between the PLR sets of every pair of clients (Eq. 2; the biased
   estimate with a Gaussian kernel ``exp(-||a - b||^2 / (2 h^2))``; ``h^2`` is the median of
   the pairwise squared distances of all PLRs of the round, the median heuristic -- the
   paper does not state its bandwidth).
3. Each client nominates its ``k`` nearest clients by MMD (``k = neighbors``, default
   ``floor(n / 2)``); ``c_i`` counts the nominations client ``i`` receives.
4. Trust scores ``TS_i = exp(c_i / tau) / sum_j exp(c_j / tau)`` (Eq. 3, ``tau = 1``); the
   aggregate is ``sum_i TS_i u_i``.

Per-client decision: a client whose trust score is below ``drop_below / n`` is rejected
(weight 0, the others renormalised): with ``tau = 1`` the paper's softmax already gives a
client nominated by nobody about ``exp(-k)`` of a typical client's weight, so the
decision changes the aggregate by less than ``drop_below``; it lets detection metrics count
FLARE's choice. ``Aggregate.weights`` holds the (renormalised) trust scores; ``client_scores``
the nomination counts. Rows holding NaN/Inf get weight 0 and no PLRs.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..errors import ConfigError
from ..registry import DEFENSES
from .base import Aggregate, Aggregator, RoundContext, nonfinite_rows
from .probe import probe_of


def mmd2(A: torch.Tensor, B: torch.Tensor, h2: float) -> torch.Tensor:
    """Biased ``MMD^2`` of two samples with the kernel ``exp(-||a - b||^2 / (2 h2))``:
    ``mean k(A, A) + mean k(B, B) - 2 mean k(A, B)``.

    >>> round(float(mmd2(torch.tensor([[0.0]]), torch.tensor([[1.0]]), 0.5)), 5)  # 1 + 1 - 2 e^-1
    1.26424
    """

    def k(X, Y):
        return torch.exp(-torch.cdist(X, Y).square() / (2 * h2))

    return k(A, A).mean() + k(B, B).mean() - 2 * k(A, B).mean()


def nomination_counts(D: torch.Tensor, k: int) -> torch.Tensor:
    """``(n,)``: how often each client is among the ``k`` nearest others (by ``D``) of a client.

    >>> D = torch.tensor([[0., 1., 2., 9.], [1., 0., 1., 9.], [2., 1., 0., 9.], [9., 8., 9., 0.]])
    >>> nomination_counts(D, 1).tolist()
    [1, 3, 0, 0]
    """
    n = D.shape[0]
    D = D.clone().to(torch.float64)
    D.fill_diagonal_(float("inf"))
    nn = torch.topk(D, min(k, n - 1), dim=1, largest=False).indices
    return torch.bincount(nn.flatten(), minlength=n)


def trust_scores(counts: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """``softmax(counts / tau)``.

    >>> [round(v, 4) for v in trust_scores(torch.tensor([2, 1, 0])).tolist()]
    [0.6652, 0.2447, 0.09]
    """
    return torch.softmax(counts.to(torch.float64) / tau, dim=0)


@DEFENSES.register("flare")
class FLARE(Aggregator):
    """FLARE (Wang et al., AsiaCCS 2022): MMD of penultimate-layer representations, nearest-neighbour nominations, softmax trust scores.

    Args:
        root_size: clean auxiliary samples the server holds (taken out of the training data).
        neighbors: nominations per client (None: floor(n / 2)).
        tau: softmax temperature.
        drop_below: reject a client whose trust score is below ``drop_below / n``.
    """

    def __init__(
        self, *, root_size: int = 100, neighbors: Optional[int] = None, tau: float = 1.0, drop_below: float = 0.01
    ):
        if root_size < 2:
            raise ConfigError("defense.root_size", f"must be >= 2 (got {root_size})", ">= 2, e.g. 100")
        if neighbors is not None and neighbors < 1:
            raise ConfigError("defense.neighbors", f"must be >= 1 (got {neighbors})", ">= 1, or null for n // 2")
        if not (math.isfinite(tau) and tau > 0):
            raise ConfigError("defense.tau", f"must be a finite number > 0 (got {tau})", "> 0, e.g. 1.0")
        if not 0 <= drop_below < 1:
            raise ConfigError("defense.drop_below", f"must be in [0, 1) (got {drop_below})", "e.g. 0.01")
        self.root_size, self.neighbors, self.tau, self.drop_below = root_size, neighbors, float(tau), float(drop_below)

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        probe = probe_of(ctx, "flare")
        if probe.root_x is None:
            raise ConfigError(
                "defense.root_size", "FLARE needs the server's auxiliary samples (none were held out)", ">= 2, e.g. 100"
            )
        n = U.shape[0]
        bad = nonfinite_rows(U)
        idx = torch.nonzero(~bad).flatten()
        g = ctx.global_params.to(U.device)
        counts = torch.zeros(n, dtype=torch.long)
        ts = torch.zeros(n, dtype=torch.float64)
        if len(idx) == 1:
            ts[idx.cpu()] = 1.0
        elif len(idx) > 1:
            plrs = [probe.features(g + U[i], probe.root_x).to(torch.float64) for i in idx.tolist()]
            pooled = torch.cat(plrs)
            sq = torch.cdist(pooled, pooled).square()
            h2 = float(sq[sq > 0].median()) if bool((sq > 0).any()) else 1.0
            m = len(idx)
            D = torch.zeros(m, m, dtype=torch.float64)
            for a in range(m):
                for b in range(a + 1, m):
                    D[a, b] = D[b, a] = mmd2(plrs[a], plrs[b], h2).cpu()
            k = self.neighbors if self.neighbors is not None else max(1, n // 2)
            c = nomination_counts(D, k)
            counts[idx.cpu()] = c
            ts[idx.cpu()] = trust_scores(c, self.tau)
        ts = torch.where(ts < self.drop_below / n, torch.zeros_like(ts), ts)
        ts = ts / ts.sum().clamp_min(1e-300)
        w = ts.to(U.device, U.dtype)
        Uf = torch.where(bad.unsqueeze(1), torch.zeros((), dtype=U.dtype, device=U.device), U)
        info = {"flare_rejected": float((ts == 0).sum()), "client_scores": counts.to(torch.float64)}
        return Aggregate(w @ Uf, weights=w, info=info)
