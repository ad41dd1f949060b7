"""The LeadFL reference attacker: a clean loss and a fully triggered loss balanced by MGDA.

The LeadFL authors' code (Zhu, Roos, Chen, ICML 2023) trains its malicious clients with the
"blind" loss of backdoors101 (Bagdasaryan & Shmatikov, "Blind Backdoors in Deep Learning
Models", USENIX Security 2021, Sec. 4.3): on every minibatch ``(x, y)`` two losses,

* ``L_n``: cross-entropy on the clean batch, and
* ``L_b``: cross-entropy on the same batch with the trigger stamped on *every* image and
  every label set to the target (``poisoning_proportion`` 1.0),

combined as ``gamma * L_b + (1 - gamma) * L_n`` with MGDA's min-norm weight (Sener & Koltun,
"Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018, Alg. 2; the two-task
closed form of their Sec. 3.2). Before the min-norm problem each task gradient is divided by
its loss (``mgda_normalize='loss'``): ``g^_t = grad L_t / (min(L_t, 10) + 1e-5)``. With tasks
ordered ``[backdoor, normal]``, ``v11 = ||g^_b||^2``, ``v22 = ||g^_n||^2``,
``v12 = <g^_b, g^_n>`` (over all parameters):

* ``gamma = 0.999`` if ``v12 >= v11``; else ``gamma = 0.001`` if ``v12 >= v22``;
* else ``gamma = (v22 - v12) / (v11 + v22 - 2 v12)`` (the point of the segment between the
  two normalised gradients closest to the origin).

The step then uses the *unnormalised* gradient ``gamma * grad L_b + (1 - gamma) * grad L_n``
(spec Sec. 1.4; the LeadFL spec, decision on the attacker). No boosting, same optimizer and
local work as benign clients, no client-side defense.

How it runs: as a :class:`~fedarena.core.recipe.StepHook` of the attackers' recipe, so it
runs on the vectorized path (MLPs, CNNs without buffers) and on the sequential one
(BatchNorm models) with the same arithmetic. The engine's step has used ``grad L_n``; the
hook restores the parameters of before that step, computes ``L_n`` (forward only) and
``L_b`` with its gradient on the triggered batch (``HookStep.grad_on``), and replaces the
step by the MGDA one: with SGD (momentum ``mu``, weight decay) the step with ``g`` instead of
``g_n`` differs by ``delta = g - g_n`` in the momentum buffer and by ``-lr * delta`` in the
parameters, whatever ``mu`` and the weight decay. So it needs ``fl.optimizer=sgd`` without
``fl.grad_clip`` or a client-side projection (refused with one line otherwise). The BatchNorm
statistics see the clean and the triggered forward pass of every step, as in the reference.

Deviations: the reference stamps MNIST-normalised trigger values into un-normalised images
(spec A6); here the ``nine-pixel`` trigger uses raw values. Backdoor accuracy excludes the
target class (spec A12; the reference includes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

import torch

from ..core.recipe import HookStep, StepHook, TrainRecipe
from ..errors import ConfigError
from ..registry import ATTACKS
from .data_poisoning import Backdoor

#: cap of the loss normaliser (backdoors101 ``gradient_normalizers``, 'loss': ``min(loss, 10)``)
LOSS_CAP = 10.0


def min_norm_2(v11: torch.Tensor, v12: torch.Tensor, v22: torch.Tensor) -> torch.Tensor:
    """MGDA's closed-form two-task min-norm weight of the first task (Sener & Koltun 2018,
    Sec. 3.2; backdoors101 ``MGDASolver._min_norm_element_from2``), elementwise over clients:
    ``0.999`` if ``v12 >= v11``, else ``0.001`` if ``v12 >= v22``, else
    ``(v22 - v12) / (v11 + v22 - 2 v12)``.

    >>> min_norm_2(torch.tensor(1.0), torch.tensor(0.0), torch.tensor(1.0)).item()
    0.5
    """
    denom = (v11 + v22 - 2 * v12).clamp_min(torch.finfo(v11.dtype).tiny)
    gamma = (v22 - v12) / denom
    gamma = torch.where(v12 >= v22, torch.full_like(gamma, 0.001), gamma)
    gamma = torch.where(v12 >= v11, torch.full_like(gamma, 0.999), gamma)
    return torch.nan_to_num(gamma, nan=0.5)


def mgda_weights(
    grads_b: list[torch.Tensor], grads_n: list[torch.Tensor], loss_b: torch.Tensor, loss_n: torch.Tensor
) -> torch.Tensor:
    """``(k,)`` MGDA weight ``gamma`` of the backdoor task per client, from stacked ``(k, ...)``
    gradients of the two tasks and their ``(k,)`` losses, with 'loss' normalisation."""
    nb = (loss_b.clamp(max=LOSS_CAP) + 1e-5).to(torch.float64)
    nn_ = (loss_n.clamp(max=LOSS_CAP) + 1e-5).to(torch.float64)
    k = loss_b.shape[0]
    v11 = sum(g.reshape(k, -1).double().square().sum(1) for g in grads_b) / nb**2
    v22 = sum(g.reshape(k, -1).double().square().sum(1) for g in grads_n) / nn_**2
    v12 = sum((a.reshape(k, -1).double() * b.reshape(k, -1).double()).sum(1) for a, b in zip(grads_b, grads_n)) / (
        nb * nn_
    )
    return min_norm_2(v11, v12, v22)


@dataclass(eq=False)
class MGDAStep(StepHook):
    """Replaces each local step of an attacker by the MGDA-balanced clean + triggered step
    (module docstring). Compares by identity: one instance per attack."""

    trigger: object
    target: int
    last_gamma: list = field(default_factory=list)  # per step, mean gamma over the chunk (diagnostics)

    def init(self, names, params):
        return {"pre": [p.clone() for p in params]}

    def __call__(self, s: HookStep):
        if s.grad_on is None or s.x is None:
            raise RuntimeError("the MGDA attacker needs a training path that passes the batch to step hooks")
        pre, lr = s.state["pre"], s.recipe.lr
        post = [p.clone() for p in s.params]
        for p, q in zip(s.params, pre):
            p.copy_(q)  # back to the parameters the step started from
        loss_n, _ = s.grad_on(s.x, s.y, need_grad=False)
        xt = self.trigger.apply(s.x.reshape(-1, *s.x.shape[2:])).reshape(s.x.shape)
        loss_b, g_b = s.grad_on(xt, torch.full_like(s.y, self.target))
        gamma = mgda_weights(g_b, s.grads, loss_b, loss_n)
        self.last_gamma.append(float(gamma.mean()))
        act = s.active
        for i, (p, q) in enumerate(zip(s.params, post)):
            shape = (-1,) + (1,) * (p.dim() - 1)
            gm = gamma.to(p.dtype).reshape(shape)
            delta = gm * (g_b[i] - s.grads[i]) * act.to(p.dtype).reshape(shape)  # g - g_n
            p.copy_(q - lr * delta)
            if s.bufs is not None:
                s.bufs[i].add_(delta)  # the optimizer state, in place
            pre[i] = p.clone()
        return s.bufs


@ATTACKS.register("backdoor-mgda")
class MGDABackdoor(Backdoor):
    """The LeadFL code's attacker: clean + fully triggered loss on each batch, MGDA min-norm weights, 'loss' normalisation.

    Args: those of ``backdoor`` that define the trigger and target (``target``,
    ``trigger``, ``trigger_size``, ``trigger_position``, ``trigger_value``,
    ``trigger_blend``). The attacker's data stays clean (``poison_frac`` is not used: the
    triggered copy of every batch is made during training). ``source`` selects the backdoor
    test set as for ``backdoor``; the training batch is triggered whole, as in the reference.
    """

    def __init__(
        self,
        *,
        target: int = 0,
        source: Optional[int] = None,
        trigger: str = "square",
        trigger_value: Optional[float] = None,
        trigger_size: Optional[int] = None,
        trigger_position: Optional[Union[str, tuple[int, int]]] = None,
        trigger_blend: Optional[Literal["replace", "add"]] = None,
    ):
        super().__init__(
            target=target,
            source=source,
            trigger=trigger,
            poison_frac=0.0,
            trigger_value=trigger_value,
            trigger_size=trigger_size,
            trigger_position=trigger_position,
            trigger_blend=trigger_blend,
        )
        self._hook: Optional[MGDAStep] = None

    def setup(self, info, generator) -> None:
        super().setup(info, generator)
        self._hook = MGDAStep(self.trigger, int(self.target))

    def poison(self, x, y, client_id, generator):
        return None  # clean local data; the triggered copy is made per batch

    def recipe(self, base: TrainRecipe, client_id: int) -> Optional[TrainRecipe]:
        if base.optimizer != "sgd":
            raise ConfigError("fl.optimizer", f"backdoor-mgda replaces SGD steps (got {base.optimizer!r})", "sgd")
        if base.grad_clip is not None:
            raise ConfigError("fl.grad_clip", "backdoor-mgda does not combine with gradient clipping", "unset")
        if base.project is not None:
            raise ConfigError(
                "defense.clip_at", "backdoor-mgda does not combine with a client-side projection", "server"
            )
        return base.with_(step_hook=self._hook)

    def diagnostics(self) -> dict[str, float]:
        g = self._hook.last_gamma if self._hook is not None else []
        out = {"mgda_gamma_mean": float(sum(g) / len(g))} if g else {}
        if self._hook is not None:
            self._hook.last_gamma.clear()
        return out
