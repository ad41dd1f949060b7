"""Fang et al.'s local model poisoning attacks (USENIX Security 2020).

M. Fang, X. Cao, J. Jia, N. Gong, "Local Model Poisoning Attacks to Byzantine-Robust
Federated Learning", USENIX Security 2020, Sec. 4. The attackers push every coordinate of
the global model against the direction it would move without attack, as far as the
targeted rule lets them:

========== ==================================== ========= =====================================
name       targets                              knowledge crafted rows
========== ==================================== ========= =====================================
fang-trim  trimmed mean and median (Sec. 4.3)   benign    just beyond the benign extremes
           (``knowledge=partial``: own rows)    own       mu -/+ [3, 4] sigma of own rows
fang-krum  Krum (Sec. 4.2)                      benign    ``-lambda * s``, lambda halved until
                                                          Krum picks it
========== ==================================== ========= =====================================

The paper works on local models ``w_i`` and the global model ``w_Re`` before the round;
here the rows of ``U`` are the updates (``w_i - w_Re`` for ``fl.algorithm=fedavg``, the
gradients for ``fedsgd``), so distances to ``w_Re`` are row norms and "the change
direction" ``s`` is the sign of the sum of the benign rows (both algorithms: a crafted
coordinate below every benign one drags the aggregate against ``s`` in either space).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..core.robust_kernels import krum_scores, lowest_scores, pairwise_sq_distances
from ..errors import ConfigError
from ..registry import ATTACKS
from .base import Attack, RoundView, ThreatModel
from .byzantine import OMNISCIENT, benign_rows, repeat_rows, coordinate_std


@ATTACKS.register("fang-trim")
class FangTrim(Attack):
    """Fang et al.'s attack on the trimmed mean and the median (USENIX Security 2020,
    Sec. 4.3; the paper uses the same attack on both rules).

    With ``s = sign(sum of the benign rows)`` (the direction each coordinate moves
    without attack), every attacker draws each coordinate uniformly from an interval
    beyond the benign extremes, against ``s``:

    * ``knowledge="full"`` (default; the attackers see the benign rows): where ``s > 0``,
      from ``[min/b, min]`` if ``min > 0`` else ``[b min, min]``; where ``s < 0``, from
      ``[max, b max]`` if ``max > 0`` else ``[max, max/b]``; ``min``/``max`` are the
      benign rows' coordinate-wise extremes, ``b = 2`` the paper's default. Where ``s = 0``
      the attackers send 0 (as the authors' follow-up code).
    * ``knowledge="partial"`` (only their own honest rows): ``mu`` and ``sigma`` are the
      mean and (unbiased) standard deviation of the attackers' own rows, ``s`` the sign of
      their sum; where ``s > 0`` from ``[mu - 4 sigma, mu - 3 sigma]``, else from
      ``[mu + 3 sigma, mu + 4 sigma]``.

    The paper samples uniformly in the interval (followed here); the authors' follow-up
    code (FLTrust) divides or multiplies the extreme by ``r ~ U[1, b]`` instead, which is
    not uniform on the lower intervals. Draws come from the round's attack generator.
    Diagnostics: ``frac_against`` (share of coordinates with ``s != 0``).
    """

    def __init__(self, *, knowledge: str = "full", b: float = 2.0):
        if knowledge not in ("full", "partial"):
            raise ConfigError("attack.knowledge", f"unknown value {knowledge!r}", "full, partial")
        if not b > 1.0:
            raise ConfigError("attack.b", f"must be > 1 (got {b})", "a float > 1 (the paper: 2)")
        self.knowledge, self.b = knowledge, float(b)
        self.threat = OMNISCIENT if knowledge == "full" else ThreatModel(knowledge="own", collude=True)
        self.trains = knowledge == "partial"
        self._diag: dict[str, float] = {}

    def intervals(self, view: RoundView) -> Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(lo, hi, s)``: each coordinate's sampling interval and the change direction."""
        if self.knowledge == "partial":
            own = view.own_updates
            mu, sigma = own.mean(0), coordinate_std(own)
            s = torch.sign(own.sum(0))
            lo = torch.where(s > 0, mu - 4 * sigma, mu + 3 * sigma)
            hi = torch.where(s > 0, mu - 3 * sigma, mu + 4 * sigma)
            return lo, hi, s
        B = benign_rows(view)
        if B is None:
            return None
        s = torch.sign(B.sum(0))
        mn, mx, b = B.min(0).values, B.max(0).values, self.b
        below_lo = torch.where(mn > 0, mn / b, mn * b)  # s > 0: just below the benign minimum
        above_hi = torch.where(mx > 0, mx * b, mx / b)  # s < 0: just above the benign maximum
        lo = torch.where(s > 0, below_lo, torch.where(s < 0, mx, torch.zeros_like(mx)))
        hi = torch.where(s > 0, mn, torch.where(s < 0, above_hi, torch.zeros_like(mx)))
        return lo, hi, s

    def craft(self, view: RoundView) -> Optional[torch.Tensor]:
        self._diag = {}
        iv = self.intervals(view)
        if iv is None:
            return None
        lo, hi, s = iv
        m = len(view.malicious_ids)
        u = torch.rand(m, lo.numel(), generator=view.generator, dtype=lo.dtype).to(lo.device)
        self._diag = {"frac_against": float((s != 0).to(torch.float32).mean())}
        return lo + u * (hi - lo)

    def diagnostics(self) -> dict[str, float]:
        return dict(self._diag)


def fang_krum_lambda_max(B: torch.Tensor, n: int, c: int) -> float:
    """Fang et al.'s upper bound on lambda (USENIX Security 2020, Sec. 4.2)::

        1/((n - 2c - 1) sqrt(d)) * min_i sum_{l in G(i)} D(w_l, w_i) + 1/sqrt(d) * max_i D(w_i, w_Re)

    over benign ``i``, ``G(i)`` its ``n - c - 2`` nearest other benign rows, ``D`` the
    Euclidean distance, ``D(w_i, w_Re)`` the row norm (rows are updates). ``n``: rows in
    the round, ``c``: attackers. A non-positive ``n - 2c - 1`` drops the first term.
    """
    B64 = B.double()
    d = B.shape[1]
    D = pairwise_sq_distances(B64).clamp_min(0).sqrt()
    D.fill_diagonal_(math.inf)
    k = max(0, min(n - c - 2, len(B) - 1))
    first = 0.0
    if k > 0 and n - 2 * c - 1 > 0:
        near = torch.topk(D, k, dim=1, largest=False).values.sum(1)
        first = float(near.min()) / ((n - 2 * c - 1) * math.sqrt(d))
    return first + float(torch.linalg.vector_norm(B64, dim=1).max()) / math.sqrt(d)


@ATTACKS.register("fang-krum")
class FangKrum(Attack):
    """Fang et al.'s full-knowledge attack on Krum (USENIX Security 2020, Sec. 4.2).

    Every attacker sends ``-lambda * s`` with ``s = sign(sum of the benign rows)``;
    ``lambda`` starts at :func:`fang_krum_lambda_max` and is halved until Krum (with
    ``f`` = the round's number of attackers, the paper's assumption) over the attackers'
    rows followed by the benign rows selects an attacker, or until it falls below
    ``threshold`` (1e-5, the paper's), at most 64 halvings; the last ``lambda`` is sent
    either way. The paper's other ``c - 1`` attackers send vectors within ``epsilon`` of the
    first one; here they send the same vector (``epsilon = 0``, as the authors' code).

    Diagnostics: ``lambda``, ``lambda_max``, ``selected`` (1 if Krum picks an attacker).
    """

    threat = OMNISCIENT
    trains = False

    def __init__(self, *, threshold: float = 1e-5):
        if not threshold > 0:
            raise ConfigError("attack.threshold", f"must be > 0 (got {threshold})", "a float > 0 (the paper: 1e-5)")
        self.threshold = float(threshold)
        self._diag: dict[str, float] = {}

    def craft(self, view: RoundView) -> Optional[torch.Tensor]:
        self._diag = {}
        B = benign_rows(view)
        if B is None:
            return None
        c, n = len(view.malicious_ids), view.num_clients
        s = torch.sign(B.sum(0))
        lam_max = fang_krum_lambda_max(B, n, c)
        lam, picked = lam_max, False
        for _ in range(64):
            U = torch.cat([repeat_rows(-lam * s, c), B])
            picked = int(lowest_scores(krum_scores(pairwise_sq_distances(U), c), 1)[0]) < c
            if picked or lam / 2 < self.threshold:
                break
            lam /= 2
        self._diag = {"lambda": lam, "lambda_max": lam_max, "selected": float(picked)}
        return repeat_rows(-lam * s, c)

    def diagnostics(self) -> dict[str, float]:
        return dict(self._diag)
