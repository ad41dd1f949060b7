"""Differentially private FL: clip + Gaussian noise, local or central, with an accountant.

``defense.dp`` switches it on (any aggregator):

* ``dp: local`` -- every client clips its update to L2 norm ``C`` (``defense.dp_clip``)
  and adds ``N(0, sigma^2 C^2 I)`` (``sigma = defense.dp_sigma``) *before* upload
  (local DP, the Gaussian mechanism of the DP-FL client in Qi, Wang, Huang, AAAI 2024,
  "Towards the Robustness of Differentially Private FL"; LeadFL spec §4.2). The engine
  applies :meth:`DifferentialPrivacy.client_upload` to the honest rows before attackers
  craft theirs, so an attacker that does not follow the protocol (Attack-DPFL) sends
  un-noised rows.
* ``dp: central`` -- the server clips every row to ``C`` and adds ``N(0, sigma^2 C^2 I)``
  to the *sum* of the clipped rows, i.e. ``N(0, sigma^2 C^2 I) / n`` to the mean-type
  aggregate (DP-FedAvg, McMahan et al., ICLR 2018).

Privacy spent: each round is one Poisson-subsampled Gaussian mechanism with noise
multiplier ``sigma`` and sampling rate ``q = clients_per_round / num_clients`` (the
cohort is drawn without replacement; Poisson sampling at the same rate is the usual
accounting approximation). Google's ``dp-accounting`` composes it over the rounds so
far: ``rdp`` (Renyi DP accountant, default; ~10 ms per round) or ``pld`` (privacy loss
distributions, tighter, ~1 s per round). The cumulative ``(epsilon, delta)`` after each
round lands in ``metrics.jsonl`` as ``defense_dp_epsilon`` and ``defense_dp_delta``
(``delta = defense.dp_delta``). Both variants give the same guarantee for one client's
whole update (user-level DP; local DP additionally hides it from the server).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import STAGES
from .base import Aggregate, PostStage, PreStage, RoundContext
from .stages import clip_rows

#: Renyi orders (the integer part of TF Privacy's standard list; fractional orders below
#: 2 make dp-accounting's series fail to converge at large q and only matter at tiny epsilon)
RDP_ORDERS = tuple(range(2, 64)) + (128, 256, 512)


def dp_epsilon(sigma: float, q: float, steps: int, delta: float, accountant: str = "rdp") -> float:
    """Epsilon after ``steps`` Poisson-subsampled Gaussian mechanisms (noise multiplier
    ``sigma``, rate ``q``) at ``delta``, from Google's dp-accounting.

    >>> round(dp_epsilon(0.5, 0.2, 3, 0.15594, "pld"), 2)  # dp-accounting's own PLD test: epsilon 1
    1.0
    """
    try:
        import dp_accounting
        from dp_accounting import pld, rdp
    except ImportError:  # pragma: no cover - the [dp] extra is not installed
        raise ConfigError(
            "defense.dp", "privacy accounting needs the dp-accounting package", "pip install 'fedarena[dp]'"
        ) from None

    if steps <= 0:
        return 0.0
    if sigma <= 0:
        return math.inf
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    acc = rdp.RdpAccountant(list(RDP_ORDERS)) if accountant == "rdp" else pld.PLDAccountant()
    with np.errstate(all="ignore"):  # a vanishing sigma overflows the RDP series: epsilon is then inf
        try:
            eps = float(acc.compose(event, int(steps)).get_epsilon(delta))
        except (OverflowError, ValueError, ZeroDivisionError):
            return math.inf
    return eps if eps == eps else math.inf  # NaN: no finite guarantee


class _DPAccounting(PostStage):
    """Post-stage half of :class:`DifferentialPrivacy`: central noise and the accountant."""

    order = 60
    #: the owner is a back-reference (its state is saved where the pipeline holds it)
    state_exclude = ("owner",)

    def __init__(self, owner: "DifferentialPrivacy"):
        self.owner = owner
        self.rounds = 0

    def reset(self) -> None:
        self.rounds = 0

    def __call__(self, agg: Aggregate, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        o = self.owner
        update = agg.update
        if o.mode == "central" and o.sigma > 0:
            gen = ctx.generator
            z = (
                torch.randn(update.shape, generator=gen, dtype=update.dtype)
                if gen is None or gen.device.type == "cpu"
                else torch.randn(update.shape, generator=gen, dtype=update.dtype, device=update.device)
            )
            update = update + z.to(update.device) * (o.sigma * o.clip / U.shape[0])
        self.rounds += 1
        q = o.sampling_rate if o.sampling_rate is not None else float(ctx.extras.get("sampling_rate", 1.0))
        info = {**agg.info, "dp_delta": o.delta, "dp_sigma": o.sigma}
        eps = dp_epsilon(o.sigma, q, self.rounds, o.delta, o.accountant)
        if math.isfinite(eps):
            info["dp_epsilon"] = eps
        return Aggregate(update, agg.weights, info)


@STAGES.register("dp")
class DifferentialPrivacy(PreStage):
    """Differential privacy: clip to dp_clip, Gaussian noise dp_sigma x dp_clip, local or central; (epsilon, delta) per round.

    Args:
        dp: ``"local"`` (clients noise before upload) or ``"central"`` (the server noises
            the clipped sum).
        dp_clip: C, the L2 clipping bound of one client's update.
        dp_sigma: the noise multiplier (std = sigma x C).
        dp_delta: delta of the reported (epsilon, delta).
        dp_accountant: ``"rdp"`` or ``"pld"`` (Google dp-accounting).
        dp_sampling_rate: q for the accountant; default the cohort's
            ``clients_per_round / num_clients``.
    """

    order = 5

    def __init__(
        self,
        *,
        dp: str,
        dp_clip: float = 1.0,
        dp_sigma: float = 1.0,
        dp_delta: float = 1e-5,
        dp_accountant: str = "rdp",
        dp_sampling_rate: Optional[float] = None,
    ):
        if dp not in ("local", "central"):
            raise ConfigError("defense.dp", f"unknown value {dp!r}", "local, central")
        if not dp_clip > 0:
            raise ConfigError("defense.dp_clip", f"must be > 0 (got {dp_clip})", "an L2 bound > 0")
        if not dp_sigma >= 0:
            raise ConfigError("defense.dp_sigma", f"must be >= 0 (got {dp_sigma})", "a noise multiplier >= 0")
        if not 0 < dp_delta < 1:
            raise ConfigError("defense.dp_delta", f"must be in (0, 1) (got {dp_delta})", "e.g. 1e-5")
        if dp_accountant not in ("rdp", "pld"):
            raise ConfigError("defense.dp_accountant", f"unknown value {dp_accountant!r}", "rdp, pld")
        if dp_sampling_rate is not None and not 0 < dp_sampling_rate <= 1:
            raise ConfigError("defense.dp_sampling_rate", f"must be in (0, 1] (got {dp_sampling_rate})", "0 < q <= 1")
        self.mode, self.clip, self.sigma, self.delta = dp, float(dp_clip), float(dp_sigma), float(dp_delta)
        self.accountant, self.sampling_rate = dp_accountant, dp_sampling_rate
        self.post = _DPAccounting(self)

    def companion(self) -> PostStage:
        """The post-aggregation half (central noise, accounting) the pipeline adds."""
        return self.post

    def client_upload(self, U: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Local DP: every row clipped to C, plus N(0, sigma^2 C^2) per coordinate."""
        if self.mode != "local":
            return U
        out = clip_rows(U, self.clip)
        if self.sigma > 0:
            z = torch.randn(U.shape, generator=generator, dtype=U.dtype)
            out = out + z.to(U.device) * (self.sigma * self.clip)
        return out

    def __call__(self, U: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        return clip_rows(U, self.clip) if self.mode == "central" else U
