"""How a client trains locally: :class:`TrainRecipe`.

A recipe is plain data plus optional pure functions, so that the same recipe runs
vectorized over many clients (``torch.func.vmap``) or in a per-client loop with the
same arithmetic. Clients whose recipes compare equal are trained together.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy, shape ``(B,)``."""
    return F.cross_entropy(logits, y, reduction="none")


@dataclass(frozen=True)
class TrainRecipe:
    """Local optimisation of one client for one round.

    Attributes:
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"`` (PyTorch's semantics; see
            :mod:`fedarena.core.optim`).
        lr, momentum, weight_decay: optimizer hyper-parameters (``momentum``: SGD only;
            ``weight_decay``: an L2 term for SGD and Adam, decoupled for AdamW). The
            optimizer state starts at zero every round (the optimizer is re-created each
            round, as in the RLR and FedAvg reference code) unless the caller passes each
            client's saved state (``fl.client_state=persistent``).
        betas, eps: Adam's and AdamW's moment decay rates and denominator constant.
        batch_size: local minibatch size.
        epochs: local epochs; ignored when ``steps`` is set.
        steps: a fixed number of local SGD steps instead of epochs.
        grad_clip: clip each step's gradient to this L2 norm (``None``: off).
        loss: per-sample loss ``(logits, y) -> (B,)``; averaged over the real samples
            of the batch.
        extra_loss: optional ``(params, global_params) -> scalar`` added to the loss
            (proximal terms, adaptive attackers' penalties).
        project: optional ``(params, global_params) -> params`` applied after every
            step (e.g. projection of the local update onto an L2 ball).
        vectorize: whether this recipe may run under ``torch.func.vmap``; hooks must be
            pure tensor functions for that.
    """

    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 1
    steps: Optional[int] = None
    grad_clip: Optional[float] = None
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy
    extra_loss: Optional[Callable[[Params, Params], torch.Tensor]] = None
    project: Optional[Callable[[Params, Params], Params]] = None
    vectorize: bool = True

    def with_(self, **changes) -> "TrainRecipe":
        return replace(self, **changes)

    def num_steps(self, n_samples: int) -> int:
        if self.steps is not None:
            return self.steps
        return self.epochs * max(1, -(-n_samples // self.batch_size))
