"""FLDetector: flag clients whose updates are inconsistent with their own history.

Zhang, Cao, Jia, Gong, "FLDetector: Defending Federated Learning Against Model
Poisoning Attacks via Detecting Malicious Clients", KDD 2022 (Algorithms 1-3).

The server predicts each client's update from its previous one with a Hessian-vector
product estimated by L-BFGS from the global model's recent history (Algorithm 2),
scores the prediction error, averages the normalised errors over a window of rounds,
decides with the gap statistic whether the scores form more than one cluster
(Algorithm 3), and if so flags the cluster with the larger mean score. Flagged clients
are excluded from every later aggregation.

The history (global model and gradient differences, each client's previous update,
the score windows, the flagged clients) lives in the aggregator and is saved in
checkpoints. It holds one ``d``-vector per client seen in the previous round plus
``2 window`` ``d``-vectors.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import DEFENSES
from ._rows import nonfinite_rows_fast as nonfinite_rows
from .base import Aggregate, Aggregator, RoundContext
from ..core.robust_kernels import coordinate_median


def lbfgs_hvp(S: torch.Tensor, Y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``B v`` for the L-BFGS approximation ``B`` of the Hessian built from the ``m``
    pairs ``(s_k, y_k)`` (the columns of ``S``, ``Y``: ``d x m``, oldest first), in the
    compact form of Byrd, Nocedal & Schnabel (1994, Thm. 2.3), FLDetector's Algorithm 2::

        sigma = y_m.s_m / s_m.s_m,  A = S^T Y = L + D + R (strictly lower, diagonal, upper)
        B v = sigma v - [sigma S, Y] M^-1 [sigma S^T v; Y^T v],  M = [[sigma S^T S, L], [L^T, -D]]

    ``B`` satisfies the secant equation ``B s_m = y_m``. A singular ``M`` (collinear
    pairs) is solved in the least-squares sense.
    """
    S, Y, v = S.to(torch.float64), Y.to(torch.float64), v.to(torch.float64)
    sm, ym = S[:, -1], Y[:, -1]
    ss = float(sm @ sm)
    if ss <= 0:
        return torch.zeros_like(v)
    sigma = float(ym @ sm) / ss
    A = S.T @ Y
    L = torch.tril(A, -1)
    M = torch.cat([torch.cat([sigma * (S.T @ S), L], 1), torch.cat([L.T, -torch.diag(torch.diagonal(A))], 1)], 0)
    p = torch.cat([sigma * (S.T @ v), Y.T @ v])
    q = torch.linalg.lstsq(M, p.unsqueeze(1)).solution.squeeze(1)
    m = S.shape[1]
    return sigma * v - sigma * (S @ q[:m]) - Y @ q[m:]


def kmeans_1d(x: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Exact k-means of 1-D data by dynamic programming over the sorted values (an optimal
    clustering of points on a line is contiguous; Wang & Song, "Ckmeans.1d.dp", R Journal
    2011). Returns ``(within-cluster sum of squares, labels)``, labels in increasing
    order of the clusters' values. O(k n^2)."""
    n = len(x)
    order = np.argsort(x, kind="stable")
    xs = x[order].astype(np.float64)
    k = max(1, min(k, n))
    c1 = np.concatenate([[0.0], np.cumsum(xs)])
    c2 = np.concatenate([[0.0], np.cumsum(xs * xs)])
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    cnt = np.maximum(j - i + 1, 1)
    s1 = c1[j + 1] - c1[i]
    cost = np.where(j >= i, (c2[j + 1] - c2[i]) - s1 * s1 / cnt, np.inf)  # SSE of xs[i..j]
    D = cost[0].copy()  # one cluster over xs[0..j]
    back = [np.zeros(n, dtype=int)]
    for _ in range(1, k):
        prev = np.concatenate([[np.inf], D[:-1]])  # D over xs[0..i-1]
        tot = prev[:, None] + cost  # start the last cluster at i
        arg = np.argmin(tot, axis=0)
        D = tot[arg, np.arange(n)]
        back.append(arg)
    labels_sorted = np.zeros(n, dtype=int)
    end = n - 1
    for c in range(k - 1, -1, -1):
        start = int(back[c][end]) if c > 0 else 0
        labels_sorted[start : end + 1] = c
        end = start - 1
        if end < 0:
            break
    labels = np.empty(n, dtype=int)
    labels[order] = labels_sorted
    return float(max(D[n - 1], 0.0)), labels


def gap_statistic(x: np.ndarray, k_max: int, samples: int, rng: np.random.Generator) -> int:
    """The number of clusters by the gap statistic (Tibshirani, Walther, Hastie 2001;
    FLDetector's Algorithm 3) for 1-D scores ``x`` scaled to [0, 1], with ``samples``
    uniform reference sets: the smallest ``k`` with ``Gap(k) >= Gap(k+1) - s_{k+1}``,
    ``Gap(k) = mean_b log W*_kb - log W_k``, ``s_k = sd_b(log W*_kb) sqrt(1 + 1/B)``."""
    n = len(x)
    span = float(x.max() - x.min()) if n else 0.0
    if n < 3 or span <= 0:
        return 1
    z = (x - x.min()) / span
    k_max = max(2, min(k_max, n - 1))
    refs = rng.random((samples, n))
    tiny = 1e-300
    gaps, sds = [], []
    for k in range(1, k_max + 1):
        w = math.log(max(kmeans_1d(z, k)[0], tiny))
        ref = np.array([math.log(max(kmeans_1d(r, k)[0], tiny)) for r in refs])
        gaps.append(ref.mean() - w)
        sds.append(ref.std() * math.sqrt(1 + 1 / samples))
    for k in range(1, k_max):
        if gaps[k - 1] >= gaps[k] - sds[k]:
            return k
    return k_max


@DEFENSES.register("fldetector")
class FLDetector(Aggregator):
    """FLDetector: L-BFGS-predicted updates, windowed error scores, gap-statistic detection (Zhang et al., KDD 2022).

    Per round ``t`` (Algorithm 1), with rows read as gradients ``g = -update``:

    1. ``H v`` by L-BFGS (:func:`lbfgs_hvp`) from the last ``window`` pairs
       ``(w_k - w_{k-1}, g_k - g_{k-1})`` of the global model and the aggregated gradient;
    2. for every client that took part in round ``t - 1``: prediction
       ``g^_i = g_i^{t-1} + H (w_t - w_{t-1})``, error ``e_i = ||g^_i - g_i^t||``,
       normalised ``e_i / sum_j e_j``, appended to the client's window of ``window`` rounds;
    3. from round ``start``, when at least 3 not-yet-flagged clients of the round have a
       full window: suspicion ``s_i`` = mean of the window; the gap statistic
       (:func:`gap_statistic`, ``k_max`` clusters, ``gap_samples`` reference sets) on
       ``s``; if it finds more than one cluster, the 2-means cluster with the larger mean
       is flagged (exact 1-D 2-means);
    4. the aggregate of the accepted rows (``agg``: ``mean`` or coordinate ``median``,
       the paper pairs FLDetector with a robust rule), accepted = not flagged, finite.

    ``mode="once"`` (the paper's Algorithm 1): detection runs until it first fires; the
    clients flagged then are excluded from that round on (the paper restarts training from
    a checkpoint without them; here training goes on). ``mode="every-round"`` (FLPoison's
    convention): detection runs every round over every client with a full window, and
    only that round's flagged clients are excluded. ``weights``: the accept mask;
    ``info["client_scores"]``: ``s_i`` (NaN without a full window); ``info["flagged"]``:
    clients flagged so far. Rows holding NaN/Inf are rejected that round and leave the
    history unchanged.

    ``majority_guard=True`` (an option of fedarena, not the paper's: Algorithm 1 flags the
    cluster of larger scores whatever its size): a detection that would leave more than
    half of the round's finite rows flagged is refused; nobody is flagged that round,
    ``info["guard_refused"] = 1``, and in ``mode="once"`` detection keeps running in later
    rounds. It guards against colluders that send one consistent vector: their
    prediction errors are then the smallest, and the paper's rule flags the benign
    majority. Default ``False`` (the paper's behaviour).
    """

    def __init__(
        self,
        *,
        window: int = 10,
        start: int = 0,
        agg: Literal["mean", "median"] = "mean",
        gap_samples: int = 20,
        k_max: int = 10,
        mode: Literal["once", "every-round"] = "once",
        majority_guard: bool = False,
    ):
        if not 1 <= window <= 1000:
            raise ConfigError("defense.window", f"must be in 1..1000 (got {window})", "1..1000, paper: 10")
        if start < 0:
            raise ConfigError("defense.start", f"must be >= 0 (got {start})", ">= 0")
        if agg not in ("mean", "median"):
            raise ConfigError("defense.agg", f"unknown rule {agg!r}", "mean, median")
        if not 1 <= gap_samples <= 1000:
            raise ConfigError("defense.gap_samples", f"must be in 1..1000 (got {gap_samples})", "1..1000, paper: 20")
        if not 2 <= k_max <= 100:
            raise ConfigError("defense.k_max", f"must be in 2..100 (got {k_max})", "2..100, paper: 10")
        if mode not in ("once", "every-round"):
            raise ConfigError("defense.mode", f"unknown mode {mode!r}", "once, every-round")
        self.mode, self.majority_guard = mode, bool(majority_guard)
        self.window, self.start, self.agg, self.gap_samples, self.k_max = (
            int(window),
            int(start),
            agg,
            int(gap_samples),
            int(k_max),
        )
        self.reset()

    def reset(self) -> None:
        self.w_prev: Optional[torch.Tensor] = None
        self.g_prev: Optional[torch.Tensor] = None
        self.dW: list[torch.Tensor] = []
        self.dG: list[torch.Tensor] = []
        self.last_rows: dict[int, torch.Tensor] = {}
        self.last_round: dict[int, int] = {}
        self.scores: dict[int, list[float]] = {}
        self.flagged: list[int] = []
        self.detected_round: Optional[int] = None

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        if ctx.global_params is None:
            raise ValueError("fldetector needs the global model (ctx.global_params)")
        n = U.shape[0]
        t = int(ctx.round)
        ids = [int(c) for c in ctx.client_ids.tolist()]
        if len(ids) != n:
            raise ConfigError(
                "defense.name",
                f"fldetector scores clients by their own history; a pre-stage merged {len(ids)} clients into {n} rows",
                "fldetector without defense.bucketing",
            )
        ok = ~nonfinite_rows(U)
        w_t = ctx.global_params.detach().to(torch.float64).cpu()
        G = (-U.detach()).to(torch.float64).cpu()
        # 1-2: predictions and errors
        if self.w_prev is not None and self.dW:
            Hv = lbfgs_hvp(torch.stack(self.dW, 1), torch.stack(self.dG, 1), w_t - self.w_prev)
            scored = [i for i in range(n) if bool(ok[i]) and self.last_round.get(ids[i]) == t - 1]
            if scored:
                idx = torch.tensor(scored)
                pred = torch.stack([self.last_rows[ids[i]] for i in scored]).to(torch.float64) + Hv
                err = torch.linalg.vector_norm(pred - G[idx], dim=1)
                err = err / err.sum().clamp_min(1e-300)
                for i, e in zip(scored, err.tolist()):
                    win = self.scores.setdefault(ids[i], [])
                    win.append(e)
                    del win[: -self.window]
        # 3: detection
        flagged = set(self.flagged) if self.mode == "once" else set()
        susp = torch.full((n,), math.nan, dtype=torch.float64)
        full = [i for i in range(n) if len(self.scores.get(ids[i], [])) >= self.window]
        for i in full:
            susp[i] = float(np.mean(self.scores[ids[i]]))
        cand = [i for i in full if ids[i] not in flagged and bool(ok[i])]
        k_hat, refused = None, False
        searching = self.mode == "every-round" or self.detected_round is None
        if searching and t >= self.start and len(cand) >= 3:
            s = susp[cand].numpy()
            seed = (
                int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator).item())
                if (ctx.generator is not None and ctx.generator.device.type == "cpu")
                else t
            )
            k_hat = gap_statistic(s, self.k_max, self.gap_samples, np.random.default_rng(seed))
            if k_hat > 1:
                _, labels = kmeans_1d(s, 2)  # label 1: the cluster of larger scores
                new = [ids[i] for i, lab in zip(cand, labels) if lab == 1]
                present = len(new) + sum(1 for i in range(n) if bool(ok[i]) and ids[i] in flagged)
                if self.majority_guard and 2 * present > int(ok.sum()):
                    refused, new = True, []
                if new and self.detected_round is None:
                    self.detected_round = t
                if self.mode == "once":
                    self.flagged.extend(new)
                else:
                    self.flagged = new
                flagged.update(new)
        keep = ok & torch.tensor([c not in flagged for c in ids], dtype=torch.bool, device=U.device)
        if not bool(keep.any()):
            keep = ok.clone()  # every finite client flagged: fall back to all of them
        rows = torch.nonzero(keep).flatten()
        if self.agg == "median" and rows.numel():
            update = coordinate_median(U[rows])
        else:
            update = (
                torch.full((rows.numel(),), 1.0 / max(rows.numel(), 1), dtype=U.dtype, device=U.device) @ U[rows]
                if rows.numel()
                else torch.zeros(U.shape[1], dtype=U.dtype, device=U.device)
            )
        # 6: history for the next round
        g_t = (-update.detach()).to(torch.float64).cpu()
        if self.w_prev is not None and self.g_prev is not None:
            self.dW.append((w_t - self.w_prev).to(torch.float32))
            self.dG.append((g_t - self.g_prev).to(torch.float32))
            del self.dW[: -self.window]
            del self.dG[: -self.window]
        self.w_prev, self.g_prev = w_t, g_t
        for i in range(n):
            if bool(ok[i]):
                self.last_rows[ids[i]] = G[i].to(torch.float32)
                self.last_round[ids[i]] = t
        for cid in [c for c, r in self.last_round.items() if r < t]:  # stale rows are never used again
            self.last_rows.pop(cid, None)
        info = {"accepted": int(keep.sum()), "flagged": len(self.flagged), "client_scores": susp.to(torch.float32)}
        if k_hat is not None:
            info["gap_clusters"] = k_hat
        if refused:
            info["guard_refused"] = 1
        return Aggregate(update, keep, info)
