"""Neurotoxin: a durable backdoor that avoids the coordinates benign clients change most.

Zhang, Panda, Song, Yang, Mahoney, Mittal, Ramchandran, Gonzalez, "Neurotoxin: Durable
Backdoors in Federated Learning", ICML 2022, Sec. 3 and Algorithm 1: benign clients
keep overwriting the coordinates they update most, erasing a backdoor stored there once
the attack stops. The attacker therefore projects its poisoned training onto the
coordinates benign clients rarely change. It approximates the benign direction by the
last global update it observes (the difference of the two latest global models, from
the broadcast history) and, after every local SGD step (projected gradient descent),
resets the ``mask_ratio`` share of coordinates with the largest ``|previous global
update|`` (the "top-k %") to their global value; the rest (the "bottom-k %") is kept.

With plain SGD this equals masking every step's gradient (the paper's Algorithm 1,
line "g <- g * mask"); with momentum or weight decay the projection still holds every
local model on the masked coordinates. ``norm_bound`` (optional) adds the L2 projection
of the local update onto a ball (the PGD attack Neurotoxin is combined with in its
experiments, Wang et al. 2020). Both are pure functions of the parameters, so attackers
train on the vectorized path. With ``fl.algorithm=fedsgd`` there are no local steps and
the mask is applied to the uploaded gradient.

Paper vs code: the authors' code computes the mask from the attacker's own gradient on
its clean data and keeps ``gradmask_ratio`` of the coordinates (``mask_ratio = 1 -
gradmask_ratio`` here); we implement the paper's previous-global-update mask. The mask
is global over all parameters (one top-k over the flattened vector), as in the code.

Everything else (trigger, source/target, poison_frac, DBA, boosting) is the
``backdoor`` attack's.
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Union

import torch

from ..core.layout import ParamLayout
from ..core.recipe import Params, TrainRecipe
from ..errors import ConfigError
from ..registry import ATTACKS
from .base import RoundView
from .data_poisoning import Backdoor


def neurotoxin_mask(prev_update: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """``(d,)`` bool: True on the coordinates the attacker may change, i.e. all but the
    ``ceil(mask_ratio * d)`` largest ``|prev_update|`` (the paper's top-k %). NaN/Inf
    coordinates count as largest.

    >>> neurotoxin_mask(torch.tensor([0.5, -3.0, 0.1, 2.0]), 0.5).tolist()
    [True, False, True, False]
    """
    d = prev_update.numel()
    k = min(d, math.ceil(mask_ratio * d - 1e-9))
    keep = torch.ones(d, dtype=torch.bool, device=prev_update.device)
    if k > 0:
        mag = torch.nan_to_num(prev_update.abs(), nan=float("inf"), posinf=float("inf"))
        keep[torch.topk(mag, k).indices] = False
    return keep


class MaskProjection:
    """``(params, global_params) -> params``: ``global + mask * (params - global)``, then
    optionally onto the L2 ball of radius ``bound`` around ``global`` (pure tensor code,
    runs under ``vmap``). Compares by identity, so one round's attackers share a recipe."""

    def __init__(self, masks: dict[str, torch.Tensor], bound: Optional[float] = None):
        self.masks, self.bound = masks, bound

    def __call__(self, params: Params, global_params: Params) -> Params:
        diff = {k: (params[k] - global_params[k]) * self.masks[k] for k in params}
        if self.bound is not None:
            sq = sum(v.square().sum() for v in diff.values())
            scale = torch.clamp(self.bound / torch.sqrt(sq).clamp_min(1e-30), max=1.0)
            diff = {k: v * scale for k, v in diff.items()}
        return {k: global_params[k] + diff[k] for k in params}


@ATTACKS.register("neurotoxin")
class Neurotoxin(Backdoor):
    """Neurotoxin (Zhang et al., ICML 2022): backdoor trained on the coordinates the last global update changed least.

    Args (beyond ``backdoor``'s):
        mask_ratio: share of coordinates the attacker leaves alone (the largest
            ``|previous global update|``), in [0, 1). 0: a plain backdoor.
        norm_bound: optional L2 bound of the local update (PGD), > 0.
    """

    def __init__(
        self,
        *,
        target: int = 0,
        source: Optional[int] = None,
        trigger: str = "square",
        poison_frac: float = 0.5,
        trigger_value: Optional[float] = None,
        trigger_size: Optional[int] = None,
        trigger_position: Optional[Union[str, tuple[int, int]]] = None,
        trigger_blend: Optional[Literal["replace", "add"]] = None,
        dba: bool = False,
        dba_parts: int = 4,
        boost: float = 1.0,
        mask_ratio: float = 0.05,
        norm_bound: Optional[float] = None,
    ):
        super().__init__(
            target=target,
            source=source,
            trigger=trigger,
            poison_frac=poison_frac,
            trigger_value=trigger_value,
            trigger_size=trigger_size,
            trigger_position=trigger_position,
            trigger_blend=trigger_blend,
            dba=dba,
            dba_parts=dba_parts,
            boost=boost,
        )
        if not (0.0 <= mask_ratio < 1.0):
            raise ConfigError("attack.mask_ratio", f"must be in [0, 1) (got {mask_ratio})", "0..1, e.g. 0.05")
        if norm_bound is not None and not (math.isfinite(norm_bound) and norm_bound > 0):
            raise ConfigError(
                "attack.norm_bound", f"must be a finite number > 0 (got {norm_bound})", "> 0, or unset for none"
            )
        self.mask_ratio, self.norm_bound = float(mask_ratio), norm_bound
        self.mask: Optional[torch.Tensor] = None  # (d,) bool, the round's mask (None: no projection yet)
        self._projection: Optional[MaskProjection] = None
        self._diag: dict[str, float] = {}

    def begin_round(
        self, round: int, layout: ParamLayout, global_params: torch.Tensor, prev_update: Optional[torch.Tensor]
    ) -> None:
        if prev_update is None or self.mask_ratio == 0.0:
            self.mask = None  # round 0: nothing observed yet, train like a plain backdoor
            self._projection = (
                None
                if self.norm_bound is None
                else MaskProjection(
                    {n: torch.ones((), device=global_params.device) for n in layout.names}, self.norm_bound
                )
            )
            self._diag = {"mask_keep_frac": 1.0}
            return
        self.mask = neurotoxin_mask(prev_update.detach(), self.mask_ratio)
        masks = {n: v.to(global_params.dtype) for n, v in layout.unflatten(self.mask.to(global_params.dtype)).items()}
        self._projection = MaskProjection(masks, self.norm_bound)
        self._diag = {"mask_keep_frac": float(self.mask.float().mean())}

    def recipe(self, base: TrainRecipe, client_id: int) -> Optional[TrainRecipe]:
        mine = self._projection
        if mine is None:
            return None
        prior = base.project
        if prior is None:
            return base.with_(project=mine)
        return base.with_(project=_Chain(prior, mine))

    def craft(self, view: RoundView) -> Optional[torch.Tensor]:
        M = None
        if view.algorithm == "fedsgd" and self.mask is not None:  # no local steps: mask the gradient
            M = view.own_updates * self.mask.to(view.own_updates.device, view.own_updates.dtype)
        if self.boost != 1.0:
            M = (view.own_updates if M is None else M) * self.boost
        return M

    def diagnostics(self) -> dict[str, float]:
        return {**super().diagnostics(), **self._diag}


class _Chain:
    """The defense's client-side projection, then the attacker's (by identity, as MaskProjection)."""

    def __init__(self, first, second):
        self.first, self.second = first, second

    def __call__(self, params: Params, global_params: Params) -> Params:
        return self.second(self.first(params, global_params), global_params)
