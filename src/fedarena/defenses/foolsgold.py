"""FoolsGold: down-weight clients whose update histories are too similar.

Fung, Yoon, Beschastnikh, "The Limitations of Federated Learning in Sybil Settings",
RAID 2020, Algorithm 1; used as a baseline by Ozdayi et al., AAAI 2021 (Eq. 3:
``w_{t+1} = w_t + sum_k alpha_k n_k delta_k / sum_k n_k``, ``alpha_k in [0, 1]``).

Per round, over the clients in ``U`` (official ``deep-fg`` variant, the RLR spec's
decision 18):

1. history ``H_i += delta_i`` restricted to the model's last layer's weight (the official
   code's "second-to-last parameter tensor"; ``layers="all"``: the whole update);
   ``history=False`` uses this round's updates only;
2. ``cs_ij`` = cosine similarity of ``H_i`` and ``H_j``, ``cs_ii`` excluded; ``v_i = max_j cs_ij``;
3. pardoning: ``cs_ij *= v_i / v_j`` where ``v_i < v_j`` (for ``v_j > 0``);
4. ``alpha_i = 1 - max_j cs_ij`` clipped to [0, 1]; ``alpha /= max(alpha)``; ``alpha = 0.99`` where 1;
5. logit: ``alpha_i = ln(alpha_i / (1 - alpha_i)) + 0.5`` (``kappa = 1``), clipped to [0, 1];
6. aggregate ``sum_i alpha_i omega_i delta_i`` with ``omega_i = 1/n`` (official code: divided by
   the number of clients) or ``n_i / sum n`` (``weighted=True``, Eq. 3).

Identical (sybil) updates get weight 0. A client whose row holds NaN/Inf gets weight 0
and leaves its history unchanged. When a pre-stage changes the number of rows (bucketing),
rows are no longer clients and this round's rows are compared without history.

>>> import torch
>>> fg = FoolsGold(layers="all")
>>> from fedarena.defenses.base import RoundContext
>>> from fedarena.core.layout import ParamLayout
>>> U = torch.tensor([[1., 0., 0.], [1., 0., 0.], [0., 1., 0.], [0., 0., 1.]])
>>> ctx = RoundContext(0, ParamLayout.from_params({"w": torch.zeros(3)}), torch.arange(4), torch.ones(4))
>>> fg(U, ctx).weights.tolist()
[0.0, 0.0, 1.0, 1.0]
"""

from __future__ import annotations

from typing import Literal

import torch

from ..registry import DEFENSES
from .base import Aggregate, Aggregator, RoundContext, nonfinite_rows


def foolsgold_weights(H: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """FoolsGold's per-client weights (Algorithm 1, steps 2-5) from history rows ``H`` ``(n, p)``."""
    n = H.shape[0]
    H = H.to(torch.float64)
    if n < 2:
        return torch.ones(n, dtype=torch.float64)
    norms = torch.linalg.vector_norm(H, dim=1)
    Hn = H / norms.clamp_min(eps).unsqueeze(1)
    cs = Hn @ Hn.T
    cs.fill_diagonal_(float("-inf"))  # exclude i == j from the maxima
    v = cs.max(dim=1).values
    cs.fill_diagonal_(0.0)
    # pardoning: cs_ij *= v_i / v_j where v_i < v_j
    vi, vj = v.unsqueeze(1), v.unsqueeze(0)
    pardon = (vi < vj) & (vj > eps)
    cs = torch.where(pardon, cs * vi / vj.clamp_min(eps), cs)
    cs.fill_diagonal_(float("-inf"))
    alpha = (1.0 - cs.max(dim=1).values).clamp(0.0, 1.0)
    top = alpha.max()
    if top <= 0:
        return torch.zeros(n, dtype=torch.float64)
    alpha = alpha / top
    alpha = torch.where(alpha == 1.0, torch.full_like(alpha, 0.99), alpha)
    logit = torch.log(alpha / (1.0 - alpha)) + 0.5
    logit = torch.nan_to_num(logit, nan=0.0, posinf=1.0, neginf=0.0)
    return logit.clamp(0.0, 1.0)


@DEFENSES.register("foolsgold")
class FoolsGold(Aggregator):
    """FoolsGold (Fung et al., RAID 2020): weights from the cosine similarity of update histories.

    Args:
        layers: ``"last"`` -- the last layer's weight (official deep-learning variant);
            ``"all"`` -- the whole update.
        history: accumulate each client's updates over rounds (official); False: this round only.
        weighted: multiply by sample counts (RLR paper Eq. 3) instead of dividing by n.
    """

    def __init__(self, *, layers: Literal["last", "all"] = "last", history: bool = True, weighted: bool = False):
        self.layers, self.history, self.weighted = layers, history, weighted
        self.memory: dict[int, torch.Tensor] = {}

    def reset(self) -> None:
        self.memory = {}

    def _columns(self, ctx: RoundContext, d: int) -> slice | torch.Tensor:
        if self.layers == "all":
            return slice(0, d)
        names = ctx.layout.last_layer()
        weights = [n for n in names if n.endswith("weight")] or names
        return ctx.layout.columns(weights)

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n, d = U.shape
        bad = nonfinite_rows(U)
        Uc = torch.where(bad.unsqueeze(1), torch.zeros((), dtype=U.dtype, device=U.device), U)
        feats = Uc[:, self._columns(ctx, d)].detach().to(torch.float64)
        if self.history and len(ctx.client_ids) == n:
            rows = []
            for i, cid in enumerate(ctx.client_ids.tolist()):  # per-client memory
                h = self.memory.get(cid)
                h = feats[i].clone() if h is None else h + feats[i]
                self.memory[cid] = h
                rows.append(h)
            H = torch.stack(rows)
        else:
            H = feats
        alpha = foolsgold_weights(H.cpu()).to(U.device)
        alpha = torch.where(bad, torch.zeros_like(alpha), alpha)
        if self.weighted:
            omega = ctx.num_samples.to(torch.float64).to(U.device)
            omega = omega / omega.sum()
        else:
            omega = torch.full((n,), 1.0 / n, dtype=torch.float64, device=U.device)
        coef = (alpha * omega).to(U.dtype)
        info = {"foolsgold_mean_weight": float(alpha.mean()), "foolsgold_zero_weights": float((alpha == 0).sum())}
        return Aggregate(coef @ Uc, weights=alpha.to(U.dtype), info=info)
