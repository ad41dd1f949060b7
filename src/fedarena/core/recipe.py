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
        step_hook: optional :class:`StepHook` run after every SGD step (client-side
            defenses such as LeadFL, LDP, FL-WBC). It works on the stacked ``(k, ...)``
            parameters of all clients of a chunk, so the same code runs on both paths.
        batch_loss: optional ``(LossBatch) -> scalar``, the loss of a whole batch; it
            replaces the mean of ``loss`` (``extra_loss`` is still added). It sees the
            logits, the targets, the batch's positions in the client's sample index
            (to look up per-sample flags, e.g. which samples an attack stamped), the
            features of ``feature_layer`` and the parameters (:class:`LossBatch`), for
            losses that are not a mean over samples (e.g. a contrastive loss).
        feature_layer: the name of a submodule (``model.get_submodule``) whose input,
            flattened to ``(B, -1)``, ``batch_loss`` gets as ``LossBatch.features`` (e.g.
            the input of the last layer: the penultimate features). Needs ``batch_loss``.
        trainable: the names of the parameters that train (``None``: all). The others are
            frozen: no gradient is taken for them and the optimizer step (weight decay,
            momentum, Adam moments, gradient clipping's norm) leaves them and their state
            unchanged; a step hook sees zero gradients for them. An attack that trains
            part of the model (an encoder, then the head) makes one recipe per part.

    A recipe with ``batch_loss`` or ``trainable`` trains on the sequential path only
    (:func:`fedarena.core.local.train_sequential`): ``vectorize`` is set to False for it (a
    ``with_`` copy keeps that), :func:`~fedarena.core.local.train_clients` sends it there,
    and :func:`~fedarena.core.local.train_vectorized` and
    :func:`~fedarena.core.local.minibatch_gradients` refuse it.
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
    step_hook: Optional["StepHook"] = None
    batch_loss: Optional[Callable[["LossBatch"], torch.Tensor]] = None
    feature_layer: Optional[str] = None
    trainable: Optional[frozenset[str]] = None

    def __post_init__(self) -> None:
        if self.trainable is not None:
            if isinstance(self.trainable, str):
                raise TypeError("trainable must be a collection of parameter names, not one string")
            object.__setattr__(self, "trainable", frozenset(self.trainable))
        if self.feature_layer is not None and self.batch_loss is None:
            raise ValueError("feature_layer is read by batch_loss only: set batch_loss too")
        if self.sequential_only and self.vectorize:
            object.__setattr__(self, "vectorize", False)

    @property
    def sequential_only(self) -> bool:
        """Whether this recipe trains on the sequential path only (``batch_loss`` or ``trainable`` set)."""
        return self.batch_loss is not None or self.trainable is not None

    def with_(self, **changes) -> "TrainRecipe":
        return replace(self, **changes)

    def num_steps(self, n_samples: int) -> int:
        if self.steps is not None:
            return self.steps
        return self.epochs * max(1, -(-n_samples // self.batch_size))


@dataclass
class LossBatch:
    """What a recipe's ``batch_loss`` sees: one client's batch at one step.

    ``logits``: ``(B, C)`` the model's outputs; ``y``: ``(B,)`` the targets; ``positions``:
    ``(B,)`` int64, the batch's samples as positions in the client's sample index
    (``index[client]`` of :func:`~fedarena.core.local.train_sequential`, the schedule's
    batch), on the batch's device; ``features``: ``(B, p)`` the input of the recipe's
    ``feature_layer`` (``None`` without one); ``params``/``global_params``: the client's
    parameters (differentiate through them) and where it started; ``client``: the
    client's row in the trainer call.
    """

    logits: torch.Tensor
    y: torch.Tensor
    positions: torch.Tensor
    features: Optional[torch.Tensor]
    params: Params
    global_params: Params
    client: int


@dataclass
class HookStep:
    """What a :class:`StepHook` sees after one SGD step of ``k`` clients.

    ``params``: the stacked ``(k, ...)`` parameters after the step (modify in place);
    ``grads``: the task gradients of this step (before momentum); ``bufs``: momentum buffers
    (``None`` without momentum); ``first``: ``(k,)`` bool, this batch starts a local epoch;
    ``active``: ``(k,)`` float, the client took this step; ``generators``: one
    ``torch.Generator`` per client (its own seed, the same on both training paths);
    ``regrad()``: the task gradients at the current ``params`` on the same batch;
    ``step(grads, bufs, active, idx)``: one more SGD step (the recipe's momentum and weight
    decay) of the tensors ``idx`` with ``grads``, returning the new buffers of those tensors.
    ``x``/``y``: the step's batch, raw inputs ``(k, B, ...)`` (before the data's normalisation)
    and labels ``(k, B)``; ``grad_on(x, y, need_grad=True)``: each client's mean loss ``(k,)``
    and its gradients on another batch of the same shape (e.g. the batch with a trigger
    stamped) at the current ``params``; with ``need_grad=False`` only the losses, and then
    the forward does not move BatchNorm statistics (with gradients it does, as a training
    forward pass).
    ``loss``: ``(k,)`` each client's loss of this step (the recipe's loss and ``extra_loss``
    at the parameters before the step: the value whose gradient the step took; not
    meaningful for an inactive client). ``stop``: ``(k,)`` bool, all False when the hook is
    called; setting entry ``j`` ends client ``j``'s local training after this step (its
    remaining steps are skipped, its update is its parameters now), on both training paths.
    """

    names: list[str]
    params: list[torch.Tensor]
    grads: list[torch.Tensor]
    bufs: Optional[list[torch.Tensor]]
    first: torch.Tensor
    active: torch.Tensor
    generators: list[torch.Generator]
    state: dict
    regrad: Callable[[], list[torch.Tensor]]
    recipe: "TrainRecipe"
    step: Optional[Callable] = None
    x: Optional[torch.Tensor] = None
    y: Optional[torch.Tensor] = None
    grad_on: Optional[Callable] = None
    loss: Optional[torch.Tensor] = None
    stop: Optional[torch.Tensor] = None


class StepHook:
    """A per-client function of parameters and gradients applied after each local SGD step.

    Subclasses implement :meth:`init` (the per-chunk state, from the stacked initial
    parameters) and :meth:`__call__` (returns the momentum buffers, changed or not).
    Instances must be hashable and compare by value (recipes group clients by equality).
    """

    def init(self, names: list[str], params: list[torch.Tensor]) -> dict:
        return {}

    def __call__(self, s: HookStep) -> Optional[list[torch.Tensor]]:  # pragma: no cover - abstract
        return s.bufs
