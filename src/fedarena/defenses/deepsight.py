"""DeepSight: clusters of models, labelled by how homogeneous their training data looks.

Rieger, Nguyen, Miettinen, Sadeghi, "DeepSight: Mitigating Backdoor Attacks in Federated
Learning Through Deep Model Inspection", NDSS 2022, Sec. IV and Algorithm 1. Per round,
from the global model ``G`` and the local models ``W_i = G + U_i``:

* **NEUPs** (normalized energy updates, Sec. IV-B, Eq. 1-2): for each output neuron ``k``
  of the last layer, the energy ``e_ik = sum_j |dW_ikj| + |db_ik|`` (absolute updates of its
  incoming weights and bias), normalised ``c_ik = e_ik^2 / sum_k' e_ik'^2``.
* **Threshold exceedings** (Eq. 3): ``TE_i = #{k : c_ik > xi_i}``,
  ``xi_i = max(0.01, 1 / P) * max_k c_ik`` (``P`` output neurons). A model trained on
  homogeneous (backdoor) data has few labels with high energy.
* **Labels** (Algorithm 1, lines 5-8): ``TE_i <= median(TE) / 2`` -> *suspicious*.
* **DDifs** (division differences, Sec. IV-C, Eq. 4): on ``noise_samples`` random inputs
  per seed (uniform in the raw input range, one set per seed in ``seeds``),
  ``DDif_isk = mean_x p_W_i(k | x) / p_G(k | x)``.
* **Cosine distances** of the output-layer bias updates (Sec. IV-D).
* **Clustering** (Sec. IV-E): HDBSCAN (``sklearn.cluster.HDBSCAN``, ``min_cluster_size=2``,
  ``min_samples=1``, ``allow_single_cluster``) on the bias cosine distances, on the DDifs
  of each seed and on the NEUPs; the clusterings are merged through the share of
  clusterings that put two models together, ``D_ij = 1 - share_ij``, clustered once more
  with HDBSCAN. Noise points are singleton clusters.
* **Filter** (Algorithm 1, lines 13-18): a cluster is accepted when the share of its
  suspicious models is below ``tau`` (1/3); the rest are rejected.
* **Clipping** (Sec. IV-F): accepted updates are clipped to the median L2 norm of all the
  round's updates and averaged.

Per-client decision: ``Aggregate.weights`` is the accept mask. ``info["client_scores"]``:
each client's threshold exceedings. Rows holding NaN/Inf are rejected before anything
else. ``noise_samples`` defaults to 200 (the paper: 20,000), for speed on CPUs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import DEFENSES
from .base import Aggregate, Aggregator, RoundContext, nonfinite_rows
from .probe import probe_of


def last_layer_weight_bias(U: torch.Tensor, layout) -> tuple[torch.Tensor, torch.Tensor]:
    """The output layer's weight updates ``(k, P, q)`` and bias updates ``(k, P)`` of ``U``
    (a bias of zeros when the layer has none)."""
    names = layout.last_layer()
    weights = [n for n in names if n.endswith("weight")] or names[:1]
    wname = weights[0]
    shape = layout.shapes[layout.names.index(wname)]
    W = U[:, layout.slice(wname)].reshape(U.shape[0], shape[0], -1)
    bias = [n for n in names if n.endswith("bias")]
    b = U[:, layout.slice(bias[0])] if bias else torch.zeros(U.shape[0], shape[0], dtype=U.dtype, device=U.device)
    return W, b


def neups(W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """NEUPs ``(k, P)`` (Eq. 1-2) from weight updates ``(k, P, q)`` and bias updates ``(k, P)``.

    >>> neups(torch.tensor([[[1., -1.], [0., 1.]]], dtype=torch.float64), torch.tensor([[1., 0.]], dtype=torch.float64))
    tensor([[0.9000, 0.1000]], dtype=torch.float64)
    """
    e = W.abs().sum(-1) + b.abs()
    sq = e.square()
    return sq / sq.sum(-1, keepdim=True).clamp_min(1e-30)


def threshold_exceedings(c: torch.Tensor) -> torch.Tensor:
    """``(k,)`` number of NEUPs above ``max(0.01, 1/P) * max_k c_ik`` (Eq. 3).

    >>> threshold_exceedings(torch.tensor([[0.5, 0.3, 0.2, 0.0]])).tolist()
    [3]
    """
    P = c.shape[1]
    xi = max(0.01, 1.0 / P) * c.max(dim=1, keepdim=True).values
    return (c > xi).sum(1)


def suspicious_labels(te: torch.Tensor) -> torch.Tensor:
    """``(k,)`` bool: ``TE_i <= median(TE) / 2`` (Algorithm 1; the median of an even count is
    the mean of the two middle values, as NumPy's)."""
    boundary = float(np.median(te.cpu().numpy().astype(float))) / 2.0
    return te.to(torch.float64) <= boundary


def ddifs(probe, global_flat: torch.Tensor, U: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``(k, P)``: ``mean_x softmax(W_i(x))_k / softmax(G(x))_k`` over the inputs ``noise`` (Eq. 4)."""
    pg = torch.softmax(probe.logits(global_flat, noise).to(torch.float64), dim=1).clamp_min(1e-30)
    out = []
    for i in range(U.shape[0]):
        pi = torch.softmax(probe.logits(global_flat + U[i], noise).to(torch.float64), dim=1)
        out.append((pi / pg).mean(0))
    return torch.stack(out)


def _hdbscan_labels(X: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """HDBSCAN labels with noise points as their own singleton clusters."""
    from sklearn.cluster import HDBSCAN

    n = X.shape[0]
    if n < 3:
        return np.arange(n)
    labels = (
        HDBSCAN(min_cluster_size=2, min_samples=1, metric=metric, allow_single_cluster=True, copy=True)
        .fit(X)
        .labels_.copy()
    )
    noise = labels < 0
    labels[noise] = labels.max() + 1 + np.arange(int(noise.sum()))
    return labels


def merge_clusterings(labelings: Sequence[np.ndarray]) -> np.ndarray:
    """``(k, k)`` ensemble distance: 1 - the share of clusterings that put ``i`` and ``j`` together.

    >>> merge_clusterings([np.array([0, 0, 1]), np.array([0, 1, 1])]).tolist()
    [[0.0, 0.5, 1.0], [0.5, 0.0, 0.5], [1.0, 0.5, 0.0]]
    """
    same = np.mean([(lab[:, None] == lab[None, :]).astype(float) for lab in labelings], axis=0)
    return 1.0 - same


def cosine_distances(X: torch.Tensor) -> np.ndarray:
    Xn = X / torch.linalg.vector_norm(X, dim=1, keepdim=True).clamp_min(1e-30)
    return (1.0 - Xn @ Xn.T).clamp_min(0.0).cpu().numpy()


@DEFENSES.register("deepsight")
class DeepSight(Aggregator):
    """DeepSight (Rieger et al., NDSS 2022): NEUPs, threshold exceedings, DDifs, ensemble clustering, then clipping.

    Args:
        tau: a cluster is rejected when at least this share of its models is labelled suspicious.
        noise_samples: random inputs per seed for the DDifs.
        seeds: seeds of the DDif inputs (one DDif clustering per seed).
        median_clip: clip accepted updates to the median norm of the round's updates (Sec. IV-F).
            (Not ``clip``: that key switches on the clipping stage for any rule.)
    """

    def __init__(
        self,
        *,
        tau: float = 1 / 3,
        noise_samples: int = 200,
        seeds: tuple[int, ...] = (0, 1, 2),
        median_clip: bool = True,
    ):
        if not 0.0 < tau <= 1.0:
            raise ConfigError("defense.tau", f"must be in (0, 1] (got {tau})", "0 < tau <= 1, e.g. 0.333")
        if noise_samples < 1:
            raise ConfigError("defense.noise_samples", f"must be >= 1 (got {noise_samples})", ">= 1, e.g. 200")
        if not seeds:
            raise ConfigError("defense.seeds", "needs at least one seed", "a list of integers, e.g. [0, 1, 2]")
        self.tau, self.noise_samples, self.seeds, self.median_clip = (
            float(tau),
            int(noise_samples),
            tuple(seeds),
            median_clip,
        )

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        probe = probe_of(ctx, "deepsight")
        n = U.shape[0]
        bad = nonfinite_rows(U)
        accept = ~bad
        idx = torch.nonzero(~bad).flatten()
        Ug = U[idx].to(torch.float64)
        te_all = torch.zeros(n, dtype=torch.float64, device=U.device)
        susp_all = torch.ones(n, dtype=torch.bool, device=U.device)
        if len(idx) >= 2:
            W, b = last_layer_weight_bias(Ug, ctx.layout)
            c = neups(W, b)
            te = threshold_exceedings(c)
            susp = suspicious_labels(te)
            labelings = [_hdbscan_labels(cosine_distances(b), "precomputed"), _hdbscan_labels(c.cpu().numpy())]
            g = ctx.global_params.to(U.device)
            for s in self.seeds:
                gen = torch.Generator().manual_seed(int(s))
                noise = torch.rand((self.noise_samples, *probe.input_shape), generator=gen).to(U.device, U.dtype)
                labelings.append(_hdbscan_labels(ddifs(probe, g, U[idx], noise).cpu().numpy()))
            final = _hdbscan_labels(merge_clusterings(labelings), "precomputed")
            keep = torch.zeros(len(idx), dtype=torch.bool)
            for lab in np.unique(final):
                members = torch.from_numpy(final == lab)
                if float(susp.cpu()[members].double().mean()) < self.tau:
                    keep |= members
            accept = torch.zeros(n, dtype=torch.bool, device=U.device)
            accept[idx[keep.to(idx.device)]] = True
            te_all[idx] = te.to(torch.float64)
            susp_all[idx] = susp.to(susp_all.device)
        elif len(idx) == 1:
            te_all[idx] = 1.0
        rows = torch.nonzero(accept).flatten()
        if len(rows) == 0:
            update = torch.zeros(U.shape[1], dtype=U.dtype, device=U.device)
        else:
            A = U[rows]
            if self.median_clip and len(idx):
                bound = torch.linalg.vector_norm(U[idx], dim=1).median()
                A = A * torch.clamp(bound / torch.linalg.vector_norm(A, dim=1).clamp_min(1e-30), max=1.0).unsqueeze(1)
            update = A.mean(0)
        info = {
            "deepsight_accepted": float(accept.sum()),
            "deepsight_suspicious": float(susp_all[~bad].sum()),
            "client_scores": te_all,
        }
        return Aggregate(update, weights=accept, info=info)
