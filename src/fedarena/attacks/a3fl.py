"""A3FL: a trigger optimized against the global model and its adversarial unlearning.

Zhang, Jia, Li, Gong, "A3FL: Adversarially Adaptive Backdoor Attacks to Federated
Learning", NeurIPS 2023, Sec. 4 and Algorithm 1. A fixed trigger is learned by the
global model and then erased by benign training and defenses. A3FL re-optimizes the
trigger every round so that it works on the current global model *and* on an
adversarially adapted copy that tries to unlearn it:

1. ``theta_adv``: a copy of the global model trained ``adv_steps`` SGD steps (lr
   ``adv_lr``) on triggered inputs with their *true* labels (the server/benign clients
   removing the backdoor, Eq. 3).
2. The trigger pattern ``delta`` (the pixels under the trigger's mask) takes
   ``trigger_steps`` signed-gradient steps (``trigger_lr``, PGD, clamped to [0, 1]) on
   ``CE(theta_g(x + delta), target) + adv_weight * CE(theta_adv(x + delta), target)`` (Eq. 4).
3. Steps 1-2 repeat ``trigger_rounds`` times; then every attacker trains the benign recipe
   on its own data with ``poison_frac`` of the eligible samples (``source`` class, or every
   non-target class) stamped with the trigger and labelled ``target``.

The trigger is optimized once per round on up to ``opt_samples`` of the round's attackers'
pooled clean samples (the attackers collude on one trigger, as in the paper's code) and is
kept across rounds (it starts from the previous round's, checkpointed with the attack's
state). Backdoor accuracy is measured with the current trigger (the engine refreshes the
backdoor test set before each evaluation). The mask is a named trigger's
(``trigger``, default a ``square`` patch; its pattern is the starting point).

Attacker-run local training (:meth:`Attack.local_train`): the trigger changes every round,
so the poisoned data are not a pure function of the parameters and the attackers train on
the sequential path (needs ``fl.algorithm=fedavg``).
"""

from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..core.local import BatchSchedule, train_sequential
from ..data.poison import TRIGGERS, Trigger, eligible, make_trigger, poisoned_indices
from ..errors import ConfigError
from ..registry import ATTACKS
from .base import Attack, DataInfo, LocalTrainContext
from .data_poisoning import check_classes


def stamp(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """``x * (1 - mask) + pattern * mask`` (raw images)."""
    return x * (1 - mask) + pattern * mask


@ATTACKS.register("a3fl")
class A3FL(Attack):
    """A3FL (Zhang et al., NeurIPS 2023): trigger re-optimized each round against the global model and its adversarial unlearning."""

    dynamic_trigger = True  # the engine refreshes the backdoor test set before each evaluation

    def __init__(
        self,
        *,
        target: int = 0,
        source: Optional[int] = None,
        trigger: str = "square",
        trigger_size: Optional[int] = None,
        trigger_position: Optional[Union[str, tuple[int, int]]] = None,
        poison_frac: float = 0.5,
        trigger_rounds: int = 2,
        trigger_steps: int = 10,
        trigger_lr: float = 0.1,
        adv_steps: int = 5,
        adv_lr: float = 0.1,
        adv_weight: float = 1.0,
        opt_samples: int = 256,
    ):
        if not 0.0 <= poison_frac <= 1.0:
            raise ConfigError("attack.poison_frac", f"must be in [0, 1] (got {poison_frac})", "0..1")
        if trigger not in TRIGGERS or trigger == "blended":
            raise ConfigError(
                "attack.trigger",
                f"A3FL optimizes a patch trigger's pixels (got {trigger!r})",
                ", ".join(t for t in TRIGGERS if t != "blended"),
            )
        for name, v in (("trigger_rounds", trigger_rounds), ("opt_samples", opt_samples)):
            if v < 1:
                raise ConfigError(f"attack.{name}", f"must be >= 1 (got {v})", ">= 1")
        for name, v in (("trigger_steps", trigger_steps), ("adv_steps", adv_steps)):
            if v < 0:
                raise ConfigError(f"attack.{name}", f"must be >= 0 (got {v})", ">= 0")
        for name, v in (("trigger_lr", trigger_lr), ("adv_lr", adv_lr), ("adv_weight", adv_weight)):
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"attack.{name}", f"must be a finite number >= 0 (got {v})", ">= 0")
        self.target, self.source, self.trigger_name = target, source, trigger
        self.trigger_size, self.trigger_position, self.poison_frac = trigger_size, trigger_position, poison_frac
        self.trigger_rounds, self.trigger_steps, self.trigger_lr = trigger_rounds, trigger_steps, float(trigger_lr)
        self.adv_steps, self.adv_lr, self.adv_weight = adv_steps, float(adv_lr), float(adv_weight)
        self.opt_samples = opt_samples
        self.pattern: Optional[torch.Tensor] = None  # (C, H, W), the optimized pixels (kept across rounds)
        self._diag: dict[str, float] = {}

    def setup(self, info: DataInfo, generator: torch.Generator) -> None:
        super().setup(info, generator)
        check_classes(self, info, "source", "target")
        base: Trigger = make_trigger(
            self.trigger_name, info.input_shape, None, self.trigger_size, self.trigger_position, "replace"
        )
        self.mask = base.mask
        if self.pattern is None:
            self.pattern = base.pattern.clone()

    @property
    def trigger(self) -> Trigger:
        """The current trigger (mask and optimized pattern)."""
        return Trigger(self.mask, self.pattern, "replace")

    def backdoor_testset(self, x, y):
        keep = eligible(y, self.target, self.source)
        return self.trigger.apply(x[keep]), torch.full_like(y[keep], self.target)

    # ------------------------------------------------------------ trigger optimization
    def optimize_trigger(
        self,
        model: torch.nn.Module,
        global_params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        prepare,
    ) -> None:
        """Algorithm 1, lines 3-12: alternate the adversarial unlearning model and the trigger's PGD."""
        mask = self.mask.to(x.device, x.dtype)
        delta = self.pattern.to(x.device, x.dtype).clone()
        tgt = torch.full_like(y, self.target)
        gp = {n: p.detach() for n, p in global_params.items()}

        def ce(params, xs, labels):
            xb = xs if prepare is None else prepare(xs)
            return F.cross_entropy(functional_call(model, (params, buffers), (xb,)), labels)

        was_training = model.training
        model.eval()
        try:
            before = self._hit_rate(model, gp, buffers, x, delta, mask, prepare)
            for _ in range(self.trigger_rounds):
                adv = {n: p.clone().requires_grad_(True) for n, p in gp.items()}
                for _ in range(self.adv_steps):  # unlearn: triggered inputs, true labels
                    loss = ce(adv, stamp(x, mask, delta), y)
                    grads = torch.autograd.grad(loss, list(adv.values()))
                    with torch.no_grad():
                        for p, g in zip(adv.values(), grads):
                            p -= self.adv_lr * g
                adv = {n: p.detach() for n, p in adv.items()}
                for _ in range(self.trigger_steps):
                    d = delta.clone().requires_grad_(True)
                    xs = stamp(x, mask, d)
                    loss = ce(gp, xs, tgt) + self.adv_weight * ce(adv, xs, tgt)
                    (g,) = torch.autograd.grad(loss, [d])
                    delta = (delta - self.trigger_lr * torch.nan_to_num(g).sign()).clamp(0.0, 1.0)
            after = self._hit_rate(model, gp, buffers, x, delta, mask, prepare)
        finally:
            model.train(was_training)
        self.pattern = delta.detach().to(self.pattern.device)
        self._diag = {"trigger_hit_before": before, "trigger_hit_after": after}

    def _hit_rate(self, model, params, buffers, x, delta, mask, prepare) -> float:
        with torch.no_grad():
            xs = stamp(x, mask, delta)
            xb = xs if prepare is None else prepare(xs)
            return float((functional_call(model, (params, buffers), (xb,)).argmax(1) == self.target).float().mean())

    # ------------------------------------------------------------ local training
    def local_train(self, ctx: LocalTrainContext) -> torch.Tensor:
        device = ctx.x.device
        pool = (
            np.concatenate([np.asarray(c) for c in ctx.clean_index]) if ctx.clean_index else np.zeros(0, dtype=np.int64)
        )
        pool_t = torch.from_numpy(pool).to(device)
        elig = pool_t[eligible(ctx.y[pool_t], self.target, self.source)] if len(pool_t) else pool_t
        if len(elig):
            pick = elig[torch.randperm(len(elig), generator=ctx.generator)[: self.opt_samples].to(device)]
            self.optimize_trigger(ctx.model, ctx.global_params, ctx.buffers, ctx.x[pick], ctx.y[pick], ctx.prepare)
        trig = self.trigger
        rows = []
        for i in range(len(ctx.client_ids)):
            idx = torch.from_numpy(np.asarray(ctx.clean_index[i])).to(device)
            xi, yi = ctx.x[idx].clone(), ctx.y[idx].clone()
            chosen = poisoned_indices(yi, self.target, self.source, self.poison_frac, ctx.generator)
            xi[chosen] = trig.apply(xi[chosen])
            yi[chosen] = self.target
            sched = BatchSchedule.build([len(yi)], ctx.recipe, [ctx.rngs[i]])
            out, _ = train_sequential(
                ctx.model,
                ctx.global_params,
                xi,
                yi,
                [np.arange(len(yi))],
                sched,
                ctx.recipe,
                prepare=ctx.prepare,
                buffers=ctx.buffers,
            )
            rows.append(out[0] if len(out) else torch.zeros(ctx.layout.dim, device=device))
        return torch.stack(rows)

    def diagnostics(self) -> dict[str, float]:
        return dict(self._diag)
