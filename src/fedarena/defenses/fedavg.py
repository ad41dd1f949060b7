"""Federated averaging (McMahan et al., AISTATS 2017, Algorithm 1)."""

from __future__ import annotations

import torch

from ..registry import DEFENSES
from .base import Aggregate, Aggregator, RoundContext


@DEFENSES.register("fedavg")
class FedAvg(Aggregator):
    """Mean of the updates; ``weighted=True`` weights each row by its sample count.

    Not robust: one NaN or huge row corrupts the aggregate (the engine then stops the run).
    """

    def __init__(self, *, weighted: bool = False):
        self.weighted = weighted

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        if self.weighted:
            w = ctx.num_samples.to(U.dtype).to(U.device)
            w = w / w.sum()
        else:
            w = torch.full((U.shape[0],), 1.0 / U.shape[0], dtype=U.dtype, device=U.device)
        return Aggregate(w @ U, weights=w)
