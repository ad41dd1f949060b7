"""Local training of a round's clients.

Two paths with the same arithmetic:

* :func:`train_vectorized`: all clients that share a :class:`TrainRecipe` together,
  chunked over clients so memory stays bounded (:func:`auto_chunk_size`): stacked
  parameters, one autograd pass and one fused optimizer step (SGD, Adam or AdamW,
  :mod:`fedarena.core.optim`) per step for the whole chunk; the clients' forward
  passes run under ``torch.func.vmap`` (MLPs, GPU), folded into the channels
  (:class:`_FoldMode`, CNNs on CPU) or one after another (anything else), see
  :func:`auto_strategy`. Clients with different dataset sizes are handled with a
  per-sample mask (short batches) and a per-client ``active`` flag (clients with fewer
  steps stop early). Speed: ``fedarena bench`` and ``benchmarks/README.md``.
* :func:`train_sequential`: one client after another (custom recipes, models with
  buffers such as BatchNorm).

Both read the same :class:`BatchSchedule`, so for the same recipe they give the same
updates (tested in ``tests/test_local.py``). A recipe's
:class:`~fedarena.core.recipe.StepHook` runs after every step on both, sees the step's
loss (``HookStep.loss``) and may end a client's training early (``HookStep.stop``): an
attack or client-side defense that owns its loop (AutoAdapt's augmented Lagrangian,
:mod:`fedarena.attacks.autoadapt`) is a recipe plus a hook, not a second loop. On the
sequential path a recipe may also replace the per-sample loss by a loss of the whole
batch (``batch_loss``: logits, targets, the batch's positions in the client's data, the
input of a named layer) and train only some parameters (``trainable``): Chameleon's
contrastive encoder stage, then its head stage (:mod:`fedarena.attacks.chameleon`), are
two such recipes.

Every client starts from the round's global parameters (one shared set), or from its
own row of stacked initial parameters (``global_params`` with a leading axis, the row
chosen by ``owner``): that is how several runs train in one call, runs being one more
batch axis (:mod:`fedarena.run.lockstep`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from .optim import ClientState, OptState, step_
from .recipe import LossBatch, Params, TrainRecipe


@dataclass
class BatchSchedule:
    """Per-client minibatch indices for one round.

    ``batches[i]`` is a list of 1-D int arrays, indices into client ``i``'s own data;
    ``epoch_start[i][s]``: step ``s`` of client ``i`` begins a pass over its data;
    ``seeds[i]``: a seed for the client's step hook (drawn after the batches, so it does
    not change them).
    """

    batches: list[list[np.ndarray]]
    epoch_start: Optional[list[list[bool]]] = None
    seeds: Optional[list[int]] = None

    @classmethod
    def build(cls, sizes: Sequence[int], recipe: TrainRecipe, rngs: Sequence[np.random.Generator]) -> "BatchSchedule":
        out, starts, seeds = [], [], []
        for n, rng in zip(sizes, rngs):
            client: list[np.ndarray] = []
            if n == 0:  # a client without samples takes no step (its update is zero)
                pass
            elif recipe.steps is None:  # epochs: the last batch of an epoch may be short
                for _ in range(recipe.epochs):
                    perm = rng.permutation(n)
                    client += [perm[i : i + recipe.batch_size] for i in range(0, n, recipe.batch_size)]
            else:  # fixed steps: full batches drawn from consecutive permutations
                b = min(recipe.batch_size, n)
                need = recipe.steps * b
                stream = np.concatenate([rng.permutation(n) for _ in range(-(-need // n))])
                client = [stream[i * b : (i + 1) * b] for i in range(recipe.steps)]
            out.append(client)
            per_epoch = max(
                1, -(-n // max(1, recipe.batch_size if recipe.steps is None else min(recipe.batch_size, n)))
            )
            starts.append([s % per_epoch == 0 for s in range(len(client))])
            seeds.append(int(rng.integers(2**62)) if recipe.step_hook is not None else 0)
        return cls(out, starts, seeds)

    @property
    def max_steps(self) -> int:
        return max((len(c) for c in self.batches), default=0)


def _loss_fn(model: torch.nn.Module, recipe: TrainRecipe, buffers: Params):
    """The recipe's loss as a pure function of the parameters.

    Buffers (BatchNorm running statistics) are passed as an argument, not captured:
    ``torch.func.grad`` forbids in-place updates of captured tensors, while updating an
    argument is allowed (the caller passes each client's own copy).

    With ``recipe.batch_loss`` (sequential path only) the loss of the batch is that
    function's, given a :class:`~fedarena.core.recipe.LossBatch` built from ``pos`` (the
    batch's positions in the client's index) and ``client``; the features of
    ``recipe.feature_layer`` are its input, caught by a forward pre-hook for this call.
    """
    layer = model.get_submodule(recipe.feature_layer) if recipe.feature_layer is not None else None

    def loss(
        params: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        global_params: Params,
        bufs: Optional[Params] = None,
        pos: Optional[torch.Tensor] = None,
        client: int = 0,
    ):
        if recipe.batch_loss is not None:
            feats: list[torch.Tensor] = []
            handle = (
                layer.register_forward_pre_hook(lambda m, inp: feats.append(inp[0].flatten(1)))
                if layer is not None
                else None
            )
            try:
                logits = functional_call(model, (params, buffers if bufs is None else bufs), (x,))
            finally:
                if handle is not None:
                    handle.remove()
            if layer is not None and not feats:
                raise ValueError(f"feature_layer {recipe.feature_layer!r} was not called in the forward pass")
            val = recipe.batch_loss(
                LossBatch(logits, y, pos, feats[-1] if feats else None, params, global_params, client)
            )
            if recipe.extra_loss is not None:
                val = val + recipe.extra_loss(params, global_params)
            return val
        logits = functional_call(model, (params, buffers if bufs is None else bufs), (x,))
        per = recipe.loss(logits, y)
        val = (per * w).sum() / w.sum().clamp_min(1.0)
        if recipe.extra_loss is not None:
            val = val + recipe.extra_loss(params, global_params)
        return val

    return loss


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
    lens0 = [len(b) for b in schedule.batches[rows[0]]] if k else []
    if k and all([len(b) for b in schedule.batches[i]] == lens0 for i in rows):
        # common case: every client has the same batch sizes (equal dataset sizes)
        lens = np.asarray(lens0, dtype=np.int64)
        flat = np.stack([index[i][np.concatenate(schedule.batches[i])] for i in rows], axis=1)  # (total, k)
        step_of = np.repeat(np.arange(steps), lens)
        slot = np.arange(len(step_of)) - np.repeat(np.cumsum(lens) - lens, lens)
        idx[step_of, :, slot] = flat
        mask[step_of, :, slot] = 1.0
        return _Plan(idx, mask, np.ones((steps, k), dtype=np.float32), [bool(n == pad_b) for n in lens0])
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


def auto_chunk_size(num_params: int, batch_size: int, sample_numel: int, budget_bytes: float = 64e6) -> int:
    """Clients per vectorized call: as many as fit a working-set budget (default 64 MB).

    Per client a chunk holds parameters, gradients, momentum and the update row
    (``4 * d`` floats) plus inputs and activations (about ``8 * B * max(sample, 64)``
    floats). Larger chunks amortise per-step overheads, but once the chunk's working set
    leaves the last-level cache they get slower (measured on a 32 MB-L3 CPU: a 784-200-10
    MLP trains 1.5x faster in chunks of 25 than of 76 clients, a 1M-parameter MLP 1.7x
    faster in chunks of 4 than of 40), so the budget is a few times the cache, not the
    RAM. It also bounds memory: a round of 1,000 clients of a 1M-parameter model needs
    the update matrix plus this budget. Never below 1.
    """
    per_client = 4 * (4 * num_params + 8 * batch_size * max(sample_numel, 64))
    return max(1, int(budget_bytes // per_client))


class _Unsupported(Exception):
    """The model does something :class:`_FoldMode` cannot fold over clients."""


_CL = torch.channels_last
_F = torch.nn.functional
#: per-channel or elementwise functions: folding clients into channels does not change them
_FOLD_PASS = {
    _F.relu,
    torch.relu,
    torch.Tensor.relu,
    _F.relu_,
    _F.leaky_relu,
    _F.gelu,
    _F.silu,
    _F.elu,
    _F.tanh,
    _F.sigmoid,
    torch.tanh,
    torch.sigmoid,
    torch.Tensor.tanh,
    torch.Tensor.sigmoid,
    _F.max_pool2d,
    _F.avg_pool2d,
    _F.adaptive_avg_pool2d,
    _F.adaptive_max_pool2d,
    _F.max_pool1d,
    _F.avg_pool1d,
    _F.dropout,
    _F.dropout2d,
}
_FOLD_ADD = {
    torch.add,
    torch.Tensor.add,
    torch.Tensor.__add__,
    torch.Tensor.__radd__,
    torch.Tensor.add_,
    torch.Tensor.__iadd__,
}


class _FoldMode(torch.overrides.TorchFunctionMode):
    """Run a model on ``k`` clients at once by folding the clients into the channels.

    Activations are ``(B, k*C, H, W)`` (channels-last) or ``(B, k*F)``; each client's
    channels form one contiguous block. Client ``i``'s parameters are row ``i`` of
    stacked ``(k, ...)`` tensors. A convolution becomes one grouped convolution with
    ``k * groups`` groups, a linear layer one batched matrix product, GroupNorm a
    GroupNorm with ``k * groups`` groups; per-channel and elementwise functions
    (ReLU, pooling, dropout, residual sums) run unchanged. Anything else raises
    :class:`_Unsupported` (the caller then falls back to a per-client loop), so a model
    whose forward reads shapes or mixes channels is never folded silently.

    Why: with per-client weights ``vmap`` produces contiguous grouped convolutions,
    several times slower in oneDNN than dense ones; the channels-last grouped
    convolution and pooling used here run at (or above) the speed of one dense model on
    the stacked batch (``benchmarks/``).
    """

    def __init__(self, k: int, params: Sequence[torch.Tensor]):
        super().__init__()
        self.k = k
        self.param_ids = {id(p) for p in params}

    def _is_param(self, t) -> bool:
        return isinstance(t, torch.Tensor) and id(t) in self.param_ids

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        k = self.k
        if func is torch.conv2d or func is _F.conv2d:
            x, w = args[0], args[1]
            rest = list(args[3:])
            b = args[2] if len(args) > 2 else kwargs.pop("bias", None)
            groups = rest.pop(3) if len(rest) > 3 else kwargs.pop("groups", 1)
            if x.dim() != 4 or w.dim() != 5 or w.shape[0] != k or self._is_param(x):
                raise _Unsupported("conv2d")
            w2 = w.reshape(k * w.shape[1], *w.shape[2:]).contiguous(memory_format=_CL)
            b2 = None if b is None else b.reshape(-1)
            return func(x, w2, b2, *rest, groups=groups * k, **kwargs)
        if func is _F.linear:
            x, w = args[0], args[1]
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            if x.dim() != 2 or w.dim() != 3 or w.shape[0] != k or self._is_param(x):
                raise _Unsupported("linear")
            B = x.shape[0]
            xi = x.reshape(B, k, -1).transpose(0, 1)  # (k, B, I)
            wt = w.transpose(1, 2)
            out = torch.bmm(xi, wt) if b is None else torch.baddbmm(b.unsqueeze(1), xi, wt)
            return out.transpose(0, 1).reshape(B, -1)
        if func is _F.group_norm:
            x, g = args[0], args[1]
            w = args[2] if len(args) > 2 else kwargs.pop("weight", None)
            b = args[3] if len(args) > 3 else kwargs.pop("bias", None)
            eps = args[4] if len(args) > 4 else kwargs.pop("eps", 1e-5)
            return func(x, g * k, None if w is None else w.reshape(-1), None if b is None else b.reshape(-1), eps)
        if func in _FOLD_PASS:
            if any(self._is_param(a) for a in (*args, *kwargs.values())):
                raise _Unsupported(getattr(func, "__name__", str(func)))
            return func(*args, **kwargs)
        if func in _FOLD_ADD:
            tensors = [a for a in (*args[:2], kwargs.get("other")) if isinstance(a, torch.Tensor)]
            if any(self._is_param(t) for t in tensors) or len({tuple(t.shape) for t in tensors if t.dim()}) > 1:
                raise _Unsupported("add")
            return func(*args, **kwargs)
        if func in (torch.flatten, torch.Tensor.flatten):
            start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
            end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
            if start != 1 or end not in (-1, args[0].dim() - 1):
                raise _Unsupported("flatten")
            return func(*args, **kwargs)
        raise _Unsupported(getattr(func, "__qualname__", str(func)))


def _fold_inputs(xb: torch.Tensor) -> torch.Tensor:
    """``(k, B, C, ...)`` -> ``(B, k*C, ...)`` (channels-last for images)."""
    k, b = xb.shape[:2]
    x = xb.transpose(0, 1).reshape(b, k * xb.shape[2], *xb.shape[3:])
    return x.contiguous(memory_format=_CL) if x.dim() == 4 else x


def fold_logits(model: torch.nn.Module, names: Sequence[str], params: Sequence[torch.Tensor], xb: torch.Tensor):
    """Logits ``(k, B, ...)`` of ``k`` clients on their batches ``xb`` ``(k, B, ...)``."""
    k, b = xb.shape[:2]
    xf = _fold_inputs(xb)
    with _FoldMode(k, params):
        out = functional_call(model, (dict(zip(names, params)), {}), (xf,))
    if out.dim() != 2 or out.shape[1] % k:
        raise _Unsupported("output")
    return out.reshape(b, k, -1).transpose(0, 1)


_FOLD_OK: "weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, bool]]" = weakref.WeakKeyDictionary()


def fold_supported(model: torch.nn.Module, sample: torch.Tensor) -> bool:
    """Whether :class:`_FoldMode` runs this model on inputs shaped like ``sample`` (checked
    once per model and input shape on two clients against the per-client forward; cached)."""
    key = (tuple(sample.shape), sample.dtype, str(sample.device))
    cache = _FOLD_OK.setdefault(model, {})
    if key in cache:
        return cache[key]
    ok = False
    if not has_buffers(model):
        g = torch.Generator().manual_seed(0)
        params = {n: p.detach() for n, p in model.named_parameters()}
        names = list(params)
        stacked = [
            torch.stack([params[n], params[n] + 0.01 * torch.randn(params[n].shape, generator=g).to(params[n].device)])
            for n in names
        ]
        xb = sample.detach().expand(2, 2, *sample.shape).clone()
        xb[:, 1] = xb[:, 1].flip(-1)
        was_training = model.training
        model.eval()  # no dropout in the check
        try:
            with torch.no_grad():
                got = fold_logits(model, names, stacked, xb)
                want = torch.stack(
                    [
                        functional_call(model, ({n: s[i] for n, s in zip(names, stacked)}, {}), (xb[i],))
                        for i in range(2)
                    ]
                )
            ok = got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-4, atol=1e-5))
        except (_Unsupported, RuntimeError, TypeError, ValueError, IndexError):
            ok = False  # the forward cannot run folded: train this model on the loop
        finally:
            model.train(was_training)
    cache[key] = ok
    return ok


def auto_strategy(model: torch.nn.Module, device: torch.device | str, sample: Optional[torch.Tensor] = None) -> str:
    """``"fold"``, ``"loop"`` or ``"vmap"`` for :func:`train_vectorized` (deterministic, not timed).

    On CPU, ``vmap`` turns a convolution with per-client weights into a contiguous
    grouped convolution, which oneDNN runs several times slower than the dense one
    (LeNet's second convolution: 5x in the forward pass). So on CPU, convolutional
    models use ``"fold"`` (:class:`_FoldMode`) when it supports the model (checked once
    on ``sample``, one input), else ``"loop"`` (each client's forward on its own slice,
    one backward for the chunk). Everything else (MLPs, any model on GPU) uses ``"vmap"``.
    """
    conv = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
    if not conv or torch.device(device).type != "cpu":
        return "vmap"
    return "fold" if sample is not None and fold_supported(model, sample) else "loop"


class _HookRunner:
    """Runs a recipe's :class:`~fedarena.core.recipe.StepHook` for the clients ``rows`` of a
    schedule: builds its state and per-client generators once, then each step's
    :class:`~fedarena.core.recipe.HookStep`."""

    def __init__(
        self,
        recipe: TrainRecipe,
        names: list[str],
        params: list[torch.Tensor],
        schedule: BatchSchedule,
        rows: Sequence[int],
        device,
    ) -> None:
        self.hook = recipe.step_hook
        self.on = self.hook is not None
        if not self.on:
            return
        self.recipe, self.names, self.rows, self.schedule, self.device = recipe, names, list(rows), schedule, device
        self.gens = [torch.Generator().manual_seed(int(schedule.seeds[i]) if schedule.seeds else 0) for i in rows]
        with torch.no_grad():
            self.state = self.hook.init(names, [p.detach() for p in params])
        self.plain = recipe.with_(grad_clip=None)

    def __call__(
        self,
        s: int,
        params,
        grads,
        opt: OptState,
        active,
        regrad,
        batch=None,
        grad_on=None,
        loss: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Run the hook after step ``s``; returns the clients it stopped (``(k,)`` bool)."""
        from .recipe import HookStep

        starts = self.schedule.epoch_start
        first = torch.tensor(
            [bool(starts[i][s]) if starts and s < len(starts[i]) else False for i in self.rows], device=self.device
        )

        def step(g, b, act, idx):  # one more optimizer step of the tensors idx (state updated in place)
            sub = OptState({key: [ts[q] for q in idx] for key, ts in opt.tensors.items()}, opt.step.clone())
            step_([params[q] for q in idx], g, sub, self.plain, act)
            return sub.tensors.get("momentum_buffer")

        def regrad_with_grad():
            with torch.enable_grad():
                return [g.detach() for g in regrad()]

        def grad_on_with_grad(xr, yr, need_grad=True):
            with torch.enable_grad():
                losses, gs = grad_on(xr, yr, need_grad)
            return losses.detach(), None if gs is None else [g.detach() for g in gs]

        xr, yr = batch if batch is not None else (None, None)
        stop = torch.zeros(len(self.rows), dtype=torch.bool, device=self.device)
        hs = HookStep(
            self.names,
            params,
            grads,
            opt.tensors.get("momentum_buffer"),
            first,
            active,
            self.gens,
            self.state,
            regrad_with_grad,
            self.recipe,
            step,
            xr,
            yr,
            grad_on_with_grad if grad_on is not None else None,
            loss,
            stop,
        )
        with torch.no_grad():
            self.hook(hs)  # the optimizer state is updated in place
        return stop


def _refuse_sequential_only(recipe: TrainRecipe, where: str) -> None:
    if recipe.sequential_only:
        raise ValueError(
            f"{where} cannot train a recipe with batch_loss or trainable set; "
            "use train_sequential (train_clients sends such a recipe there)"
        )


def _initial_params(
    model: torch.nn.Module, global_params: Params, k: int, owner: Optional[Sequence[int]]
) -> tuple[Params, Optional[torch.Tensor]]:
    """Detached initial parameters and, when they are stacked (one row per run, the
    leading axis), the row each of the ``k`` clients starts from."""
    gp = {n: v.detach() for n, v in global_params.items()}
    shapes = {n: p.shape for n, p in model.named_parameters()}
    name, first = next(iter(gp.items()))
    if first.shape == shapes[name]:
        if owner is not None:
            raise ValueError("owner is only meaningful with stacked global_params (a leading row axis)")
        return gp, None
    if first.dim() != len(shapes[name]) + 1 or first.shape[1:] != shapes[name]:
        raise ValueError(
            f"global_params[{name!r}] must have shape {tuple(shapes[name])} or (rows, "
            f"*{tuple(shapes[name])}) (got {tuple(first.shape)})"
        )
    rows = first.shape[0]
    own = torch.arange(k) if owner is None else torch.as_tensor(np.asarray(owner), dtype=torch.long)
    if len(own) != k or (k and (int(own.min()) < 0 or int(own.max()) >= rows)):
        raise ValueError(f"owner must hold {k} row indices in 0..{rows - 1}")
    return gp, own.to(first.device)


def _chunk_rows(
    gp: Params, names: list[str], own: Optional[torch.Tensor], start: int, kc: int
) -> tuple[list[torch.Tensor], Params]:
    """Initial parameters of clients ``start .. start+kc`` (``(kc, ...)``, views or copies)
    and the global parameters their hooks see (shared, or one row per client)."""
    if own is None:
        return [gp[n].unsqueeze(0).expand(kc, *gp[n].shape) for n in names], gp
    sel = own[start : start + kc]
    rows = {n: gp[n].index_select(0, sel) for n in names}
    return [rows[n] for n in names], rows


def train_vectorized(
    model: torch.nn.Module,
    global_params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    index: Sequence[np.ndarray],
    schedule: BatchSchedule,
    recipe: TrainRecipe,
    *,
    chunk_size: Optional[int] = None,
    prepare=None,
    strategy: str = "auto",
    out: Optional[torch.Tensor] = None,
    opt_states: Optional[list[Optional[ClientState]]] = None,
    owner: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """Train ``len(index)`` clients from ``global_params``; return their updates ``(k, d)``.

    ``global_params``: one shared set (every client starts there), or stacked ``(R, ...)``
    rows with ``owner[i]`` the row client ``i`` starts from (``owner=None``: row ``i``);
    each client's update is relative to its own start.

    ``x``/``y`` is the sample store; ``index[i]`` holds the rows of client ``i``'s data in it
    (the schedule's batches index into ``index[i]``). ``prepare`` maps raw inputs to model inputs (normalisation).

    ``out``: an optional ``(k, d)`` tensor to write the updates into (e.g. the round's
    ``U``), so that a large round holds one update matrix, not two.

    ``opt_states``: each client's optimizer state (``fl.client_state=persistent``): entry
    ``i`` (None: a fresh state) is read when client ``i`` starts and replaced by its state
    at the end (:class:`~fedarena.core.optim.OptState`). ``None``: every client starts
    from a fresh state and nothing is saved.

    Clients are trained in chunks of ``chunk_size`` (``None``: :func:`auto_chunk_size`).
    Per chunk the parameters are stacked ``(k, ...)`` tensors; each step computes every
    client's loss on its own batch, then one ``autograd.grad`` of the summed losses gives
    each client its own gradient (client ``i``'s parameters only enter loss ``i``), and
    one fused optimizer step (:func:`fedarena.core.optim.step_`: SGD, Adam or AdamW)
    updates all clients. How the losses are
    computed (``strategy``):

    * ``"vmap"``: one ``torch.func.vmap`` over ``functional_call`` (MLPs; any model on GPU);
    * ``"fold"``: clients folded into the channels (:class:`_FoldMode`; CNNs on CPU);
    * ``"loop"``: one forward per client on its own parameter slice (models fold does
      not support; chunks of one client);
    * ``"auto"``: ``"loop"`` for one-client chunks, else :func:`auto_strategy`.

    The batch indices of the whole chunk are built once (:func:`_plan`). Same arithmetic as
    :func:`train_sequential` (tested). A recipe with ``batch_loss`` or ``trainable`` is
    refused (ValueError): it trains on :func:`train_sequential` only.
    """
    _refuse_sequential_only(recipe, "train_vectorized")
    k = len(index)
    gp, own = _initial_params(model, global_params, k, owner)
    names = list(gp)
    d = sum(p.numel() for p in model.parameters())
    if chunk_size is None:
        chunk_size = auto_chunk_size(d, recipe.batch_size, x[0].numel() if len(x) else 1)
    if strategy == "auto" and min(chunk_size, k) <= 1:
        strategy = "loop"  # one client per call: plain autograd, nothing to vectorize
    if strategy == "auto":
        strategy = auto_strategy(
            model, x.device, prepare(x[:1])[0] if prepare is not None and len(x) else (x[0] if len(x) else None)
        )
    if strategy not in ("vmap", "loop", "fold"):
        raise ValueError(f"strategy must be 'auto', 'vmap', 'loop' or 'fold' (got {strategy!r})")
    dtype = next(iter(global_params.values())).dtype
    if out is None:
        out = torch.empty(k, d, dtype=dtype, device=x.device)
    elif out.shape != (k, d):
        raise ValueError(f"out must have shape {(k, d)} (got {tuple(out.shape)})")
    loss = _loss_fn(model, recipe, {})
    batched_logits = vmap(lambda p, xx: functional_call(model, (p, {}), (xx,)), randomness="different")
    shared = own is None
    batched_extra = (
        vmap(recipe.extra_loss, in_dims=(0, None if shared else 0)) if recipe.extra_loss is not None else None
    )

    def batched_loss(
        params: Params, xb: torch.Tensor, yb: torch.Tensor, wb: Optional[torch.Tensor], values: Optional[list] = None
    ) -> torch.Tensor:
        """Sum over clients of :func:`_loss_fn`; the per-sample loss runs outside vmap on ``(k*B,)``.
        ``wb=None``: every client has a full batch (the mean is the sum over ``k*B`` over ``B``).
        ``values``: append each client's loss ``(k,)`` (detached) to it, for a step hook."""
        if strategy == "fold":
            logits = fold_logits(model, names, [params[n] for n in names], xb)
        else:
            logits = batched_logits(params, xb)
        kc, b = yb.shape
        per = recipe.loss(logits.reshape(kc * b, *logits.shape[2:]).contiguous(), yb.reshape(-1))
        if wb is None:
            total = per.sum() / b
        else:
            total = ((per.reshape(kc, b) * wb).sum(1) / wb.sum(1).clamp_min(1.0)).sum()
        extra = batched_extra(params, gpc) if batched_extra is not None else None
        if extra is not None:
            total = total + extra.sum()
        if values is not None:
            pv = per.detach().reshape(kc, b)
            vec = pv.mean(1) if wb is None else (pv * wb).sum(1) / wb.sum(1).clamp_min(1.0)
            values.append(vec if extra is None else vec + extra.detach())
        return total

    def gp_of(j: int) -> Params:  # the global parameters client j of the chunk sees
        return gpc if shared else {n: v[j] for n, v in gpc.items()}

    pad_b = max((len(b) for c in schedule.batches for b in c), default=1)
    with torch.enable_grad():
        for start in range(0, k, chunk_size):
            rows = list(range(start, min(k, start + chunk_size)))
            kc = len(rows)
            plan = _plan(schedule, rows, index, pad_b)
            idx_all = torch.from_numpy(plan.idx).to(x.device)
            mask_all = torch.from_numpy(plan.mask).to(x.device)
            act_all = torch.from_numpy(plan.active).to(x.device)
            init, gpc = _chunk_rows(gp, names, own, start, kc)
            if strategy in ("vmap", "fold"):
                params = [i.clone().requires_grad_(True) for i in init]
            else:  # stacked storage; each client's slice is its own leaf (no O(k^2) select-backward)
                params = [i.clone() for i in init]
                leaves = [[p[j].requires_grad_(True) for p in params] for j in range(kc)]
            state = OptState.load(recipe, params, None if opt_states is None else [opt_states[i] for i in rows])
            hook = _HookRunner(recipe, names, params, schedule, rows, x.device)
            for s in range(len(plan.full)):
                idx_t = idx_all[s].reshape(-1)  # index_select: several times faster than x[idx] for rows
                xb = xraw = x.index_select(0, idx_t).reshape(kc, pad_b, *x.shape[1:])
                if prepare is not None:
                    xb = prepare(xb)
                yb, wb = y.index_select(0, idx_t).reshape(kc, pad_b), mask_all[s]
                step_loss: Optional[torch.Tensor] = None
                if strategy in ("vmap", "fold"):
                    vals: Optional[list] = [] if hook.on else None
                    total = batched_loss(dict(zip(names, params)), xb, yb, None if plan.full[s] else wb, vals)
                    step_loss = vals[0] if vals else None
                    grads = list(torch.autograd.grad(total, params, allow_unused=True))
                    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
                else:
                    live = list(range(kc)) if plan.full[s] else np.flatnonzero(plan.active[s]).tolist()
                    per_client = [loss(dict(zip(names, leaves[j])), xb[j], yb[j], wb[j], gp_of(j)) for j in live]
                    total = sum(per_client)
                    if hook.on:
                        step_loss = torch.zeros(kc, device=x.device)
                        step_loss[live] = torch.stack(per_client).detach().to(step_loss.dtype)
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
                    step_(params, grads, state, recipe, None if plan.full[s] else act_all[s])
                if hook.on:

                    def regrad(xb=xb, yb=yb, wb=wb, s=s):
                        if strategy in ("vmap", "fold"):
                            tot = batched_loss(dict(zip(names, params)), xb, yb, None if plan.full[s] else wb)
                            gs = torch.autograd.grad(tot, params, allow_unused=True)
                            return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]
                        tot = sum(loss(dict(zip(names, leaves[j])), xb[j], yb[j], wb[j], gp_of(j)) for j in range(kc))
                        gs = torch.autograd.grad(tot, [t for j in range(kc) for t in leaves[j]], allow_unused=True)
                        nn_ = len(names)
                        return [
                            torch.stack(
                                [
                                    torch.zeros_like(p[0]) if gs[j * nn_ + q] is None else gs[j * nn_ + q]
                                    for j in range(kc)
                                ]
                            )
                            for q, p in enumerate(params)
                        ]

                    def grad_on(xr, yr, need_grad=True, wb=wb, s=s):
                        xp = prepare(xr) if prepare is not None else xr
                        if strategy in ("vmap", "fold"):
                            ps = dict(zip(names, params))
                            with torch.set_grad_enabled(need_grad):
                                logits = (
                                    fold_logits(model, names, params, xp)
                                    if strategy == "fold"
                                    else batched_logits(ps, xp)
                                )
                                b = yr.shape[1]
                                per = recipe.loss(
                                    logits.reshape(kc * b, *logits.shape[2:]).contiguous(), yr.reshape(-1)
                                ).reshape(kc, b)
                                vec = per.mean(1) if plan.full[s] else (per * wb).sum(1) / wb.sum(1).clamp_min(1.0)
                                if batched_extra is not None:
                                    vec = vec + batched_extra(ps, gpc)
                            if not need_grad:
                                return vec, None
                            gs = torch.autograd.grad(vec.sum(), params, allow_unused=True)
                            return vec, [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]
                        with torch.set_grad_enabled(need_grad):
                            vec = torch.stack(
                                [loss(dict(zip(names, leaves[j])), xp[j], yr[j], wb[j], gp_of(j)) for j in range(kc)]
                            )
                        if not need_grad:
                            return vec, None
                        gs = torch.autograd.grad(
                            vec.sum(), [t for j in range(kc) for t in leaves[j]], allow_unused=True
                        )
                        nn_ = len(names)
                        return vec, [
                            torch.stack(
                                [
                                    torch.zeros_like(p[0]) if gs[j * nn_ + q] is None else gs[j * nn_ + q]
                                    for j in range(kc)
                                ]
                            )
                            for q, p in enumerate(params)
                        ]

                    stop = hook(s, params, grads, state, act_all[s], regrad, (xraw, yb), grad_on, step_loss)
                with torch.no_grad():
                    if recipe.project is not None:
                        projected = vmap(recipe.project, in_dims=(0, None if shared else 0))(
                            {n: p.detach() for n, p in zip(names, params)}, gpc
                        )
                        for n, p in zip(names, params):
                            p.copy_(projected[n])
                if hook.on and bool(stop.any()):  # the hook ended these clients' training: no more steps
                    gone = torch.nonzero(stop).flatten()
                    act_all[s + 1 :, gone] = 0.0
                    mask_all[s + 1 :, gone] = 0.0
                    plan.active[s + 1 :, gone.cpu().numpy()] = 0.0
                    plan.full[s + 1 :] = [False] * (len(plan.full) - s - 1)
                    if not bool(act_all[s + 1 :].any()):
                        break
            with torch.no_grad():
                out[start : start + kc] = torch.cat([(p - i).reshape(kc, -1) for p, i in zip(params, init)], dim=1)
            if opt_states is not None:
                for j, i in enumerate(rows):
                    opt_states[i] = state.client(j)
    return out


def _trainable(recipe: TrainRecipe, names: list[str]) -> Optional[list[int]]:
    """Positions in ``names`` of the recipe's trainable parameters (``None``: all train)."""
    if recipe.trainable is None:
        return None
    unknown = sorted(recipe.trainable - set(names))
    if unknown:
        raise ValueError(f"recipe.trainable names parameters the model does not have: {unknown}")
    if not recipe.trainable:
        raise ValueError("recipe.trainable is empty: no parameter would train")
    return [q for q, n in enumerate(names) if n in recipe.trainable]


def _eager_grad(loss, names: list[str], tq: Optional[list[int]], with_value: bool):
    """``grad(loss)`` (or ``grad_and_value``) for one client, by plain autograd: the
    parameters enter as fresh leaves sharing their storage, and ``torch.autograd.grad``
    takes the gradient of the trainable ones (``names[q]``, ``q`` in ``tq``; all when
    ``tq`` is None). Frozen parameters enter as constants (no backward pass through them)
    and get zero gradients. The same arithmetic as ``torch.func.grad`` without its
    per-call wrapping, which costs as much as the step itself on small models (1 of 3
    on a 784-64-10 MLP at batch 16); same call signature as ``grad(loss)``."""
    train = names if tq is None else [names[q] for q in tq]

    def fn(params: Params, *args):
        leaves = {n: p.detach().requires_grad_(n in train) for n, p in params.items()}
        with torch.enable_grad():
            val = loss(leaves, *args)
            gs = torch.autograd.grad(val, [leaves[n] for n in train])
        got = dict(zip(train, gs))
        full = {n: got[n] if n in got else torch.zeros_like(params[n]) for n in names}
        return (full, val.detach()) if with_value else full

    return fn


def train_sequential(
    model: torch.nn.Module,
    global_params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    index: Sequence[np.ndarray],
    schedule: BatchSchedule,
    recipe: TrainRecipe,
    *,
    prepare=None,
    buffers: Optional[Params] = None,
    opt_states: Optional[list[Optional[ClientState]]] = None,
    params_out: Optional[list[Params]] = None,
) -> tuple[torch.Tensor, list[Params]]:
    """Same contract as :func:`train_vectorized` (``opt_states`` included), one client at a time.

    Returns the updates and each client's final buffers (BatchNorm statistics), which
    start from ``buffers`` (the global ones) for every client. ``params_out``: each
    client's final parameters are appended to it (the exact tensors the update was taken
    from, for a next trainer call that continues from there; ``global_params + row`` can
    differ from them in the last bit).

    Also the path of recipes that :func:`train_vectorized` refuses: a ``recipe.batch_loss``
    (the loss of the whole batch, from a :class:`~fedarena.core.recipe.LossBatch` holding
    the logits, targets, the batch's positions in ``index[i]``, the ``feature_layer``'s
    input and the parameters) and ``recipe.trainable`` (the other parameters frozen: their
    gradient is not taken, the optimizer step leaves them and their state unchanged, a
    frozen parameter's row entries are exactly 0).
    """
    names = list(global_params)
    rows, client_buffers = [], []
    tq = _trainable(recipe, names)
    for i in range(len(index)):
        bufs_i = {n: b.clone() for n, b in (buffers or {}).items()}
        loss_i = _loss_fn(model, recipe, {})
        # gradients of the trainable parameters (all by default); zeros for the frozen ones
        grad_fn, value_fn = _eager_grad(loss_i, names, tq, False), _eager_grad(loss_i, names, tq, True)
        step_fn = value_fn if recipe.step_hook is not None else None
        params = {n: p.detach().clone() for n, p in global_params.items()}
        views = [params[n].unsqueeze(0) for n in names]
        state = OptState.load(recipe, views, None if opt_states is None else [opt_states[i]])
        hook = _HookRunner(recipe, names, views, schedule, [i], x.device)
        for s, b in enumerate(schedule.batches[i]):
            idx_t = torch.from_numpy(index[i][b]).to(x.device)
            xb = xraw = x[idx_t]
            if prepare is not None:
                xb = prepare(xb)
            w = torch.ones(len(b), device=x.device)
            pos = (
                torch.from_numpy(np.asarray(b, dtype=np.int64)).to(x.device) if recipe.batch_loss is not None else None
            )
            if step_fn is not None:  # the same gradient, and the loss for the step hook
                grads, val = step_fn(params, xb, y[idx_t], w, global_params, bufs_i, pos, i)
            else:
                grads = grad_fn(params, xb, y[idx_t], w, global_params, bufs_i, pos, i)
            views = [params[n].unsqueeze(0) for n in names]
            g1 = [grads[n].unsqueeze(0) for n in names]
            if tq is None:
                step_(views, g1, state, recipe)  # in place, through k = 1 views
            else:  # the trainable tensors and their optimizer state only (the step count is shared)
                step_(
                    [views[q] for q in tq],
                    [g1[q] for q in tq],
                    OptState({key: [ts[q] for q in tq] for key, ts in state.tensors.items()}, state.step),
                    recipe,
                )
            if hook.on:

                def regrad(xb=xb, idx_t=idx_t, w=w, pos=pos):
                    g2 = grad_fn(params, xb, y[idx_t], w, global_params, bufs_i, pos, i)
                    return [g2[n].unsqueeze(0) for n in names]

                def grad_on(xr, yr, need_grad=True, w=w, pos=pos):
                    xp = prepare(xr[0]) if prepare is not None else xr[0]
                    if not need_grad:  # a copy of the statistics: this forward does not move them
                        val = loss_i(
                            params, xp, yr[0], w, global_params, {n_: v.clone() for n_, v in bufs_i.items()}, pos, i
                        )
                        return val.reshape(1), None
                    g2, val = value_fn(params, xp, yr[0], w, global_params, bufs_i, pos, i)
                    return val.reshape(1), [g2[n].unsqueeze(0) for n in names]

                stop = hook(
                    s,
                    views,
                    g1,
                    state,
                    torch.ones(1, device=x.device),
                    regrad,
                    (xraw.unsqueeze(0), y[idx_t].unsqueeze(0)),
                    grad_on,
                    val.detach().reshape(1),
                )
            if recipe.project is not None:
                params = recipe.project(params, global_params)
            if hook.on and bool(stop[0]):  # the hook ended this client's training
                break
        rows.append(torch.cat([(params[n] - global_params[n]).reshape(-1) for n in names]).detach())
        client_buffers.append(bufs_i)
        if params_out is not None:
            params_out.append({n: p.detach() for n, p in params.items()})
        if opt_states is not None:
            opt_states[i] = state.client(0)
    return torch.stack(rows) if rows else torch.empty(0, device=x.device), client_buffers


def minibatch_gradients(
    model: torch.nn.Module,
    global_params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    index: Sequence[np.ndarray],
    schedule: BatchSchedule,
    recipe: TrainRecipe,
    *,
    prepare=None,
    vectorized: bool = True,
    buffers: Optional[Params] = None,
    buffers_out: Optional[list[Params]] = None,
    chunk_size: Optional[int] = None,
    owner: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """FedSGD: each client's gradient on its first scheduled minibatch, ``(k, d)``.

    Weight decay, when set, is added to the gradient (``g + wd * theta``). A client
    without samples (a Dirichlet partition with ``data.min_size=0``) has no minibatch
    and contributes a zero row. On the
    per-client path each client starts from a copy of ``buffers`` (BatchNorm
    statistics); their updated copies are appended to ``buffers_out`` when given.

    Vectorized: from one shared ``global_params``, ``vmap(grad)`` over the clients in
    chunks of ``chunk_size`` (default :func:`auto_chunk_size`); from stacked ones (rows
    selected by ``owner``, one per run, as in :func:`train_vectorized`), the runs with
    equally many clients together, ``vmap`` over the runs of that ``vmap(grad)`` (each
    run's forward stays one dense product over its clients' batches).

    A recipe with ``batch_loss`` or ``trainable`` is refused (ValueError): FedSGD takes the
    plain per-sample loss of every parameter.
    """
    _refuse_sequential_only(recipe, "minibatch_gradients (FedSGD)")
    k = len(index)
    gp, own = _initial_params(model, global_params, k, owner)
    names = list(gp)
    d = sum(p.numel() for p in model.parameters())
    pad_b = max((len(c[0]) for c in schedule.batches if c), default=1)
    empty = [i for i, c in enumerate(schedule.batches) if not c]
    loss = _loss_fn(model, recipe, {})
    if vectorized and k > 0:
        if chunk_size is None:
            chunk_size = auto_chunk_size(d, recipe.batch_size, x[0].numel() if len(x) else 1)
        G = torch.empty(k, d, dtype=next(iter(gp.values())).dtype, device=x.device)
        per_client = vmap(grad(loss), in_dims=(None, 0, 0, 0, None), randomness="different")
        per_run = vmap(per_client, in_dims=(0, 0, 0, 0, 0), randomness="different")

        def batch(rows: list[int]):
            idx, mask, _ = _gather(schedule, 0, rows, index, pad_b)
            idx_t = torch.from_numpy(idx).to(x.device).reshape(-1)
            xb = x.index_select(0, idx_t).reshape(len(rows), pad_b, *x.shape[1:])
            if prepare is not None:
                xb = prepare(xb)
            return xb, y.index_select(0, idx_t).reshape(len(rows), pad_b), torch.from_numpy(mask).to(x.device)

        offsets = np.cumsum([0] + [gp[n][0].numel() if own is not None else gp[n].numel() for n in names])

        def put(rows: slice | list[int], g: Params) -> None:  # per parameter into G's columns (no k x d temporary)
            for q, n in enumerate(names):
                G[rows, offsets[q] : offsets[q + 1]] = g[n].reshape(-1, offsets[q + 1] - offsets[q])

        if own is None:  # one shared model: vmap(grad) over the clients, in chunks
            for start in range(0, k, chunk_size):
                rows = list(range(start, min(k, start + chunk_size)))
                put(slice(start, start + len(rows)), per_client(gp, *batch(rows), gp))
        else:  # runs with equally many clients: vmap over runs of vmap(grad) over their clients
            by_run: dict[int, list[int]] = {}
            for i, o in enumerate(own.tolist()):
                by_run.setdefault(o, []).append(i)
            by_count: dict[int, list[int]] = {}
            for o, rows in by_run.items():
                by_count.setdefault(len(rows), []).append(o)
            for n_, owners in by_count.items():
                per_call = max(1, 4 * chunk_size // n_)  # a client holds one row here, not four
                for i in range(0, len(owners), per_call):
                    sel = owners[i : i + per_call]
                    rows = [r for o in sel for r in by_run[o]]
                    xb, yb, wb = batch(rows)
                    sel_t = torch.tensor(sel, device=x.device)
                    p = {n: gp[n].index_select(0, sel_t) for n in names}
                    g = per_run(
                        p,
                        xb.reshape(len(sel), n_, *xb.shape[1:]),
                        yb.reshape(len(sel), n_, -1),
                        wb.reshape(len(sel), n_, -1),
                        p,
                    )
                    contiguous = rows == list(range(rows[0], rows[0] + len(rows)))
                    put(slice(rows[0], rows[0] + len(rows)) if contiguous else rows, g)
    else:
        if own is not None:
            raise ValueError("the per-client path takes one shared set of global_params")
        rows_ = []
        for i in range(k):
            if not schedule.batches[i]:
                rows_.append(torch.cat([torch.zeros_like(gp[n]).reshape(-1) for n in names]))
                continue
            b = schedule.batches[i][0]
            idx_t = torch.from_numpy(index[i][b]).to(x.device)
            xb = x[idx_t] if prepare is None else prepare(x[idx_t])
            bufs_i = {n: v.clone() for n, v in (buffers or {}).items()}
            g = grad(loss)(gp, xb, y[idx_t], torch.ones(len(b), device=x.device), gp, bufs_i)
            if buffers_out is not None:
                buffers_out.append(bufs_i)
            rows_.append(torch.cat([g[n].reshape(-1) for n in names]))
        G = torch.stack(rows_) if rows_ else torch.empty(0, d, device=x.device)
    if recipe.weight_decay:
        theta = torch.cat([gp[n].reshape(1 if own is None else gp[n].shape[0], -1) for n in names], dim=1)
        G = G + recipe.weight_decay * (theta if own is None else theta.index_select(0, own))
    if empty:
        G[empty] = 0.0
    return G.detach()


def has_buffers(model: torch.nn.Module) -> bool:
    return any(True for _ in model.buffers())


__all__ = [
    "train_clients",
    "BatchSchedule",
    "train_vectorized",
    "train_sequential",
    "minibatch_gradients",
    "auto_chunk_size",
    "auto_strategy",
    "fold_supported",
    "has_buffers",
]


def train_clients(
    model: torch.nn.Module,
    global_params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    index: Sequence[np.ndarray],
    schedule: BatchSchedule,
    recipe: TrainRecipe,
    *,
    algorithm: str,
    vectorized: bool = True,
    prepare=None,
    buffers: Optional[Params] = None,
    chunk_size: Optional[int] = None,
    opt_states: Optional[list[Optional[ClientState]]] = None,
    out: Optional[torch.Tensor] = None,
    owner: Optional[Sequence[int]] = None,
) -> tuple[torch.Tensor, list[Params]]:
    """The one dispatch of local training: FedSGD's one gradient per client
    (:func:`minibatch_gradients`), FedAvg's local steps vectorized (:func:`train_vectorized`)
    or one client after another (:func:`train_sequential`, which also returns each client's
    new BatchNorm buffers). Returns ``(rows (k, d), new buffers)``; ``out``: write the rows
    there (vectorized FedAvg only) instead of allocating them; ``owner``: with stacked
    ``global_params`` (one row per run, vectorized paths only), the row each client starts
    from (:mod:`fedarena.run.training` trains several runs as one computation). A recipe with
    ``batch_loss`` or ``trainable`` (:attr:`TrainRecipe.sequential_only`) always trains on
    the sequential path, whatever ``vectorized`` says (with ``owner``: a ValueError)."""
    new_buffers: list[Params] = []
    if recipe.sequential_only and algorithm != "fedsgd":
        if owner is not None:
            raise ValueError(
                "a recipe with batch_loss or trainable trains on the sequential path, "
                "which takes one shared set of global_params (no owner)"
            )
        vectorized = False
    if algorithm == "fedsgd":
        rows = minibatch_gradients(
            model,
            global_params,
            x,
            y,
            index,
            schedule,
            recipe,
            prepare=prepare,
            vectorized=vectorized,
            buffers=buffers,
            buffers_out=new_buffers,
            chunk_size=chunk_size,
            owner=owner,
        )
    elif vectorized:
        rows = train_vectorized(
            model,
            global_params,
            x,
            y,
            index,
            schedule,
            recipe,
            chunk_size=chunk_size,
            prepare=prepare,
            out=out,
            opt_states=opt_states,
            owner=owner,
        )
    else:
        rows, new_buffers = train_sequential(
            model, global_params, x, y, index, schedule, recipe, prepare=prepare, buffers=buffers, opt_states=opt_states
        )
    return rows, new_buffers
