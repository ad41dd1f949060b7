"""Local optimizers on stacked per-client parameters: SGD (momentum), Adam, AdamW.

One fused step updates every client of a chunk at once: parameters, gradients and
optimizer state are ``(k, ...)`` tensors (one row per client) and each step is a handful
of tensor operations per parameter tensor, not a loop over clients. Both training paths
of :mod:`fedarena.core.local` use it (the sequential path passes ``k = 1`` views), so they
share the arithmetic.

Semantics are PyTorch's (tested against ``torch.optim``):

* ``sgd``: ``torch.optim.SGD`` without dampening or Nesterov: ``g += wd * p``;
  ``b = mu * b + g``; ``p -= lr * b``.
* ``adam``: ``torch.optim.Adam`` (Kingma & Ba, ICLR 2015, Alg. 1; no AMSGrad), weight
  decay as an L2 term ``g += wd * p``.
* ``adamw``: ``torch.optim.AdamW`` (Loshchilov & Hutter, ICLR 2019, Alg. 2): decoupled
  weight decay ``p *= 1 - lr * wd`` before the Adam step.

Gradient clipping (``recipe.grad_clip``) scales each client's whole gradient to at most
that L2 norm before the optimizer (``clip_grad_norm_`` then ``step()``).

The state (:class:`OptState`) starts at zero (which is PyTorch's initial state: a zero
momentum buffer gives ``b = g`` on the first step, exactly like PyTorch's lazily created
one) or from each client's saved state (:meth:`OptState.load`), and can be saved per
client (:meth:`OptState.client`) for ``fl.client_state=persistent``. Clients that are
inactive at a step (fewer local steps than others) keep their parameters and state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .recipe import TrainRecipe

OPTIMIZERS = ("sgd", "adam", "adamw")

ClientState = dict[str, torch.Tensor]
"""One client's saved state: ``"step"`` (0-dim) and one flat ``(d,)`` tensor per state key."""


def state_keys(recipe: TrainRecipe) -> tuple[str, ...]:
    """Names of the per-parameter state tensors (PyTorch's names)."""
    if recipe.optimizer == "sgd":
        return ("momentum_buffer",) if recipe.momentum else ()
    return ("exp_avg", "exp_avg_sq")


@dataclass
class OptState:
    """Optimizer state of ``k`` clients: per key a list of ``(k, ...)`` tensors shaped like
    the parameters, and each client's step count ``step`` ``(k,)`` (float64)."""

    tensors: dict[str, list[torch.Tensor]]
    step: torch.Tensor

    @classmethod
    def load(
        cls,
        recipe: TrainRecipe,
        params: Sequence[torch.Tensor],
        clients: Optional[Sequence[Optional[ClientState]]] = None,
    ) -> "OptState":
        """Zero state for ``params`` (``(k, ...)`` tensors); client ``j`` starts from
        ``clients[j]`` when that is given and not None."""
        k = params[0].shape[0]
        tensors = {key: [torch.zeros_like(p, requires_grad=False) for p in params] for key in state_keys(recipe)}
        step = torch.zeros(k, dtype=torch.float64, device=params[0].device)
        for j, saved in enumerate(clients or ()):
            if saved is None:
                continue
            step[j] = saved["step"]
            for key, ts in tensors.items():
                if key not in saved:  # saved by another optimizer (e.g. an attacker's own recipe): fresh
                    continue
                off = 0
                for t in ts:
                    n = t[j].numel()
                    t[j].copy_(saved[key][off : off + n].view_as(t[j]))
                    off += n
        return cls(tensors, step)

    def client(self, j: int) -> ClientState:
        """Client ``j``'s state as flat tensors (detached copies)."""
        out = {"step": self.step[j].clone()}
        for key, ts in self.tensors.items():
            out[key] = torch.cat([t[j].reshape(-1) for t in ts]).detach().clone()
        return out


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``(k,)`` vector shaped to broadcast over ``like`` ``(k, ...)``."""
    return v.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def step_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    state: OptState,
    recipe: TrainRecipe,
    active: Optional[torch.Tensor] = None,
) -> None:
    """One in-place optimizer step of ``k`` clients on stacked ``(k, ...)`` tensors.

    ``active``: ``(k,)`` 0/1 flags, ``None`` when every client steps (the fast path: no
    masking). Inactive clients keep their parameters, state and step count.
    """
    if recipe.grad_clip is not None:
        sq = sum(g.reshape(g.shape[0], -1).pow(2).sum(-1) for g in grads)
        scale = (recipe.grad_clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        grads = [g * _col(scale, g) for g in grads]
    if recipe.optimizer == "sgd":
        _sgd(params, grads, state, recipe, active)
    else:
        _adam(params, grads, state, recipe, active)
    state.step += 1.0 if active is None else active.to(state.step.dtype)


def _sgd(params, grads, state: OptState, recipe: TrainRecipe, active) -> None:
    if recipe.weight_decay:
        grads = torch._foreach_add(grads, params, alpha=recipe.weight_decay)
    if recipe.momentum:
        bufs = state.tensors["momentum_buffer"]
        if active is None:
            torch._foreach_mul_(bufs, recipe.momentum)
            torch._foreach_add_(bufs, grads)
        else:  # inactive clients keep their buffer
            for b, g in zip(bufs, grads):
                b.copy_(torch.where(_col(active, b) > 0, b * recipe.momentum + g, b))
        grads = bufs
    if active is None:
        torch._foreach_add_(params, grads, alpha=-recipe.lr)
    else:
        for p, g in zip(params, grads):
            p.sub_(_col(active, g) * (recipe.lr * g))


def _adam(params, grads, state: OptState, recipe: TrainRecipe, active) -> None:
    b1, b2 = recipe.betas
    lr, wd = recipe.lr, recipe.weight_decay
    step = state.step + (1.0 if active is None else active.to(state.step.dtype))
    s = step.clamp_min(1.0)  # an inactive client that never stepped: any finite value (masked out)
    step_size = lr / (1 - b1**s)  # float64, as PyTorch's Python-float bias corrections
    bc2_sqrt = (1 - b2**s).sqrt()
    for p, g, m, v in zip(params, grads, state.tensors["exp_avg"], state.tensors["exp_avg_sq"]):
        on = None if active is None else _col(active, p) > 0
        if wd and recipe.optimizer == "adamw":
            decayed = p * (1 - lr * wd)
            p.copy_(decayed if on is None else torch.where(on, decayed, p))
        elif wd:
            g = g + wd * p
        m_new = m.lerp(g, 1 - b1)
        v_new = v * b2 + (1 - b2) * g * g
        denom = v_new.sqrt() / _col(bc2_sqrt, p) + recipe.eps
        upd = _col(step_size, p) * (m_new / denom)
        if on is None:
            m.copy_(m_new)
            v.copy_(v_new)
            p.sub_(upd)
        else:
            m.copy_(torch.where(on, m_new, m))
            v.copy_(torch.where(on, v_new, v))
            p.sub_(torch.where(on, upd, torch.zeros_like(upd)))


__all__ = ["OPTIMIZERS", "ClientState", "OptState", "state_keys", "step_"]
