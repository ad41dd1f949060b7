"""IBA: an irreversible backdoor with a learned, input-specific trigger generator.

Nguyen, Nguyen, Le, Nguyen, Tran, Wong, Doan, "IBA: Towards Irreversible Backdoor
Attacks in Federated Learning", NeurIPS 2023, Sec. 3 and Algorithm 1:

1. **Trigger generator** (Sec. 3.2, Eq. 3-4): a small network ``G`` turns an input into an
   imperceptible additive trigger ``T(x) = eps * tanh(G(x))`` (L-infinity bound ``eps``); the
   poisoned input is ``clamp(x + T(x), 0, 1)``. Each round the attackers train ``G``
   ``gen_steps`` Adam steps (lr ``gen_lr``) so that the *current global model* sends
   ``x + T(x)`` to ``target``: the trigger follows the model's own decision boundary, so
   little poisoning is needed and benign training hardly erases it.
2. **Local poisoning** (Sec. 3.3): the attackers train the benign recipe on their data with
   ``poison_frac`` of the eligible samples replaced by ``x + T(x)`` labelled ``target``,
   with projected gradient descent onto the L2 ball ``norm_bound`` around the global model
   (stealth against norm-based defenses; None: off) and, for durability, only on the
   coordinates outside the top ``mask_ratio`` of the last global update (Neurotoxin's
   mask, :mod:`fedarena.attacks.neurotoxin`; 0: off).

``G`` here: for images ``Conv(C, hidden, 3) -> ReLU -> Conv(hidden, C, 3)`` (padding 1),
for vectors ``Linear -> ReLU -> Linear`` (the paper uses a U-Net/autoencoder; the smaller
network is our choice for CPU runs). Its weights live in the attack's state
(``gen_state``, a dict of tensors) and are saved in checkpoints; it is trained across
rounds, never re-initialised. Backdoor accuracy uses the current generator (the engine
refreshes the backdoor test set before each evaluation). Attacker-run local training:
needs ``fl.algorithm=fedavg``.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..core.layout import ParamLayout
from ..core.local import BatchSchedule, train_sequential
from ..data.poison import eligible, poisoned_indices
from ..errors import ConfigError
from ..registry import ATTACKS
from .base import Attack, DataInfo, LocalTrainContext
from .data_poisoning import check_classes
from .neurotoxin import MaskProjection, neurotoxin_mask


def make_generator(input_shape: tuple[int, ...], hidden: int) -> nn.Module:
    """The trigger generator network ``G`` (see the module docstring)."""
    if len(input_shape) == 3:
        c = input_shape[0]
        return nn.Sequential(nn.Conv2d(c, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, c, 3, padding=1))
    f = int(np.prod(input_shape))
    return nn.Sequential(
        nn.Flatten(), nn.Linear(f, hidden), nn.ReLU(), nn.Linear(hidden, f), nn.Unflatten(1, tuple(input_shape))
    )


def poisoned_inputs(gen: nn.Module, x: torch.Tensor, eps: float) -> torch.Tensor:
    """``clamp(x + eps * tanh(G(x)), 0, 1)``: the trigger is at most ``eps`` per pixel."""
    return (x + eps * torch.tanh(gen(x))).clamp(0.0, 1.0)


@ATTACKS.register("iba")
class IBA(Attack):
    """IBA (Nguyen et al., NeurIPS 2023): learned input-specific trigger (eps-bounded), PGD and top-k masking for durability."""

    dynamic_trigger = True

    def __init__(
        self,
        *,
        target: int = 0,
        source: Optional[int] = None,
        poison_frac: float = 0.5,
        eps: float = 0.3,
        hidden: int = 16,
        gen_steps: int = 20,
        gen_lr: float = 0.01,
        gen_samples: int = 256,
        norm_bound: Optional[float] = None,
        mask_ratio: float = 0.0,
    ):
        if not 0.0 <= poison_frac <= 1.0:
            raise ConfigError("attack.poison_frac", f"must be in [0, 1] (got {poison_frac})", "0..1")
        if not (math.isfinite(eps) and 0 < eps <= 1):
            raise ConfigError("attack.eps", f"must be in (0, 1] (raw pixel range) (got {eps})", "e.g. 0.3")
        for name, v in (("hidden", hidden), ("gen_samples", gen_samples)):
            if v < 1:
                raise ConfigError(f"attack.{name}", f"must be >= 1 (got {v})", ">= 1")
        if gen_steps < 0:
            raise ConfigError("attack.gen_steps", f"must be >= 0 (got {gen_steps})", ">= 0")
        if not (math.isfinite(gen_lr) and gen_lr > 0):
            raise ConfigError("attack.gen_lr", f"must be a finite number > 0 (got {gen_lr})", "e.g. 0.01")
        if norm_bound is not None and not (math.isfinite(norm_bound) and norm_bound > 0):
            raise ConfigError("attack.norm_bound", f"must be a finite number > 0 (got {norm_bound})", "> 0, or unset")
        if not 0.0 <= mask_ratio < 1.0:
            raise ConfigError("attack.mask_ratio", f"must be in [0, 1) (got {mask_ratio})", "0..1, 0 = off")
        self.target, self.source, self.poison_frac, self.eps = target, source, poison_frac, float(eps)
        self.hidden, self.gen_steps, self.gen_lr, self.gen_samples = hidden, gen_steps, float(gen_lr), gen_samples
        self.norm_bound, self.mask_ratio = norm_bound, float(mask_ratio)
        self.gen_state: dict[str, torch.Tensor] = {}  # the generator's weights (checkpointed)
        self.mask: Optional[torch.Tensor] = None
        self._diag: dict[str, float] = {}

    def setup(self, info: DataInfo, generator: torch.Generator) -> None:
        super().setup(info, generator)
        check_classes(self, info, "source", "target")
        if not self.gen_state:
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                gen = make_generator(tuple(info.input_shape), self.hidden)
            self.gen_state = {n: p.detach().clone() for n, p in gen.state_dict().items()}

    def generator_module(self, device=None) -> nn.Module:
        """``G`` with the current weights."""
        gen = make_generator(tuple(self.info.input_shape), self.hidden)
        gen.load_state_dict(self.gen_state)
        return gen.to(device) if device is not None else gen

    def backdoor_testset(self, x, y):
        keep = eligible(y, self.target, self.source)
        gen = self.generator_module(x.device)
        with torch.no_grad():
            return poisoned_inputs(gen, x[keep], self.eps), torch.full_like(y[keep], self.target)

    def begin_round(
        self, round: int, layout: ParamLayout, global_params: torch.Tensor, prev_update: Optional[torch.Tensor]
    ) -> None:
        self.mask = (
            None if prev_update is None or self.mask_ratio == 0 else neurotoxin_mask(prev_update, self.mask_ratio)
        )

    # ------------------------------------------------------------ generator training
    def train_generator(
        self, model: nn.Module, global_params: dict[str, torch.Tensor], buffers, x: torch.Tensor, prepare
    ) -> None:
        """``gen_steps`` Adam steps on ``CE(global(x + T(x)), target)``."""
        gen = self.generator_module(x.device)
        opt = torch.optim.Adam(gen.parameters(), lr=self.gen_lr)
        tgt = torch.full((len(x),), self.target, dtype=torch.long, device=x.device)
        gp = {n: p.detach() for n, p in global_params.items()}

        def hit() -> float:
            with torch.no_grad():
                xp = poisoned_inputs(gen, x, self.eps)
                xb = xp if prepare is None else prepare(xp)
                return float((functional_call(model, (gp, buffers), (xb,)).argmax(1) == self.target).float().mean())

        was_training = model.training
        model.eval()
        try:
            before = hit()
            for _ in range(self.gen_steps):
                xp = poisoned_inputs(gen, x, self.eps)
                xb = xp if prepare is None else prepare(xp)
                loss = F.cross_entropy(functional_call(model, (gp, buffers), (xb,)), tgt)
                opt.zero_grad()
                loss.backward()
                opt.step()
            after = hit()
        finally:
            model.train(was_training)
        self.gen_state = {n: p.detach().clone() for n, p in gen.state_dict().items()}
        self._diag = {"trigger_hit_before": before, "trigger_hit_after": after}

    # ------------------------------------------------------------ local training
    def local_train(self, ctx: LocalTrainContext) -> torch.Tensor:
        device = ctx.x.device
        pool = torch.from_numpy(np.concatenate([np.asarray(c) for c in ctx.clean_index])).to(device)
        elig = pool[eligible(ctx.y[pool], self.target, self.source)] if len(pool) else pool
        if len(elig) and self.gen_steps:
            pick = elig[torch.randperm(len(elig), generator=ctx.generator)[: self.gen_samples].to(device)]
            self.train_generator(ctx.model, ctx.global_params, ctx.buffers, ctx.x[pick], ctx.prepare)
        gen = self.generator_module(device)
        recipe = ctx.recipe
        if self.mask is not None or self.norm_bound is not None:
            ones = torch.ones(ctx.layout.dim, device=device)
            m = self.mask.to(device, torch.float32) if self.mask is not None else ones
            proj = MaskProjection(dict(ctx.layout.unflatten(m)), self.norm_bound)
            prior = recipe.project
            recipe = recipe.with_(project=proj if prior is None else (lambda p, g: proj(prior(p, g), g)))
        rows = []
        for i in range(len(ctx.client_ids)):
            idx = torch.from_numpy(np.asarray(ctx.clean_index[i])).to(device)
            xi, yi = ctx.x[idx].clone(), ctx.y[idx].clone()
            chosen = poisoned_indices(yi, self.target, self.source, self.poison_frac, ctx.generator)
            with torch.no_grad():
                xi[chosen] = poisoned_inputs(gen, xi[chosen], self.eps)
            yi[chosen] = self.target
            sched = BatchSchedule.build([len(yi)], recipe, [ctx.rngs[i]])
            out, _ = train_sequential(
                ctx.model,
                ctx.global_params,
                xi,
                yi,
                [np.arange(len(yi))],
                sched,
                recipe,
                prepare=ctx.prepare,
                buffers=ctx.buffers,
            )
            rows.append(out[0] if len(out) else torch.zeros(ctx.layout.dim, device=device))
        return torch.stack(rows)

    def diagnostics(self) -> dict[str, float]:
        return dict(self._diag)
