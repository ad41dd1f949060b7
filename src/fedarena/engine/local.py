"""Local training of a round's clients.

Two paths with the same arithmetic:

* :func:`train_vectorized`: all clients that share a :class:`TrainRecipe` in one
  ``torch.func.vmap`` over ``functional_call`` + ``grad``, chunked over clients so
  memory stays bounded. Clients with different dataset sizes are handled with a
  per-sample mask (short batches) and a per-client ``active`` flag (clients with
  fewer steps stop early).
* :func:`train_sequential`: one client after another (custom recipes, models with
  buffers such as BatchNorm).

Both read the same :class:`BatchSchedule`, so for the same recipe they give the same
updates (tested in ``tests/test_local.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from .recipe import Params, TrainRecipe


@dataclass
class BatchSchedule:
    """Per-client minibatch indices for one round.

    ``batches[i]`` is a list of 1-D int arrays, indices into client ``i``'s own data.
    """

    batches: list[list[np.ndarray]]

    @classmethod
    def build(cls, sizes: Sequence[int], recipe: TrainRecipe, rngs: Sequence[np.random.Generator]) -> "BatchSchedule":
        out = []
        for n, rng in zip(sizes, rngs):
            client: list[np.ndarray] = []
            if recipe.steps is None:  # epochs: the last batch of an epoch may be short
                for _ in range(recipe.epochs):
                    perm = rng.permutation(n)
                    client += [perm[i : i + recipe.batch_size] for i in range(0, n, recipe.batch_size)]
            else:  # fixed steps: full batches drawn from consecutive permutations
                b = min(recipe.batch_size, n)
                need = recipe.steps * b
                stream = np.concatenate([rng.permutation(n) for _ in range(-(-need // n))])
                client = [stream[i * b : (i + 1) * b] for i in range(recipe.steps)]
            out.append(client)
        return cls(out)

    @property
    def max_steps(self) -> int:
        return max((len(c) for c in self.batches), default=0)


def _loss_fn(model: torch.nn.Module, recipe: TrainRecipe, buffers: Params):
    def loss(params: Params, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, global_params: Params):
        logits = functional_call(model, (params, buffers), (x,))
        per = recipe.loss(logits, y)
        val = (per * w).sum() / w.sum().clamp_min(1.0)
        if recipe.extra_loss is not None:
            val = val + recipe.extra_loss(params, global_params)
        return val

    return loss


def _sgd_step(params: Params, grads: Params, bufs: Params, recipe: TrainRecipe, active: torch.Tensor) -> tuple[Params, Params]:
    """One SGD step (PyTorch's SGD semantics), applied where ``active`` (broadcast, per client)."""
    if recipe.grad_clip is not None:
        lead = active.dim()  # 0 for one client, 1 for a batch of clients
        sq = sum(g.reshape(*g.shape[:lead], -1).pow(2).sum(-1) for g in grads.values())
        scale = (recipe.grad_clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        grads = {k: g * scale.reshape(*scale.shape, *([1] * (g.dim() - lead))) for k, g in grads.items()}
    new_p, new_b = {}, {}
    for k, p in params.items():
        g = grads[k]
        if recipe.weight_decay:
            g = g + recipe.weight_decay * p
        if recipe.momentum:
            b = bufs[k] * recipe.momentum + g if k in bufs else g
            g = b
        else:
            b = None
        a = active.reshape(*active.shape, *([1] * (p.dim() - active.dim()))).to(p.dtype)
        new_p[k] = p - a * (recipe.lr * g)
        if b is not None:
            old_b = bufs.get(k, torch.zeros_like(b))
            new_b[k] = a * b + (1 - a) * old_b
    return new_p, new_b


def _gather(schedule: BatchSchedule, step: int, rows: Sequence[int], index: Sequence[np.ndarray], pad_b: int):
    """Global sample indices ``(k, B)``, sample mask ``(k, B)``, active flags ``(k,)``."""
    k = len(rows)
    idx = np.zeros((k, pad_b), dtype=np.int64)
    mask = np.zeros((k, pad_b), dtype=np.float32)
    active = np.zeros(k, dtype=np.float32)
    for j, i in enumerate(rows):
        batches = schedule.batches[i]
        if step < len(batches):
            b = batches[step]
            idx[j, : len(b)] = index[i][b]
            mask[j, : len(b)] = 1.0
            active[j] = 1.0
    return idx, mask, active


def auto_chunk_size(num_params: int, batch_size: int, sample_numel: int, budget_bytes: float = 2e9) -> int:
    """Clients per vmap call so that params, grads, momentum and activations fit a budget."""
    per_client = 4 * (4 * num_params + 8 * batch_size * max(sample_numel, 64))
    return max(1, int(budget_bytes // per_client))


def train_vectorized(
    model: torch.nn.Module,
    global_params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    index: Sequence[np.ndarray],
    schedule: BatchSchedule,
    recipe: TrainRecipe,
    chunk_size: Optional[int] = None,
    prepare=None,
) -> torch.Tensor:
    """Train ``len(index)`` clients from ``global_params``; return their updates ``(k, d)``.

    ``x``/``y`` is the sample store; ``index[i]`` holds the rows of client ``i``'s data in it
    (the schedule's batches index into ``index[i]``). ``prepare`` maps raw inputs to model inputs (normalisation).
    """
    k = len(index)
    names = list(global_params)
    d = sum(p.numel() for p in global_params.values())
    if chunk_size is None:
        chunk_size = auto_chunk_size(d, recipe.batch_size, x[0].numel())
    out = torch.empty(k, d, dtype=next(iter(global_params.values())).dtype, device=x.device)
    loss = _loss_fn(model, recipe, {})
    grad_fn = vmap(grad(loss), in_dims=(0, 0, 0, 0, None), randomness="different")
    pad_b = max((len(b) for c in schedule.batches for b in c), default=1)
    for start in range(0, k, chunk_size):
        rows = list(range(start, min(k, start + chunk_size)))
        kc = len(rows)
        params = {n: global_params[n].detach().unsqueeze(0).expand(kc, *global_params[n].shape).clone() for n in names}
        bufs: Params = {}
        steps = max(len(schedule.batches[i]) for i in rows)
        for s in range(steps):
            idx, mask, active = _gather(schedule, s, rows, index, pad_b)
            idx_t = torch.from_numpy(idx).to(x.device)
            xb = x[idx_t]
            if prepare is not None:
                xb = prepare(xb)
            yb = y[idx_t]
            wb = torch.from_numpy(mask).to(x.device)
            act = torch.from_numpy(active).to(x.device)
            grads = grad_fn(params, xb, yb, wb, global_params)
            params, bufs = _sgd_step(params, grads, bufs, recipe, act)
            if recipe.project is not None:
                params = vmap(recipe.project, in_dims=(0, None))(params, global_params)
        flat = torch.cat([(params[n] - global_params[n].unsqueeze(0)).reshape(kc, -1) for n in names], dim=1)
        out[start : start + kc] = flat.detach()
    return out


def train_sequential(
    model: torch.nn.Module,
    global_params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    index: Sequence[np.ndarray],
    schedule: BatchSchedule,
    recipe: TrainRecipe,
    prepare=None,
    buffers: Optional[Params] = None,
) -> tuple[torch.Tensor, list[Params]]:
    """Same contract as :func:`train_vectorized`, one client at a time.

    Returns the updates and each client's final buffers (BatchNorm statistics), which
    start from ``buffers`` (the global ones) for every client.
    """
    names = list(global_params)
    rows, client_buffers = [], []
    for i in range(len(index)):
        bufs_i = {n: b.clone() for n, b in (buffers or {}).items()}
        loss = _loss_fn(model, recipe, bufs_i)
        grad_fn = grad(loss)
        params = {n: p.detach().clone() for n, p in global_params.items()}
        mom: Params = {}
        one = torch.ones((), device=x.device)
        for b in schedule.batches[i]:
            idx_t = torch.from_numpy(index[i][b]).to(x.device)
            xb = x[idx_t]
            if prepare is not None:
                xb = prepare(xb)
            w = torch.ones(len(b), device=x.device)
            grads = grad_fn(params, xb, y[idx_t], w, global_params)
            params, mom = _sgd_step(params, grads, mom, recipe, one)
            if recipe.project is not None:
                params = recipe.project(params, global_params)
        rows.append(torch.cat([(params[n] - global_params[n]).reshape(-1) for n in names]).detach())
        client_buffers.append(bufs_i)
    return torch.stack(rows) if rows else torch.empty(0), client_buffers


def minibatch_gradients(
    model: torch.nn.Module,
    global_params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    index: Sequence[np.ndarray],
    schedule: BatchSchedule,
    recipe: TrainRecipe,
    prepare=None,
    vectorized: bool = True,
) -> torch.Tensor:
    """FedSGD: each client's gradient on its first scheduled minibatch, ``(k, d)``.

    Weight decay, when set, is added to the gradient (``g + wd * theta``).
    """
    names = list(global_params)
    k = len(index)
    pad_b = max((len(c[0]) for c in schedule.batches), default=1)
    loss = _loss_fn(model, recipe, {})
    if vectorized and k > 0:
        idx, mask, _ = _gather(schedule, 0, list(range(k)), index, pad_b)
        idx_t = torch.from_numpy(idx).to(x.device)
        xb = x[idx_t] if prepare is None else prepare(x[idx_t])
        grads = vmap(grad(loss), in_dims=(None, 0, 0, 0, None), randomness="different")(
            global_params, xb, y[idx_t], torch.from_numpy(mask).to(x.device), global_params
        )
        G = torch.cat([grads[n].reshape(k, -1) for n in names], dim=1)
    else:
        rows = []
        for i in range(k):
            b = schedule.batches[i][0]
            idx_t = torch.from_numpy(index[i][b]).to(x.device)
            xb = x[idx_t] if prepare is None else prepare(x[idx_t])
            g = grad(loss)(global_params, xb, y[idx_t], torch.ones(len(b), device=x.device), global_params)
            rows.append(torch.cat([g[n].reshape(-1) for n in names]))
        G = torch.stack(rows) if rows else torch.empty(0)
    if recipe.weight_decay:
        theta = torch.cat([global_params[n].reshape(-1) for n in names])
        G = G + recipe.weight_decay * theta
    return G.detach()


def has_buffers(model: torch.nn.Module) -> bool:
    return any(True for _ in model.buffers())


__all__ = [
    "BatchSchedule",
    "train_vectorized",
    "train_sequential",
    "minibatch_gradients",
    "auto_chunk_size",
    "has_buffers",
]
