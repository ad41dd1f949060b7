"""Sign-agreement kernels: the sign votes of signSGD's majority vote and RLR's robust
learning rate, the AND-mask of the Invariant Aggregator (Wang et al., AISTATS 2024) and
the norm-preserving rescale of its adaptive adversary, shared by the defenses
(:mod:`fedarena.defenses.robust`, :mod:`~fedarena.defenses.rlr`,
:mod:`~fedarena.defenses.invariant`) and the attacks that target them
(:mod:`fedarena.attacks.edge_case`).
"""

from __future__ import annotations

import torch

from .robust_kernels import column_blocks

#: tolerance of the mask's threshold comparison (integer sign sums against ``tau N``)
TOL = 1e-9


def sign_votes(U: torch.Tensor) -> torch.Tensor:
    """``sum_i sign(U_{i,k})`` per coordinate, ``(d,)`` in ``U``'s dtype (integer valued,
    exact up to 2^24 rows in float32): ``sign(0) = 0``, +-Inf votes +-1 and a NaN entry
    abstains (the NaN policy of sign votes, :mod:`fedarena.core.robust_kernels`). One
    GEMV per block of columns, so the ``n x d`` sign matrix is never materialised whole."""
    ones = torch.ones(U.shape[0], dtype=U.dtype, device=U.device)
    out = torch.empty(U.shape[1], dtype=U.dtype, device=U.device)
    for cols in column_blocks(U.shape[1], 1 << 16):
        out[cols] = ones @ torch.nan_to_num_(torch.sign(U[:, cols]), nan=0.0)
    return out


def sign_consistency(U: torch.Tensor) -> torch.Tensor:
    """``|mean_i sign(U_{i,k})|`` in [0, 1] (Section 5.1)."""
    return sign_votes(U).abs() / U.shape[0]


def and_mask(U: torch.Tensor, tau: float, strict: bool = True) -> torch.Tensor:
    """The AND-mask ``1[|sum_i sign(U_{i,k})| > tau N]`` (``>=`` when ``strict=False``), as a bool ``(d,)``.

    Comparing the integer sign sum with ``tau N`` (tolerance 1e-9) keeps boundary cases
    such as ``|S| = 4`` vs ``0.2 * 20`` deterministic.
    """
    s = sign_votes(U).abs()
    thr = tau * U.shape[0]
    return s > thr + TOL if strict else s >= thr - TOL


def adaptive_rescale(g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The paper's adaptive adversary (App. C.1): zero the masked coordinates and scale the
    rest so that the norm is unchanged, ``m * g * ||g|| / ||m * g||`` (row-wise for a matrix).
    Rows with ``||m * g|| = 0`` are returned unchanged."""
    m = mask.to(g.dtype)
    mg = g * m
    full = torch.linalg.vector_norm(g, dim=-1, keepdim=True)
    kept = torch.linalg.vector_norm(mg, dim=-1, keepdim=True)
    scale = torch.where(kept > 0, full / kept.clamp_min(1e-30), torch.ones_like(kept))
    return torch.where(kept > 0, mg * scale, g)
