"""Distances between a local model and the global model, per scope: the defense metrics.

Krauß et al., "Automatic Adversarial Adaption for Stealthy Poisoning Attacks in Federated
Learning" (NDSS 2024), Sect. V: "the Cosine distance and Euclidean distance between the
local and global models ... the summed versions of these metrics, which involve
calculating the distance on a parameter basis and aggregating the results"
(``../shared/specs/autoadapt.md`` Sect. 5 and decision 2). With ``x_p``, ``g_p`` the
flattened local and global tensors of parameter ``p`` in scope ``s``:

* ``cos``: ``COS_s = sum_p (1 - <x_p, g_p> / (|x_p| |g_p|))``
* ``l2``:  ``EUC_s = sum_p |x_p - g_p|``

``flat=True`` is the non-summed reading: the scope's tensors are concatenated into one
vector and a single distance is taken.

Scopes: ``whole`` (every parameter), ``last`` (the last parameterised layer,
:meth:`ParamLayout.last_layer`) and ``layers`` (one value per layer,
:meth:`ParamLayout.layer_groups`: a model's declared ``layer_groups`` or its top-level
parameterised child modules). Buffers (BatchNorm statistics) are not parameters and are
never part of a scope.

Numerics: everything is computed in float64, and ``1 - cos`` as
``|x/|x| - g/|g||^2 / 2`` (equal in exact arithmetic, no cancellation for nearly equal
tensors). A zero-norm tensor has no direction: the cosine distance of a pair where one of
the two is zero is 1 (cosine similarity 0, as in :func:`fedarena.core.metrics.cosine_to`),
and 0 where both are zero. Gradients stay finite in every case.

One implementation serves both sides: :func:`distances` takes ``x`` of shape ``(d,)``
(one model, differentiable: the attacker's constraints) or ``(k, d)`` (the rows of a
round's models ``G + U``: defenses, logs).

>>> import torch
>>> from fedarena.core.layout import ParamLayout
>>> lay = ParamLayout.from_params({"a.w": torch.zeros(2), "b.w": torch.zeros(2)})
>>> g = torch.tensor([1., 0., 0., 2.])
>>> x = torch.tensor([0., 1., 0., 5.])
>>> distances(x, g, lay, "cos", "layers")[0].tolist()   # a: orthogonal, b: parallel
[1.0, 0.0]
>>> distances(x, g, lay, "l2", "whole")[0].tolist()     # sqrt(2) + 3
[4.414213562373095]
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from .layout import ParamLayout

Metric = Literal["cos", "l2"]
Scope = Literal["whole", "last", "layers"]
METRICS: tuple[str, ...] = ("cos", "l2")
SCOPES: tuple[str, ...] = ("whole", "last", "layers")


def scope_groups(layout: ParamLayout, scope: str) -> dict[str, list[str]]:
    """Group name -> parameter names of a scope (one group for ``whole`` and ``last``)."""
    if scope == "whole":
        return {"whole": list(layout.names)}
    if scope == "last":
        return {"last": layout.last_layer()}
    if scope == "layers":
        return layout.layer_groups()
    raise ValueError(f"unknown scope {scope!r} (valid: {', '.join(SCOPES)})")


def _cos_unit(xs: Sequence[torch.Tensor], gs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``1 - cos`` of the concatenation of ``xs`` with that of ``gs`` (stable, zero-guarded)."""
    nx = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v, dim=-1) for v in xs], -1), dim=-1)
    ng = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v, dim=-1) for v in gs], -1), dim=-1)
    one = torch.ones((), dtype=nx.dtype, device=nx.device)
    sx, sg = torch.where(nx > 0, nx, one), torch.where(ng > 0, ng, one)
    sq = sum(((xp / sx.unsqueeze(-1) - gp / sg) ** 2).sum(-1) for xp, gp in zip(xs, gs))
    d = 0.5 * sq
    zx, zg = nx == 0, ng == 0  # NaN norms are not zero: NaN propagates
    return torch.where(zx & zg, torch.zeros_like(d), torch.where(zx | zg, torch.ones_like(d), d))


def distances(
    x: torch.Tensor, g: torch.Tensor, layout: ParamLayout, metric: str, scope: str, flat: bool = False
) -> tuple[torch.Tensor, list[str]]:
    """Distance of the local model(s) ``x`` (``(d,)`` or ``(k, d)``, flat in ``layout``'s
    order) to the global model ``g`` (``(d,)``) for every group of ``scope``.

    Returns ``(values, names)``: float64 values of shape ``(G,)`` or ``(k, G)`` and the
    ``G`` group names. Differentiable in ``x``. NaN/Inf in a row give NaN/Inf values in
    that row only.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (valid: {', '.join(METRICS)})")
    groups = scope_groups(layout, scope)
    g = g.detach().to(torch.float64)
    out = []
    for names in groups.values():
        sl = [layout.slice(n) for n in names]
        xs = [x[..., s].to(torch.float64) for s in sl]
        gs = [g[s] for s in sl]
        if metric == "l2":
            per = torch.stack([torch.linalg.vector_norm(xp - gp, dim=-1) for xp, gp in zip(xs, gs)], -1)
            out.append(torch.linalg.vector_norm(per, dim=-1) if flat else per.sum(-1))
        elif flat:
            out.append(_cos_unit(xs, gs))
        else:
            out.append(sum(_cos_unit([xp], [gp]) for xp, gp in zip(xs, gs)))
    return torch.stack(out, -1), list(groups)


def metric_values(
    x: torch.Tensor, g: torch.Tensor, layout: ParamLayout, metrics: Sequence[str], scope: str, flat: bool = False
) -> tuple[torch.Tensor, list[str]]:
    """:func:`distances` for several metrics, concatenated: ``(..., len(metrics) * G)``
    values and labels ``"cos/whole"``, ``"l2/layers/conv1"``, ..."""
    vals, labels = [], []
    for m in metrics:
        v, names = distances(x, g, layout, m, scope, flat)
        vals.append(v)
        labels += [f"{m}/{scope}" if scope != "layers" else f"{m}/layers/{n}" for n in names]
    return torch.cat(vals, -1), labels


def update_metric_values(
    U: torch.Tensor,
    global_params: torch.Tensor,
    layout: ParamLayout,
    metrics: Sequence[str],
    scope: str,
    flat: bool = False,
) -> tuple[torch.Tensor, list[str]]:
    """:func:`metric_values` of the local models ``G + U_i`` of a round's update rows
    (no gradient), computed tensor by tensor so no float64 copy of ``U`` is made."""
    with torch.no_grad():
        return metric_values(_LazySum(U.detach(), global_params.detach()), global_params, layout, metrics, scope, flat)


class _LazySum:
    """The rows ``G + U_i``, sliced on demand (``x[..., sl]``) in float64."""

    def __init__(self, U: torch.Tensor, g: torch.Tensor):
        self.U, self.g = U, g

    def __getitem__(self, key):
        sl = key[-1]
        return self.U[:, sl].to(torch.float64) + self.g[sl].to(torch.float64)


def param_change_extremes(
    x: torch.Tensor, g: torch.Tensor, layout: ParamLayout, scope: str
) -> dict[str, tuple[float, float]]:
    """``min_i (x_i - g_i)`` and ``max_i (x_i - g_i)`` per group: the "minimal and maximal
    parameter changes" the paper inspects for Eq. 2 solutions (diagnostic only)."""
    out = {}
    for name, names in scope_groups(layout, scope).items():
        diff = torch.cat([(x[layout.slice(n)] - g[layout.slice(n)]).detach().reshape(-1) for n in names])
        out[name] = (float(diff.min()), float(diff.max()))
    return out
