"""Robust Learning Rate (RLR): a per-coordinate server learning rate from sign votes.

Ozdayi, Kantarcioglu, Gel, "Defending against Backdoors in Federated Learning with
Robust Learning Rate", AAAI 2021, Sec. 3, Eq. 5-6.

For every coordinate ``i`` the server counts the signs of the round's updates and keeps
the learning rate where enough clients agree, flipping it elsewhere (Eq. 5)::

    eta_theta,i = +eta  if |sum_k sgn(U_k,i)| >= theta
                  -eta  otherwise

and steps ``w <- w + eta_theta (.) g(U)`` (Eq. 6), where ``g`` is any aggregator ("since we
only adjust the learning rate, the approach is agnostic to the aggregation function"):
FedAvg, the coordinate-wise median, sign aggregation, ... (``defense.base``).

Votes are unweighted (one per client, whatever its sample count) and ``sgn(0) = 0``: a
zero coordinate casts no vote, so with ``n`` voters and no zeros ``|sum sgn|`` has the
parity of ``n`` (for ``n = 10``, ``theta = 3`` and ``theta = 4`` both mean "at least 7 of 10
agree"). Votes are taken on the updates the aggregator receives (after pre-stages such as
clipping) and before server noise; when the ``noise`` stage is on, it adds the noise to
the aggregate *before* the learning-rate vector is applied, ``eta_theta (.) (g(U) + N)``
(the reference code's order; the RLR spec's decision 3). A NaN entry casts no vote.

``theta = 0`` turns RLR off (plain ``g``), as in the reference code; ``start_round``
switches it on late (Fig. 6: RLR activated after a backdoor is in the model). The paper's
range for ``theta`` is ``[f + 1, n - f]`` (App. A); the values it uses: 4 of 10 clients,
7-8 of 33, 8 of 40, 12/16/20 of 40 with 8/12/16 attackers.

The engine multiplies the output by ``fl.server_lr`` (``eta``; the paper uses 1, and
1e-3 with sign aggregation).

>>> import torch
>>> U = torch.tensor([[1., 1.], [1., -1.], [1., 1.]])
>>> robust_lr_signs(U, theta=3).tolist()
[1.0, -1.0]
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.sign_masks import sign_votes
from ..errors import ConfigError
from ..registry import DEFENSES
from .base import Aggregate, Aggregator, RoundContext


def robust_lr_signs(U: torch.Tensor, theta: int) -> torch.Tensor:
    """The sign of the per-coordinate learning rate, ``(d,)`` in {+1, -1} (Eq. 5 / 9)."""
    agree = sign_votes(U).abs() >= theta
    return torch.where(agree, 1.0, -1.0).to(U.dtype)


@DEFENSES.register("rlr")
class RobustLearningRate(Aggregator):
    """Robust Learning Rate (Ozdayi et al., AAAI 2021, Eq. 5-6) over ``defense.base``.

    Args:
        theta: vote threshold (integer; 0 = off).
        base: the aggregator the learning rate applies to (any registered defense but
            ``rlr``; the paper uses fedavg, median (comed) and sign). Further ``defense.*``
            keys are passed to it (e.g. ``defense.weighted=true`` for Eq. 1's sample
            weights).
        start_round: first round (0-based) in which RLR is active; before it the base
            aggregate is used as is.

    Diagnostics: ``rlr_active``, ``rlr_flipped_frac`` (share of coordinates with -eta)
    and ``rlr_flipped_frac_nonzero`` (among coordinates some client changed).
    """

    def __init__(
        self, *, theta: int = 4, base: str = "fedavg", start_round: int = 0, weighted: bool = False, **base_params: Any
    ):
        if theta < 0:
            raise ConfigError("defense.theta", f"must be >= 0 (got {theta})", "0 (off) or a vote count 1..n")
        if start_round < 0:
            raise ConfigError("defense.start_round", f"must be >= 0 (got {start_round})", ">= 0")
        if base == "rlr":
            raise ConfigError("defense.base", "RLR cannot be its own base", "fedavg, median, sign, ...")
        self.theta, self.start_round, self.base_name = int(theta), int(start_round), base
        if base not in DEFENSES:
            valid = ", ".join(n for n in DEFENSES.names() if n != "rlr")
            raise ConfigError("defense.base", f"unknown defense {base!r}", valid)
        kwargs = DEFENSES.validate(base, base_params)
        if "weighted" in DEFENSES.params(base):
            kwargs["weighted"] = weighted
        self.base: Aggregator = DEFENSES.get(base)(**kwargs)

    def validate(self, n: int, f: int) -> None:
        self.base.validate(n, f)
        if self.theta > n:
            raise ConfigError(
                "defense.theta",
                f"must be <= the clients per round n = {n} (got {self.theta}); "
                "otherwise every coordinate's learning rate is flipped",
                f"0..{n}, paper: {f + 1}..{max(f + 1, n - f)}",
            )

    def reset(self) -> None:
        self.base.reset()

    def client_recipe(self, recipe):
        return self.base.client_recipe(recipe)

    @property
    def root_size(self) -> int:  # type: ignore[override]
        return getattr(self.base, "root_size", 0)

    def active(self, t: int) -> bool:
        return self.theta > 0 and t >= self.start_round

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        agg = self.base(U, ctx)
        info = {**agg.info, "rlr_active": float(self.active(ctx.round))}
        if not self.active(ctx.round):
            return Aggregate(agg.update, agg.weights, info)
        signs = robust_lr_signs(U, self.theta).to(agg.update.dtype)
        changed = (torch.nan_to_num(U, nan=0.0) != 0).any(dim=0)
        flipped = signs < 0
        info["rlr_flipped_frac"] = float(flipped.float().mean())
        info["rlr_flipped_frac_nonzero"] = float(flipped[changed].float().mean()) if changed.any() else 0.0
        info["lr_signs"] = signs  # read by the noise stage (noise goes in before the flip)
        return Aggregate(signs * agg.update, agg.weights, info)
