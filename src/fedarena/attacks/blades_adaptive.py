"""Blades' defense-aware attacks on ClippedClustering and SignGuard.

Li, Sahu, Hu, et al., "An Experimental Study of Byzantine-Robust Aggregation Schemes in
Federated Learning", IEEE Transactions on Big Data 2023 (the adaptive "chain" attack on
Clipped Clustering), and Blades (Li et al., IoTDI 2024; ``AttackclippedclusteringAdversary``
and ``SignGuardAdversary``). Both are omniscient: they read the round's benign rows.

=================== ===================================================================
``cc-chain``        a chain of rows rotating away from the benign mean in steps smaller
                    than the benign rows' smallest pairwise angle, so single/average
                    linkage merges them with the benign cluster
``signguard-mimic`` a random vector with exactly the benign mean's counts of positive,
                    zero and negative coordinates (SignGuard's sign statistics), at random
                    positions
=================== ===================================================================
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch

from ..errors import ConfigError
from ..registry import ATTACKS
from .base import Attack, RoundView, Strength, ThreatModel

_OMNISCIENT = ThreatModel(knowledge="benign", collude=True)


def _unit(v: torch.Tensor) -> torch.Tensor:
    n = torch.linalg.vector_norm(v)
    return v / n if float(n) > 0 else torch.zeros_like(v)


def chain_directions(B: torch.Tensor, m: int, margin: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """``m`` unit vectors of the chain attack, from the benign rows ``B`` ``(k, d)``:

    * ``e`` = the benign mean's direction; ``w`` = the benign row at the largest angle
      ``theta`` from ``e``; the chain lives in the plane of ``e`` and ``w``;
    * the step ``delta`` = the smallest angle between two benign rows minus ``margin``
      radians (Blades' ``acos(1 - min cosine distance) - 0.1``), or half that angle when
      the difference is not positive;
    * the ``j``-th row (``j = 1..m``) points at angle ``theta + j delta`` from ``e``:
      ``cos(phi) e + sin(phi) w_perp``; once ``phi >= pi`` the row is ``-e`` (Blades sends
      the negated mean there).
    """
    B64 = B.to(torch.float64)
    e = _unit(B64.mean(0))
    Bn = B64 / torch.linalg.vector_norm(B64, dim=1, keepdim=True).clamp_min(1e-300)
    cos_e = (Bn @ e).clamp(-1.0, 1.0)
    i = int(torch.argmin(cos_e))
    theta = float(torch.acos(cos_e[i]))
    C = (Bn @ Bn.T).clamp(-1.0, 1.0)
    C.fill_diagonal_(-1.0)
    min_angle = float(torch.acos(C.max())) if len(B) > 1 else 0.0
    delta = min_angle - margin if min_angle - margin > 0 else 0.5 * min_angle
    w_perp = _unit(Bn[i] - cos_e[i] * e)
    rows = []
    for j in range(1, m + 1):
        phi = theta + j * delta
        rows.append(
            -e
            if phi >= math.pi or float(torch.linalg.vector_norm(w_perp)) == 0
            else math.cos(phi) * e + math.sin(phi) * w_perp
        )
    return torch.stack(rows), {"theta": theta, "step": delta, "min_benign_angle": min_angle}


@ATTACKS.register("cc-chain")
class ClippedClusteringChain(Attack):
    """Blades' adaptive attack on ClippedClustering: a chain of rows bridging the benign cluster.

    Every attacker ``j`` sends ``scale * r * u_j`` with ``u_j`` from
    :func:`chain_directions` and ``r`` the mean norm of the benign rows (``norm="mean"``; ``norm="absolute"``: ``scale``
    itself, Blades' 10). Consecutive rows are closer in angle than any two benign rows, so
    a linkage clustering of cosine distances merges the chain with the benign rows while
    the chain drifts towards the opposite of the mean. ``scale`` is the strength
    ``attack.optimize`` searches (0..10).

    Blades' code picks the start row by an index into the larger cluster but reads it
    from all rows; this picks the benign row at the largest angle from the mean.

    Blades writes row ``j`` as ``a e + b u_{j-1}`` with ``a = cos(theta_j + delta) -
    sin(theta_j + delta) / tan(theta_j)``, ``b = cos(delta) + sin(delta) / tan(theta_j)``
    and ``theta_{j+1} = theta_j + delta``: for a unit ``u_{j-1}`` at angle ``theta_j`` this
    is the unit vector at ``theta_j + delta``, the row here. Its code then feeds the
    previous row already multiplied by 10 back as ``u_{j-1}``, so from the second
    attacker on the norms grow tenfold per row and the angles stall near
    ``theta + delta`` (on the 2-D case of the tests: 1.007, 1.027, 1.029 rad instead of
    1.007, 1.229, 1.451); this follows the stated geometry (``theta`` advancing by
    ``delta`` per attacker), not that feedback.
    """

    threat = _OMNISCIENT
    trains = False
    strength = Strength("scale", 0.0, 10.0)

    def __init__(self, *, scale: float = 1.0, margin: float = 0.1, norm: Literal["mean", "absolute"] = "mean"):
        if scale < 0:
            raise ConfigError("attack.scale", f"must be >= 0 (got {scale})", "a float >= 0")
        if margin < 0:
            raise ConfigError("attack.margin", f"must be >= 0 (got {margin})", "radians >= 0, Blades: 0.1")
        if norm not in ("mean", "absolute"):
            raise ConfigError("attack.norm", f"unknown norm {norm!r}", "mean, absolute")
        self.scale, self.margin, self.norm = float(scale), float(margin), norm
        self._diag: dict[str, float] = {}

    def craft(self, view: RoundView) -> Optional[torch.Tensor]:
        B = view.benign_updates
        self._diag = {}
        if B is None or len(B) == 0:
            return None
        dirs, self._diag = chain_directions(B, len(view.malicious_ids), self.margin)
        size = self.scale * (
            float(torch.linalg.vector_norm(B.to(torch.float64), dim=1).mean()) if self.norm == "mean" else 1.0
        )
        return (size * dirs).to(B.dtype)

    def diagnostics(self) -> dict[str, float]:
        return dict(self._diag)


def sign_mimic(d: int, pos: int, neg: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """A ``d``-vector with ``pos`` positive and ``neg`` negative coordinates (the rest 0),
    magnitudes uniform in (0, 1), at uniformly random positions (Blades' ``SignGuardAdversary``)."""
    vals = torch.zeros(d, dtype=torch.float64)
    mags = torch.rand(pos + neg, generator=generator, dtype=torch.float64)
    vals[:pos] = mags[:pos]
    vals[pos : pos + neg] = -mags[pos:]
    perm = torch.randperm(d, generator=generator)
    return vals[perm]


@ATTACKS.register("signguard-mimic")
class SignGuardMimic(Attack):
    """Blades' adaptive attack on SignGuard: random values with the benign sign statistics.

    Every attacker sends the same vector: as many positive, negative and zero
    coordinates as a benign row has on average (``counts="rows"``, default), so
    SignGuard's sign clustering cannot tell it from the benign rows, with random
    magnitudes at random positions (the attack stream's generator). ``counts="mean"``:
    the counts of the benign *mean* (Blades' code); with noisy benign rows the mean has
    far more coordinates of its majority sign than any row, and SignGuard's clustering
    separates it. ``norm="mean"`` (default) rescales it to ``scale`` times the benign mean
    norm of the rows (SignGuard's norm filter then passes it); ``norm="absolute"`` keeps
    Blades' magnitudes, uniform in (0, scale). ``scale`` is the strength
    ``attack.optimize`` searches (0..10).
    """

    threat = _OMNISCIENT
    trains = False
    strength = Strength("scale", 0.0, 10.0)

    def __init__(
        self,
        *,
        scale: float = 1.0,
        norm: Literal["mean", "absolute"] = "mean",
        counts: Literal["rows", "mean"] = "rows",
    ):
        if scale < 0:
            raise ConfigError("attack.scale", f"must be >= 0 (got {scale})", "a float >= 0")
        if norm not in ("mean", "absolute"):
            raise ConfigError("attack.norm", f"unknown norm {norm!r}", "mean, absolute")
        if counts not in ("rows", "mean"):
            raise ConfigError("attack.counts", f"unknown counts {counts!r}", "rows, mean")
        self.scale, self.norm, self.counts = float(scale), norm, counts

    def craft(self, view: RoundView) -> Optional[torch.Tensor]:
        B = view.benign_updates
        if B is None or len(B) == 0:
            return None
        gen = view.generator if view.generator is not None and view.generator.device.type == "cpu" else None
        if self.counts == "mean":
            mean = B.mean(0)
            pos, neg = int((mean > 0).sum()), int((mean < 0).sum())
        else:
            pos = int(round(float((B > 0).sum(1).to(torch.float64).mean())))
            neg = min(int(round(float((B < 0).sum(1).to(torch.float64).mean()))), B.shape[1] - pos)
        v = sign_mimic(B.shape[1], pos, neg, gen).to(B.device)
        if self.norm == "mean":
            target = float(torch.linalg.vector_norm(B.to(torch.float64), dim=1).mean())
            v = self.scale * target * _unit(v)
        else:
            v = self.scale * v
        return v.to(B.dtype).reshape(1, -1).repeat(len(view.malicious_ids), 1)
