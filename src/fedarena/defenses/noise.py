"""Gaussian noise on the aggregate: the noise half of "weak differential privacy".

Sun et al., "Can You Really Backdoor Federated Learning?", 2019, as written in Ozdayi et
al., AAAI 2021, Eq. 2::

    w_{t+1} = w_t + eta * ( sum_k n_k clip_M(delta_k) / sum_k n_k  +  N(0, sigma^2 M^2) )

The noise is i.i.d. per coordinate with standard deviation ``sigma * M``: ``sigma``
(``defense.noise``) is a multiplier of the clipping bound ``M`` (``defense.clip``), not an
absolute std. As in the RLR reference code, ``M = 0`` or unset means *no noise* even
when ``sigma > 0`` (the RLR spec's decision 4); ``defense.noise_abs=true`` makes
``sigma`` the absolute std instead (then ``M`` is not needed).

The clipping half is the ``clip`` stage (``defense.clip``, ``defense.clip_at``); the two
compose with any aggregator. With the Robust Learning Rate (``defense.name=rlr``) the
noise is added before the learning-rate signs are applied, ``eta_theta (.) (g + N)``, as
in the reference code: the RLR aggregate carries its signs in ``info["lr_signs"]`` and
this stage multiplies its noise by them, which gives exactly that order.

>>> import torch
>>> from fedarena.defenses.base import Aggregate
>>> GaussianNoise(noise=0.1, clip=0.0).std
0.0
"""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import ConfigError
from ..registry import STAGES
from .base import Aggregate, PostStage, RoundContext


@STAGES.register("noise")
class GaussianNoise(PostStage):
    """Add N(0, (noise * clip)^2) per coordinate to the aggregate (Eq. 2 of the RLR paper).

    Args:
        noise: sigma, the noise multiplier (0 = off).
        clip: M, the L2 clipping bound of the ``clip`` stage; M = 0/None gives no noise.
        noise_abs: use ``noise`` as the absolute standard deviation.
    """

    order = 50

    def __init__(self, *, noise: float = 0.0, clip: Optional[float] = None, noise_abs: bool = False):
        if not noise >= 0:  # also rejects NaN
            raise ConfigError("defense.noise", f"must be >= 0 (got {noise})", "a noise multiplier >= 0")
        if clip is not None and not clip >= 0:
            raise ConfigError("defense.clip", f"must be >= 0 (got {clip})", "an L2 bound >= 0, 0 = off")
        self.noise, self.clip, self.noise_abs = float(noise), clip, noise_abs

    @property
    def std(self) -> float:
        if self.noise_abs:
            return self.noise
        return self.noise * float(self.clip or 0.0)

    def __call__(self, agg: Aggregate, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        std = self.std
        info = {**agg.info, "noise_std": std}
        if std <= 0:
            return Aggregate(agg.update, agg.weights, info)
        u = agg.update
        gen = ctx.generator
        if gen is not None and gen.device != u.device:
            z = torch.randn(u.shape, generator=gen, dtype=u.dtype).to(u.device)
        else:
            z = torch.randn(u.shape, generator=gen, dtype=u.dtype, device=u.device)
        z = z * std
        signs = agg.info.get("lr_signs")
        if isinstance(signs, torch.Tensor) and signs.shape == u.shape:
            z = z * signs  # noise enters before the RLR flip: eta_theta (.) (g + N)
        return Aggregate(u + z, agg.weights, info)
