"""Exact and toy checks of AutoAdapt's optimiser (spec Sect. 8; claims C1-C6, C25).

Every function here uses the attack's own primitives (:func:`al_penalty`,
:func:`update_mu`, :func:`eq24_alpha`, :class:`Memory`), so the toys test the code that
runs in the federated experiments.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..attacks.autoadapt import Memory, adaptation_loss, al_penalty, eq24_alpha, penalty_sum, update_mu


def slack_identity_error(n: int = 2000, seed: int = 0) -> float:
    """C1 (App. A, Eq. 15-20): max abs difference between
    ``min_{s2 >= 0} [alpha/2 (h + s2)^2 + mu (h + s2)]`` (closed form, ``s2* = max(0, -mu/alpha - h)``)
    and ``1/(2 alpha) (max(0, mu + alpha h)^2 - mu^2)`` over random ``(h, mu >= 0, alpha > 0)``
    in float64; the grid minimum over ``s2`` is checked too (``grid_error``)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, generator=g, dtype=torch.float64) * 3
    mu = torch.rand(n, generator=g, dtype=torch.float64) * 5
    a = torch.rand(n, generator=g, dtype=torch.float64) * 10 + 1e-3
    s2 = (-mu / a - h).clamp_min(0)
    lhs = a / 2 * (h + s2) ** 2 + mu * (h + s2)
    rhs = ((mu + a * h).clamp_min(0) ** 2 - mu**2) / (2 * a)
    return float((lhs - rhs).abs().max())


def slack_grid_error(seed: int = 1) -> float:
    """The same identity against a brute-force minimum over a grid of ``s2`` (no closed form)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(40, 1, generator=g, dtype=torch.float64)
    mu = torch.rand(40, 1, generator=g, dtype=torch.float64) * 2
    a = torch.rand(40, 1, generator=g, dtype=torch.float64) * 5 + 0.5
    s2 = torch.linspace(0, 10, 100001, dtype=torch.float64).unsqueeze(0)
    lhs = (a / 2 * (h + s2) ** 2 + mu * (h + s2)).min(1).values
    rhs = (((mu + a * h).clamp_min(0) ** 2 - mu**2) / (2 * a)).squeeze(1)
    return float((lhs - rhs).abs().max())


def gradient_identity_error(seed: int = 0) -> float:
    """C2 (App. B, Eq. 23): autograd of the box-7 penalty with ``h(x) = A x + b`` against
    ``sum_j max(0, mu_j + alpha h_j) grad h_j`` (max abs difference, float64)."""
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for _ in range(20):
        A = torch.randn(6, 4, generator=g, dtype=torch.float64)
        b = torch.randn(6, generator=g, dtype=torch.float64)
        mu = torch.rand(6, generator=g, dtype=torch.float64) * torch.randint(0, 2, (6,), generator=g)
        alpha = float(torch.rand(1, generator=g)) * 10 + 0.01
        x = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
        h = A @ x + b
        al_penalty(h, mu, alpha).backward()
        expected = A.T @ (mu + alpha * h.detach()).clamp_min(0)
        worst = max(worst, float((x.grad - expected).abs().max()))
    return worst


def _box(x0: float, lr: float, steps: int, reset: str, alpha: float = 10.0) -> tuple[list[float], Memory]:
    """min (x - 3)^2 s.t. 0 <= x <= 1 (h1 = -x, h2 = x - 1): one gradient step per multiplier
    update, the attack's primitives, float64."""
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    mu = torch.zeros(2, dtype=torch.float64)
    mem = Memory()
    xs = []
    for k in range(steps):
        h = torch.stack([-x, x - 1])
        loss = (x - 3) ** 2 + al_penalty(h, mu, alpha)
        (gx,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x -= lr * gx
            hn = torch.stack([-x, x - 1])
        mu = update_mu(mu, hn, alpha, reset)
        mem.offer(x.detach().reshape(1), int((hn > 0).sum()), float(penalty_sum(hn)), k)
        xs.append(float(x.detach()))
    return xs, mem


def toy_plain_al(lr: float, steps: int = 5000) -> float:
    """C5: box 6 (no reset) converges to the KKT point x* = 1: max |x - 1| over the last 10 %."""
    xs, _ = _box(0.0, lr, steps, "never")
    tail = xs[-steps // 10 :]
    return max(abs(v - 1) for v in tail)


def toy_box7(lr: float, steps: int = 5000) -> dict[str, float]:
    """C5/C25: box 7 (reset) zig-zags around x = 1; the memory picks a feasible iterate near it."""
    xs, mem = _box(0.0, lr, steps, "always")
    tail = xs[steps // 2 :]
    best = float(mem.best)
    return {
        "min": min(tail),
        "max": max(tail),
        "feasible_share": sum(v <= 1 for v in tail) / len(tail),
        "memory_x": best,
        "memory_violations": mem.key[0],
        "memory_gap": abs(best - 1),
    }


def toy_eq2(alpha: float, lr: float = 0.01, steps: int = 20000, kind: str = "hinge-squared") -> float:
    """C5: Eq. 2 ``alpha (x - 3)^2 + (1 - alpha) max(0, x - 1)^2`` by gradient descent: the
    final x (the minimiser is ``1 + 2 alpha``: infeasible for every alpha > 0)."""
    x = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    for _ in range(steps):
        h = torch.stack([-x, x - 1])
        loss = alpha * (x - 3) ** 2 + (1 - alpha) * adaptation_loss(h, x.reshape(1), kind)
        (gx,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x -= lr * gx
    return float(x.detach())


def toy_multiscale(
    method: str,
    alpha: float = 0.5,
    lr: float = 0.01,
    steps: int = 20000,
    scales: tuple[float, float] = (10.0, 0.01),
    reset: str = "always",
) -> dict[str, float]:
    """C6: ``min |x - (3, 3)|^2`` s.t. ``s1 (x1 - 1) <= 0`` and ``s2 (x2 - 1) <= 0`` with scales
    1e3 apart, starting at the unconstrained optimum (3, 3). ``method="autoadapt"``: box 7 with alpha_al = 10 and the memory;
    ``"eq2"``: Eq. 2 with the summed squared hinge. ``reset``: the multiplier rule
    (``never``: plain AL, box 6). Returns the submitted point's constraint values."""
    s = torch.tensor(scales, dtype=torch.float64)
    x = torch.full((2,), 3.0, dtype=torch.float64, requires_grad=True)  # the unconstrained optimum
    mu = torch.zeros(2, dtype=torch.float64)
    mem = Memory()
    for k in range(steps):
        f = ((x - 3) ** 2).sum()
        h = s * (x - 1)
        loss = (
            f + al_penalty(h, mu, 10.0)
            if method == "autoadapt"
            else alpha * f + (1 - alpha) * adaptation_loss(h, x, "hinge-squared")
        )
        (gx,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x -= lr * gx
            hn = s * (x - 1)
        if method == "autoadapt":
            mu = update_mu(mu, hn, 10.0, reset)
            mem.offer(x.detach(), int((hn > 0).sum()), float(penalty_sum(hn)), k)
    final = mem.best if method == "autoadapt" else x.detach()
    h = s * (final - 1)
    return {"h_large": float(h[0]), "h_small": float(h[1]), "violations": int((h > 0).sum())}


def toy_memory_sequence() -> list[int]:
    """C25: a scripted sequence of (violations, penalty) keys; the indices the memory keeps."""
    keys = [(3, 0.5), (2, 9.0), (2, 1.0), (2, 1.0), (0, 0.3), (1, 0.0), (0, 0.3), (0, 0.4)]
    mem, kept = Memory(), []
    for i, (v, p) in enumerate(keys):
        if mem.offer(torch.tensor([float(i)]), v, p, i):
            kept.append(i)
    return kept


def eq24_checks() -> dict[str, float]:
    """C3: Eq. 24 at activation makes the penalty equal f; cap and zero-denominator cases."""
    h = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    f = 0.02
    a = eq24_alpha(f, h)
    pen = float(al_penalty(h, torch.zeros(3, dtype=torch.float64), a))
    return {
        "alpha": a,
        "penalty_minus_f": pen - f,
        "alpha_capped": eq24_alpha(100.0, h),
        "alpha_zero_denominator": eq24_alpha(1.0, -h.abs()),
    }


def reset_checks(seed: int = 0) -> dict[str, bool]:
    """C4: after any update mu_j = 0 where h_j <= 0; penalty 0 (loss = f) when all are met;
    a re-violated constraint has a positive penalty on the next step."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.zeros(4, dtype=torch.float64)
    ok_reset, ok_zero, ok_reactivate = True, True, True
    for _ in range(200):
        h = torch.randn(4, generator=g, dtype=torch.float64)
        mu = update_mu(mu, h, 5.0, "always")
        ok_reset &= bool((mu[h <= 0] == 0).all())
        if bool((h <= 0).all()):
            ok_zero &= float(al_penalty(h, mu, 5.0)) == 0.0
        h2 = h.clone()
        h2[0] = abs(float(h2[0])) + 0.1
        ok_reactivate &= float(al_penalty(h2, mu, 5.0)) > 0
    return {"reset": ok_reset, "zero_when_feasible": ok_zero, "reactivates": ok_reactivate}


def clean(v: Optional[float]) -> Optional[float]:
    return None if v is None or not math.isfinite(v) else v
