"""Pre-aggregation stages that compose with any aggregator.

Each stage switches on through its trigger key under ``defense.`` and reads its
parameters from ``defense.*``:

=====================  =======================================================
``defense.clip``       L2 norm bound M: server-side clipping of every row (RLR paper
                       Eq. 2), or with ``defense.clip_at=client`` projected gradient
                       descent inside every client's local training (RLR paper Sec. 4)
``defense.bucketing``  bucket size s: means of random buckets of s rows
                       (Karimireddy, He, Jaggi, ICLR 2022, Algorithm 1)
``defense.nnm``        nearest-neighbour mixing (Allouah et al., AISTATS 2023)
=====================  =======================================================

Order when several are on: clip, then nnm, then bucketing, then the aggregator.

Bucketing changes the number of rows the aggregator sees (``ceil(n/s)``); it records
the client -> row map in ``ctx.extras["row_of_client"]`` so per-client decisions can
be mapped back, and :meth:`Bucketing.rows_out` gives the row count for validation.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ..core.recipe import Params, TrainRecipe
from ..errors import ConfigError
from ..registry import STAGES
from .base import PreStage, RoundContext
from ..core.robust_kernels import zero_faulty_rows, pairwise_sq_distances, row_sq_norms, safe_row_norms


def reusable_buffer(buf: Optional[torch.Tensor], U: torch.Tensor) -> torch.Tensor:
    """An output buffer like ``U``, kept by a stage across rounds: a fresh ``(n x d)``
    allocation (page faults) costs more than clipping or mixing itself. The stage's
    output is only read within its round, before the stage runs again."""
    if buf is None or buf.shape != U.shape or buf.dtype != U.dtype or buf.device != U.device:
        return torch.empty_like(U)
    return buf


def clip_rows(U: torch.Tensor, bound: float, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Scale every row by ``min(1, bound / ||row||)`` (RLR paper Eq. 2,
    ``Delta / max(1, ||Delta|| / M)``). A huge finite row (1e30) is scaled to norm
    ``bound``; a NaN/Inf row stays non-finite (the aggregator deals with it).

    Returns ``U`` itself when no row exceeds the bound; else writes into ``out`` when
    given (same shape), else into a new tensor.
    """
    norms = safe_row_norms(U)
    over = norms > bound
    if not bool(over.any()):
        return U
    scale = torch.where(over, bound / norms, torch.ones_like(norms))
    return torch.mul(U, scale.unsqueeze(1), out=out) if out is not None else U * scale.unsqueeze(1)


def l2_ball_projection(bound: float) -> Callable[[Params, Params], Params]:
    """``(params, global_params) -> params`` projecting the update ``params - global``
    (all tensors together, one vector) onto the L2 ball of radius ``bound``.

    Pure tensor code (no ``.item()``, no data-dependent Python branch) so that it runs
    under ``torch.func.vmap`` over clients.
    """

    def project(params: Params, global_params: Params) -> Params:
        diff = {k: params[k] - global_params[k] for k in params}
        sq = sum(v.square().sum() for v in diff.values())
        scale = torch.clamp(bound / torch.sqrt(sq).clamp_min(1e-30), max=1.0)
        return {k: global_params[k] + diff[k] * scale for k in params}

    return project


@STAGES.register("clip")
class NormClip(PreStage):
    """L2 norm clipping, on the server or by client-side PGD (Ozdayi et al., AAAI 2021).

    The RLR paper's Eq. 2 and Sec. 4, bound ``clip``.

    ``clip_at="server"`` (default): every row of ``U`` is scaled by
    ``min(1, clip / ||row||)`` before aggregation. ``clip_at="client"``: every benign
    client runs projected gradient descent, its update ``w - w_global`` projected onto
    the L2 ball of radius ``clip`` after every local step (the RLR paper's experiments
    and reference code); the server then leaves ``U`` unchanged, so attackers that do
    not follow the protocol are not clipped.

    The clipped matrix lives in a buffer the stage reuses next round (copy it to keep it).
    """

    order = 10

    def __init__(self, *, clip: float, clip_at: str = "server"):
        if not clip > 0:
            raise ConfigError("defense.clip", f"must be > 0 (got {clip})", "> 0")
        if clip_at not in ("server", "client"):
            raise ConfigError("defense.clip_at", f"unknown value {clip_at!r}", "server, client")
        self.clip, self.clip_at = float(clip), clip_at
        self._buf: Optional[torch.Tensor] = None

    def __call__(self, U: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        if self.clip_at != "server":
            if ctx.extras and ctx.extras.get("algorithm") == "fedsgd":
                raise ConfigError(
                    "defense.clip_at",
                    "client-side clipping projects local SGD steps, and "
                    "fl.algorithm=fedsgd takes none (the rows are gradients)",
                    "server",
                )
            return U
        self._buf = reusable_buffer(self._buf, U)
        return clip_rows(U, self.clip, self._buf)

    def reset(self) -> None:
        self._buf = None

    def client_recipe(self, recipe: TrainRecipe) -> TrainRecipe:
        if self.clip_at != "client":
            return recipe
        mine = l2_ball_projection(self.clip)
        prior = recipe.project
        if prior is None:
            return recipe.with_(project=mine)
        return recipe.with_(project=lambda p, g: mine(prior(p, g), g))


def nearest_neighbor_mixing(U: torch.Tensor, f: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Nearest neighbour mixing (Allouah et al., "Fixing by Mixing", AISTATS 2023,
    Algorithm 1): each row is replaced by the mean of its ``n - f`` nearest rows in L2,
    itself included. Distances come from one Gram matrix and the mixing is one
    ``(n x n) @ U`` product (written into ``out`` when given). A faulty (NaN/Inf/huge)
    row is nobody's neighbour while ``n - f`` other rows remain, and is passed on
    unchanged."""
    n = U.shape[0]
    k = n - f
    sq, bad = row_sq_norms(U)
    D = pairwise_sq_distances(U, sq, bad)
    D.fill_diagonal_(-1.0)  # a row is always its own first neighbour, even among duplicates
    idx = torch.topk(D, k, dim=1, largest=False, sorted=False).indices
    W = torch.zeros(n, n, dtype=U.dtype, device=U.device).scatter_(1, idx, 1.0 / k)
    out = torch.mm(W, zero_faulty_rows(U, bad), out=out)
    if bool(bad.any()):
        out[bad] = U[bad]
    return out


@STAGES.register("nnm")
class NNM(PreStage):
    """Nearest neighbour mixing of the updates (Allouah et al., AISTATS 2023).

    Every row becomes the mean of its ``n - f`` nearest rows (itself included), ``f`` the declared
    ``defense.f``. Switch on with ``defense.nnm: true``. The mixed matrix lives in a
    buffer the stage reuses next round (copy it to keep it)."""

    order = 30

    def __init__(self, *, nnm: bool = False):
        self.nnm = nnm
        self._buf: Optional[torch.Tensor] = None

    def __call__(self, U: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        n, f = U.shape[0], int(ctx.f)
        if f >= n:
            raise ConfigError(
                "defense.f", f"nnm mixes the n - f nearest rows, needs f < n (n={n}, f={f})", f"0..{n - 1}"
            )
        self._buf = reusable_buffer(self._buf, U)
        return nearest_neighbor_mixing(U, f, self._buf)

    def reset(self) -> None:
        self._buf = None


def bucket_means(
    U: torch.Tensor, s: int, generator: torch.Generator | None = None, out: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bucketing (Karimireddy, He, Jaggi, ICLR 2022, Algorithm 1): permute the rows at
    random and average consecutive buckets of ``s`` rows (the last bucket holds the
    ``n mod s`` remaining rows when ``s`` does not divide ``n``, and is their mean).
    Returns ``(ceil(n/s) x d means, (n,) bucket of each input row)``; the means are
    written into ``out`` when given (shape ``ceil(n/s) x d``)."""
    n = U.shape[0]
    perm = torch.randperm(n, generator=generator, device="cpu").to(U.device)
    row_of = torch.empty(n, dtype=torch.long, device=U.device)
    row_of[perm] = torch.arange(n, device=U.device) // s
    nb = math.ceil(n / s)
    sums = torch.zeros(nb, U.shape[1], dtype=U.dtype, device=U.device) if out is None else out.zero_()
    sums.index_add_(0, row_of, U)
    counts = torch.bincount(row_of, minlength=nb).to(U.dtype)
    return sums.div_(counts.unsqueeze(1)), row_of


#: largest accepted bucket size (any size >= the cohort gives one bucket)
MAX_BUCKET = 10**6


@STAGES.register("bucketing")
class Bucketing(PreStage):
    """Bucketing: means of random buckets of s updates (Karimireddy et al., ICLR 2022).

    Algorithm 1 of Karimireddy, He, Jaggi: the aggregator sees the means of
    ``ceil(n/s)`` random buckets of ``s = defense.bucketing`` rows.
    The permutation comes from the round's defense generator (reproducible, and the
    same for every aggregator). ``s = 1`` leaves ``U`` unchanged. The means live in a
    buffer the stage reuses next round.

    The aggregator's per-row weights then describe buckets;
    :func:`fedarena.defenses.base.weights_per_client` (called by the pipeline) maps
    them back to clients."""

    order = 40

    def __init__(self, *, bucketing: int):
        if not 1 <= bucketing <= MAX_BUCKET:
            raise ConfigError(
                "defense.bucketing",
                f"bucket size must be in 1..{MAX_BUCKET} (got {bucketing})",
                f"1..{MAX_BUCKET} (a size >= the cohort makes one bucket)",
            )
        self.s = int(bucketing)
        self._buf: Optional[torch.Tensor] = None

    def reset(self) -> None:
        self._buf = None

    def rows_out(self, n: int) -> int:
        """Rows the aggregator receives from ``n`` clients."""
        return math.ceil(n / self.s)

    def __call__(self, U: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        if self.s == 1:
            return U
        gen = ctx.generator
        if gen is None:
            gen = torch.Generator().manual_seed(int(ctx.round))
        self._buf = reusable_buffer(self._buf, U[: self.rows_out(U.shape[0])])
        means, row_of = bucket_means(U, self.s, gen, self._buf)
        prev = ctx.extras.get("row_of_client")
        ctx.extras["row_of_client"] = row_of if prev is None else row_of[prev.to(row_of.device)]
        return means
