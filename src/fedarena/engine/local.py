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
    """Global sample indices ``(k, B)``, sample mask ``(k, B)``, active flags ``(k,)`` of one step."""
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


@dataclass
class _Plan:
    """A chunk's whole schedule as arrays, built once (no per-step Python work over clients).

    ``idx``/``mask``: ``(S, k, B)`` global sample indices and real-sample flags;
    ``active``: ``(S, k)``; ``full[s]``: every client takes a full batch at step ``s``.
    """

    idx: np.ndarray
    mask: np.ndarray
    active: np.ndarray
    full: list[bool]


def _plan(schedule: BatchSchedule, rows: Sequence[int], index: Sequence[np.ndarray], pad_b: int) -> _Plan:
    k = len(rows)
    steps = max((len(schedule.batches[i]) for i in rows), default=0)
    idx = np.zeros((steps, k, pad_b), dtype=np.int64)
    mask = np.zeros((steps, k, pad_b), dtype=np.float32)
    if k and all(len(schedule.batches[i]) == steps and all(len(b) == pad_b for b in schedule.batches[i]) for i in rows):
        # common case: every client takes the same number of full batches
        idx[:] = np.stack([index[i][np.stack(schedule.batches[i])] for i in rows], axis=1)
        mask[:] = 1.0
        return _Plan(idx, mask, np.ones((steps, k), dtype=np.float32), [True] * steps)
    for j, i in enumerate(rows):
        batches = schedule.batches[i]
        if not batches:
            continue
        lens = np.fromiter((len(b) for b in batches), dtype=np.int64, count=len(batches))
        flat = index[i][np.concatenate(batches)]
        step_of = np.repeat(np.arange(len(batches)), lens)
        slot = np.arange(len(flat)) - np.repeat(np.cumsum(lens) - lens, lens)
        idx[step_of, j, slot] = flat
        mask[step_of, j, slot] = 1.0
    active = (mask.sum(-1) > 0).astype(np.float32)
    full = [bool(m.all()) for m in mask]
    return _Plan(idx, mask, active, full)


def auto_chunk_size(num_params: int, batch_size: int, sample_numel: int, budget_bytes: float = 256e6) -> int:
    """Clients per vectorized call: as many as fit a working-set budget (default 256 MB).

    Per client the chunk holds parameters, gradients, momentum and the update row
    (``4 * d`` floats) plus inputs and activations (about ``8 * B * max(sample, 64)``
    floats). Large chunks amortise per-step overheads; beyond a few hundred MB they only
    add memory (the 1,000-client round of a 1M-parameter model stays within U plus this
    budget), so the budget is small on purpose. Never below 1.
    """
    per_client = 4 * (4 * num_params + 8 * batch_size * max(sample_numel, 64))
    return max(1, int(budget_bytes // per_client))


def auto_strategy(model: torch.nn.Module, device: torch.device | str) -> str:
    """``"vmap"`` or ``"loop"`` for :func:`train_vectorized` (deterministic, not timed).

    On CPU, ``vmap`` turns a convolution with per-client weights into one grouped
    convolution, which oneDNN runs several times slower than the dense one (measured in
    ``benchmarks/``: LeNet conv2 forward 5x), so convolutional models use ``"loop"``:
    each client's forward on its own slice, one backward for the whole chunk and one
    fused SGD step. Everything else (MLPs on CPU, any model on GPU) uses ``"vmap"``.
    """
    conv = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
    return "loop" if conv and torch.device(device).type == "cpu" else "vmap"


def _sgd_step_(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: Optional[list[torch.Tensor]],
               recipe: TrainRecipe, active: Optional[torch.Tensor]) -> Optional[list[torch.Tensor]]:
    """In-place :func:`_sgd_step` on stacked ``(k, ...)`` tensors (PyTorch's SGD semantics).

    ``active``: ``(k,)`` flags, ``None`` when every client steps (the fused fast path:
    a handful of ``torch._foreach_*`` calls for all parameters). Returns the momentum buffers.
    """
    lead = 1
    if recipe.grad_clip is not None:
        sq = sum(g.reshape(g.shape[0], -1).pow(2).sum(-1) for g in grads)
        scale = (recipe.grad_clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        grads = [g * scale.reshape(-1, *([1] * (g.dim() - lead))) for g in grads]
    if recipe.weight_decay:
        grads = torch._foreach_add(grads, params, alpha=recipe.weight_decay)
    if recipe.momentum:
        if bufs is None:
            new_b = [g.clone() for g in grads] if active is None else [g * a for g, a in zip(grads, _bcast(active, grads))]
        elif active is None:
            torch._foreach_mul_(bufs, recipe.momentum)
            torch._foreach_add_(bufs, grads)
            new_b = bufs
        else:  # inactive clients keep their buffer
            a = _bcast(active, grads)
            new_b = [b + ai * (b * (recipe.momentum - 1) + g) for b, g, ai in zip(bufs, grads, a)]
        grads = new_b
    else:
        new_b = None
    if active is None:
        torch._foreach_add_(params, grads, alpha=-recipe.lr)
    else:
        for p, g, ai in zip(params, grads, _bcast(active, grads)):
            p.sub_(ai * (recipe.lr * g))
    return new_b


def _bcast(active: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    return [active.reshape(-1, *([1] * (t.dim() - 1))).to(t.dtype) for t in like]


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
    strategy: str = "auto",
) -> torch.Tensor:
    """Train ``len(index)`` clients from ``global_params``; return their updates ``(k, d)``.

    ``x``/``y`` is the sample store; ``index[i]`` holds the rows of client ``i``'s data in it
    (the schedule's batches index into ``index[i]``). ``prepare`` maps raw inputs to model inputs (normalisation).

    Clients are trained in chunks of ``chunk_size`` (``None``: :func:`auto_chunk_size`).
    Per chunk the parameters are one stacked ``(k, ...)`` leaf tensor per name; each step
    computes every client's loss (``strategy="vmap"``: one ``torch.func.vmap`` over
    ``functional_call``; ``"loop"``: one forward per client on its own slice, the choice
    for convolutions on CPU, see :func:`auto_strategy`), then one ``autograd.grad`` of the
    summed losses gives each client its own gradient (client ``i``'s parameters only
    enter loss ``i``), and one fused SGD step updates all clients. The batch indices of
    the whole chunk are built once (:func:`_plan`). Same arithmetic as
    :func:`train_sequential` (tested).
    """
    k = len(index)
    names = list(global_params)
    d = sum(p.numel() for p in global_params.values())
    if chunk_size is None:
        chunk_size = auto_chunk_size(d, recipe.batch_size, x[0].numel() if len(x) else 1)
    if strategy == "auto":
        strategy = auto_strategy(model, x.device)
    if strategy not in ("vmap", "loop"):
        raise ValueError(f"strategy must be 'auto', 'vmap' or 'loop' (got {strategy!r})")
    dtype = next(iter(global_params.values())).dtype
    out = torch.empty(k, d, dtype=dtype, device=x.device)
    loss = _loss_fn(model, recipe, {})
    batched_logits = vmap(lambda p, xx: functional_call(model, (p, {}), (xx,)), randomness="different")
    batched_extra = vmap(recipe.extra_loss, in_dims=(0, None)) if recipe.extra_loss is not None else None

    def batched_loss(params: Params, xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
        """Sum over clients of :func:`_loss_fn`; the per-sample loss runs outside vmap on ``(k*B,)``."""
        logits = batched_logits(params, xb)
        kc, b = yb.shape
        per = recipe.loss(logits.reshape(kc * b, *logits.shape[2:]).contiguous(), yb.reshape(-1)).reshape(kc, b)
        val = (per * wb).sum(1) / wb.sum(1).clamp_min(1.0)
        if batched_extra is not None:
            val = val + batched_extra(params, gp)
        return val.sum()
    gp = {n: v.detach() for n, v in global_params.items()}
    pad_b = max((len(b) for c in schedule.batches for b in c), default=1)
    with torch.enable_grad():
        for start in range(0, k, chunk_size):
            rows = list(range(start, min(k, start + chunk_size)))
            kc = len(rows)
            plan = _plan(schedule, rows, index, pad_b)
            idx_all = torch.from_numpy(plan.idx).to(x.device)
            mask_all = torch.from_numpy(plan.mask).to(x.device)
            act_all = torch.from_numpy(plan.active).to(x.device)
            if strategy == "vmap":
                params = [gp[n].unsqueeze(0).expand(kc, *gp[n].shape).clone().requires_grad_(True) for n in names]
            else:  # stacked storage; each client's slice is its own leaf (no O(k^2) select-backward)
                params = [gp[n].unsqueeze(0).expand(kc, *gp[n].shape).clone() for n in names]
                leaves = [[p[j].requires_grad_(True) for p in params] for j in range(kc)]
            bufs: Optional[list[torch.Tensor]] = None
            for s in range(len(plan.full)):
                idx_t = idx_all[s]
                xb = x[idx_t]
                if prepare is not None:
                    xb = prepare(xb)
                yb, wb = y[idx_t], mask_all[s]
                if strategy == "vmap":
                    total = batched_loss(dict(zip(names, params)), xb, yb, wb)
                    grads = list(torch.autograd.grad(total, params, allow_unused=True))
                    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
                else:
                    live = list(range(kc)) if plan.full[s] else np.flatnonzero(plan.active[s]).tolist()
                    total = sum(loss(dict(zip(names, leaves[j])), xb[j], yb[j], wb[j], gp) for j in live)
                    flat_leaves = [t for j in live for t in leaves[j]]
                    g_live = torch.autograd.grad(total, flat_leaves, allow_unused=True)
                    nn_ = len(names)
                    grads = []
                    for q, p in enumerate(params):
                        gq = [g_live[i * nn_ + q] for i in range(len(live))]
                        gq = [torch.zeros_like(p[0]) if g is None else g for g in gq]
                        if len(live) == kc:
                            grads.append(torch.stack(gq))
                        else:
                            full = torch.zeros_like(p)
                            full[live] = torch.stack(gq)
                            grads.append(full)
                with torch.no_grad():
                    bufs = _sgd_step_(params, grads, bufs, recipe, None if plan.full[s] else act_all[s])
                    if recipe.project is not None:
                        projected = vmap(recipe.project, in_dims=(0, None))(
                            {n: p.detach() for n, p in zip(names, params)}, gp)
                        for n, p in zip(names, params):
                            p.copy_(projected[n])
            with torch.no_grad():
                out[start : start + kc] = torch.cat([(p - gp[n].unsqueeze(0)).reshape(kc, -1)
                                                     for n, p in zip(names, params)], dim=1)
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
    "auto_strategy",
    "has_buffers",
]
