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
momentum and batch size); needs ``fl.algorithm=fedavg``.
"""

from __future__ import annotations

import copy
import math
from typing import Literal, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..registry import ATTACKS
from .base import LocalTrainContext
from .data_poisoning import Backdoor


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float,
                pair_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
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

    def __init__(self, *, target: int = 0, source: Optional[int] = None, trigger: str = "square",
                 poison_frac: float = 0.5, trigger_value: Optional[float] = None, trigger_size: Optional[int] = None,
                 trigger_position: Optional[Union[str, tuple[int, int]]] = None,
                 trigger_blend: Optional[Literal["replace", "add"]] = None,
                 contrastive_epochs: int = 2, head_epochs: int = 1, temperature: float = 0.5, poison_pull: float = 1.0):
        super().__init__(target=target, source=source, trigger=trigger, poison_frac=poison_frac,
                         trigger_value=trigger_value, trigger_size=trigger_size, trigger_position=trigger_position,
                         trigger_blend=trigger_blend)
        if contrastive_epochs < 0 or head_epochs < 0 or contrastive_epochs + head_epochs == 0:
            raise ConfigError("attack.contrastive_epochs", f"epochs must be >= 0 and not both 0 (got "
                              f"{contrastive_epochs}, {head_epochs})", "e.g. contrastive_epochs=2, head_epochs=1")
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
        prefix = head[0].rsplit(".", 1)[0]
        g = ctx.layout.flatten(ctx.global_params).detach()
        rows = []
        for i, cid in enumerate(ctx.client_ids):
            net = copy.deepcopy(ctx.model)
            with torch.no_grad():
                for n, p in net.named_parameters():
                    p.copy_(ctx.global_params[n])
                for n, b in net.named_buffers():
                    if n in ctx.buffers:
                        b.copy_(ctx.buffers[n])
            net.train()
            idx = np.asarray(ctx.poisoned_index[i])
            stamped = self.stamped.get(int(cid), torch.zeros(len(idx), dtype=torch.bool))
            feats: list[torch.Tensor] = []
            hook = net.get_submodule(prefix).register_forward_pre_hook(lambda m, inp, feats=feats: feats.append(inp[0].flatten(1)))
            enc = [p for n, p in net.named_parameters() if n not in head]
            top = [p for n, p in net.named_parameters() if n in head]
            rng = ctx.rngs[i]
            r = ctx.recipe
            try:
                for stage, epochs, params in (("contrastive", self.contrastive_epochs, enc), ("head", self.head_epochs, top)):
                    if not params or epochs == 0:
                        continue
                    opt = torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
                    for _ in range(epochs):
                        perm = rng.permutation(len(idx))
                        for s in range(0, len(idx), r.batch_size):
                            b = perm[s : s + r.batch_size]
                            bt = torch.from_numpy(idx[b]).to(ctx.x.device)
                            xb, yb = ctx.x[bt], ctx.y[bt]
                            if ctx.prepare is not None:
                                xb = ctx.prepare(xb)
                            feats.clear()
                            logits = net(xb)
                            if stage == "contrastive":
                                z = F.normalize(feats[-1], dim=1)
                                sb = stamped[torch.from_numpy(b)].to(z.device)
                                w = 1.0 + (self.poison_pull - 1.0) * (sb.unsqueeze(0) | sb.unsqueeze(1)).to(z.dtype)
                                loss = supcon_loss(z, yb, self.temperature, w)
                            else:
                                loss = F.cross_entropy(logits, yb)
                            opt.zero_grad()
                            loss.backward()
                            opt.step()
            finally:
                hook.remove()
            flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
            rows.append(flat - g)
        return torch.stack(rows)
