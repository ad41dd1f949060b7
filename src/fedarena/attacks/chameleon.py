"""Chameleon: a backdoor that adapts to peer images by contrastive training, to last longer.

Dai, Li, "Chameleon: Adapting to Peer Images for Planting Durable Backdoors in Federated
Learning", ICML 2023, Sec. 4 and Algorithm 1. A backdoor fades when benign clients' later
training moves the features of poisoned images away from the target class. Chameleon
trains the attacker's model in two stages:

1. **Contrastive encoder** (``contrastive_epochs``): the feature extractor (every layer but
   the last; features = the input of the last layer, L2-normalised) minimises a supervised
   contrastive loss (Khosla et al. 2020) with temperature ``temperature`` in which a
   poisoned image is a positive of the target-class images (its *facilitators*) and of
   the other poisoned images, and a negative of the images of its original class (its
   *obstructors*) and of all other classes. The paper scales the poisoned-to-poisoned
   and poisoned-to-facilitator similarities apart (its ``alpha``, ``beta``); here
   ``poison_pull`` multiplies the weight of the positive pairs that contain a poisoned
   image (1: plain SupCon).
2. **Classifier** (``head_epochs``): the encoder is frozen and the last layer trained with
   cross-entropy on the poisoned data.

The update is the final model minus the global model. Poisoning (trigger, ``source``,
``poison_frac``) is the ``backdoor`` attack's; the attack records which samples it
stamped. Attacker-run local training (plain SGD with the benign recipe's learning rate,
momentum, weight decay and batch size, a fresh optimizer per stage) on core's trainer:
each stage is one :func:`fedarena.core.local.train_sequential` call whose recipe names
the parameters that train (``trainable``) and, for stage 1, the batch loss
(``batch_loss`` on the input of the last layer, ``feature_layer``); needs
``fl.algorithm=fedavg``.
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..core.local import BatchSchedule, train_sequential
from ..core.recipe import LossBatch, cross_entropy
from ..errors import ConfigError
from ..registry import ATTACKS
from .base import LocalTrainContext
from .data_poisoning import Backdoor


def supcon_loss(
    z: torch.Tensor, labels: torch.Tensor, temperature: float, pair_weight: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, Eq. 2) of L2-normalised features
    ``z`` ``(B, p)``: for each anchor ``i`` with positives ``P(i)`` (same label, ``j != i``),
    ``-1/|P(i)| sum_p w_ip log(exp(z_i.z_p / T) / sum_{a != i} exp(z_i.z_a / T))``, averaged
    over anchors with a positive. ``pair_weight``: optional ``(B, B)`` weights ``w_ip`` (1 if None).

    >>> z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> round(float(supcon_loss(z, torch.tensor([0, 0, 1]), 1.0)), 4)  # -log(e / (e + 1)), anchors 0 and 1
    0.3133
    """
    B = z.shape[0]
    sim = z @ z.T / temperature
    eye = torch.eye(B, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~eye
    w = pos.to(z.dtype) if pair_weight is None else pos.to(z.dtype) * pair_weight
    npos = pos.sum(1)
    has = npos > 0
    if not bool(has.any()):
        return z.sum() * 0.0
    per_anchor = -(w * log_prob.masked_fill(~pos, 0.0)).sum(1) / npos.clamp_min(1)
    return per_anchor[has].mean()


@ATTACKS.register("chameleon")
class Chameleon(Backdoor):
    """Chameleon (Dai & Li, ICML 2023): contrastive encoder training that pulls poisoned images to the target class, then the head."""

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
        contrastive_epochs: int = 2,
        head_epochs: int = 1,
        temperature: float = 0.5,
        poison_pull: float = 1.0,
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
        )
        if contrastive_epochs < 0 or head_epochs < 0 or contrastive_epochs + head_epochs == 0:
            raise ConfigError(
                "attack.contrastive_epochs",
                f"epochs must be >= 0 and not both 0 (got {contrastive_epochs}, {head_epochs})",
                "e.g. contrastive_epochs=2, head_epochs=1",
            )
        if not (math.isfinite(temperature) and temperature > 0):
            raise ConfigError("attack.temperature", f"must be a finite number > 0 (got {temperature})", "> 0, e.g. 0.5")
        if not (math.isfinite(poison_pull) and poison_pull > 0):
            raise ConfigError("attack.poison_pull", f"must be a finite number > 0 (got {poison_pull})", "> 0, e.g. 1")
        self.contrastive_epochs, self.head_epochs = contrastive_epochs, head_epochs
        self.temperature, self.poison_pull = float(temperature), float(poison_pull)
        self.stamped: dict[int, torch.Tensor] = {}  # client id -> bool mask of its stamped samples

    def poison(self, x, y, client_id, generator):
        px, py = super().poison(x, y, client_id, generator)
        self.stamped[int(client_id)] = (py != y).cpu()
        return px, py

    def local_train(self, ctx: LocalTrainContext) -> torch.Tensor:
        head = ctx.layout.last_layer()
        enc = [n for n in ctx.global_params if n not in head]
        # the attacker's optimizer: SGD with the benign lr, momentum, weight decay and batch size, no clipping;
        # a fresh one per stage (each stage is one trainer call)
        base = ctx.recipe.with_(
            optimizer="sgd",
            steps=None,
            grad_clip=None,
            loss=cross_entropy,
            extra_loss=None,
            project=None,
            step_hook=None,
        )
        g = ctx.layout.flatten(ctx.global_params).detach()
        rows = []
        was_training = ctx.model.training
        ctx.model.train()
        try:
            for i, cid in enumerate(ctx.client_ids):
                idx = np.asarray(ctx.poisoned_index[i])
                stamped = self.stamped.get(int(cid), torch.zeros(len(idx), dtype=torch.bool)).to(ctx.x.device)
                stages = (
                    base.with_(
                        epochs=self.contrastive_epochs,
                        trainable=enc,
                        batch_loss=self._contrastive_loss(stamped),
                        feature_layer=head[0].rsplit(".", 1)[0],
                    ),
                    base.with_(epochs=self.head_epochs, trainable=head),
                )
                params, bufs = dict(ctx.global_params), ctx.buffers
                for recipe in stages:
                    if not recipe.trainable or recipe.epochs == 0:
                        continue
                    # one permutation per epoch from the client's stream, as before (no step hook: no other draw)
                    sched = BatchSchedule.build([len(idx)], recipe, [ctx.rngs[i]])
                    ends: list[dict[str, torch.Tensor]] = []
                    _, new_bufs = train_sequential(
                        ctx.model,
                        params,
                        ctx.x,
                        ctx.y,
                        [idx],
                        sched,
                        recipe,
                        prepare=ctx.prepare,
                        buffers=bufs,
                        params_out=ends,
                    )
                    params, bufs = ends[0], new_bufs[0]  # the next stage starts from the exact parameters
                row = ctx.layout.flatten(params).detach() - g
                rows.append(row)
        finally:
            ctx.model.train(was_training)
        return torch.stack(rows)

    def _contrastive_loss(self, stamped: torch.Tensor):
        """Stage 1's batch loss: :func:`supcon_loss` on the L2-normalised features, positive
        pairs that hold a stamped sample weighted ``poison_pull``."""

        def loss(b: LossBatch) -> torch.Tensor:
            z = F.normalize(b.features, dim=1)
            sb = stamped[b.positions]
            w = 1.0 + (self.poison_pull - 1.0) * (sb.unsqueeze(0) | sb.unsqueeze(1)).to(z.dtype)
            return supcon_loss(z, b.y, self.temperature, w)

        return loss
