"""The LeadFL spec's unit-level claims U1-U10 (its Sec. 5.1) as small computations.

Each ``u*`` function runs the library code on a tiny hand-made input and returns
``(ours, ok)``: the measured number and whether it matches the claim. The reproduction
(:mod:`fedarena.reproduce.leadfl`) reports them; ``tests/test_leadfl_units.py`` asserts them.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from scipy.stats import hypergeom
from torch import nn

from ..core.layout import ParamLayout
from ..core.local import BatchSchedule, train_sequential
from ..core.recipe import HookStep, TrainRecipe
from ..core.seeds import SeedStreams
from ..defenses.base import RoundContext
from ..defenses.client import LeadFLA1N, LeadFLA3, LeadFLRef, NoiseDefense, laplace
from ..defenses.robust import Krum, Median, MultiKrum, TrimmedMean
from ..run.sampling import attacker_count, draw_cohort


# ------------------------------------------------------------------ U1, U2: schedules
def u1_hypergeometric(rounds: int = 20_000, n: int = 100, m: int = 25, k: int = 10) -> tuple[dict, bool]:
    """The uniform sampler's attacker counts vs ``Hypergeom(100, 25, 10)``: P(X>=6), P(X>=5)
    (empirical and exact), the largest |z| of the empirical pmf, P(any X>=6 in 80 rounds)."""
    mal = np.arange(m)
    is_mal = np.zeros(n, dtype=bool)
    is_mal[mal] = True
    streams = SeedStreams(0)
    x = np.array(
        [int(is_mal[draw_cohort(streams.numpy("sampling", t), k, n, mal, is_mal, None)].sum()) for t in range(rounds)]
    )
    rv = hypergeom(n, m, k)
    z = max(abs(np.mean(x == j) - rv.pmf(j)) / math.sqrt(rv.pmf(j) * (1 - rv.pmf(j)) / rounds) for j in range(8))
    out = {
        "P(X>=6)": round(float(np.mean(x >= 6)), 5),
        "P(X>=6) exact": round(float(rv.sf(5)), 6),
        "P(X>=5)": round(float(np.mean(x >= 5)), 5),
        "P(X>=5) exact": round(float(rv.sf(4)), 6),
        "P(any X>=6 in 80)": round(float(1 - rv.cdf(5) ** 80), 4),
        "max |z|": round(float(z), 2),
    }
    return out, bool(z < 4.0 and abs(rv.sf(5) - 0.014493) < 5e-7)


def u2_periodic(rounds: int = 80) -> tuple[list[int], bool]:
    """S2 counts for 80 rounds (n=100, M=25, K=10)."""
    counts = [attacker_count(t, "periodic", 10, 100, 25) for t in range(rounds)]
    want = [6 if t % 10 in (0, 1) else 0 for t in range(rounds)]
    return counts[:12], counts == want


# ------------------------------------------------------------------ hook drivers
def _step(hook, names, params, grads, lr, first, regrad=None, bufs=None) -> Any:
    k = params[0].shape[0]
    recipe = TrainRecipe(lr=lr)
    gens = [torch.Generator().manual_seed(100 + j) for j in range(k)]
    if not hasattr(hook, "_state"):
        object.__setattr__(hook, "_state", hook.init(names, params))
    s = HookStep(
        names,
        params,
        grads,
        bufs,
        torch.tensor(first),
        torch.ones(k, dtype=params[0].dtype),
        gens,
        hook._state,
        regrad or (lambda: grads),
        recipe,
        None,
    )
    return hook(s)


# ------------------------------------------------------------------ U3-U5: Algorithms 1 and 3
def u3_eq6_identity(steps: int = 8, lr: float = 0.05, alpha: float = 0.4) -> tuple[float, bool]:
    """Along a trajectory of the A1N variant (Alg. 1 with Eq. 6), ``(W_i - W~ + dW_i)/lr``
    equals ``grad L(W_i) - grad L(W_{i-1}) - alpha R_{i-1}`` (float64 quadratic). Returns
    the largest absolute difference."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(20, generator=g, dtype=torch.float64) * 3
    w = torch.randn(1, 20, generator=g, dtype=torch.float64)
    hook = LeadFLA1N(alpha, q=10.0)  # q large: no clipping, R = v / ||v||
    names, hist, R_prev, err = ["weight"], [w[0].clone()], torch.zeros(20, dtype=torch.float64), 0.0
    params = [w]
    object.__setattr__(hook, "_state", hook.init(names, params))
    for i in range(steps):
        W_i = params[0][0].clone()
        grad = a * params[0]
        params[0].sub_(lr * grad)  # SGD step: W~
        W_t = params[0][0].clone()
        _step(hook, names, params, [grad], lr, [i == 0])
        R = (W_t - params[0][0]) / (lr * alpha)
        if i >= 2:
            lhs = (W_i - W_t + (W_i - hist[-2])) / lr
            rhs = a * W_i - a * hist[-2] - alpha * R_prev
            err = max(err, float((lhs - rhs).abs().max()))
        hist.append(params[0][0].clone())
        R_prev = R
    return err, err < 1e-10


def u4_a3_hessian(lr: float = 0.01) -> tuple[float, bool]:
    """A3 on ``L = 1/2 sum a w^2``: ``H~ = (g~ - g)/lr = -a g``; checked through the update
    ``W = W~ - lr alpha clamp(1 - lr H~, -q, q)`` with a large q. Returns the max error."""
    g = torch.Generator().manual_seed(1)
    a = torch.rand(1, 30, generator=g, dtype=torch.float64) * 2
    w = torch.randn(1, 30, generator=g, dtype=torch.float64)
    grad = a * w
    p = [w - lr * grad]
    W_t = p[0].clone()
    alpha, q = 0.4, 100.0
    _step(LeadFLA3(alpha, q), ["weight"], p, [grad], lr, [False], regrad=lambda: [a * p[0]])
    h_est = (W_t - p[0]) / (lr * alpha)  # = 1 - lr H~
    H = (1 - h_est) / lr
    err = float((H - (-a * grad)).abs().max())
    return err, err < 1e-9


def u5_a3_saturation(lr: float = 0.01, alpha: float = 0.4, q: float = 0.2) -> tuple[float, bool]:
    """When ``|g~ - g| < 1 - q`` everywhere A3's update is exactly ``W~ - lr alpha q``."""
    g = torch.Generator().manual_seed(2)
    w = torch.randn(2, 50, generator=g, dtype=torch.float64)
    grad = torch.randn(2, 50, generator=g, dtype=torch.float64) * 0.1
    p = [w.clone()]
    _step(LeadFLA3(alpha, q), ["weight"], p, [grad], lr, [False, True], regrad=lambda: [grad * 1.5])
    err = float((p[0] - (w - lr * alpha * q)).abs().max())
    return err, err < 1e-12


# ------------------------------------------------------------------ U6: the reference loop
def reference_leadfl_loop(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batches: list[np.ndarray],
    per_epoch: int,
    lr: float,
    momentum: float,
    alpha: float,
    q: float,
    double_task_step: bool = True,
) -> dict[str, torch.Tensor]:
    """The LeadFL authors' benign training loop (spec Sec. 2.3), written with
    ``torch.optim.SGD`` and autograd, for comparison with :class:`LeadFLRef`."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    named = dict(model.named_parameters())
    old: dict[str, torch.Tensor] = {}
    g_old: dict[str, torch.Tensor] = {}
    for j, b in enumerate(batches):
        i = j % per_epoch
        if i == 0:
            old, g_old = {}, {}
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[b]), y[b]).backward()
        opt.step()
        if i != 0:
            if not double_task_step:
                opt.zero_grad()
            reg = sum(torch.norm(p - old[n] - g_old[n] - lr) for n, p in named.items() if "weight" in n)
            (alpha * reg).backward()
            nn.utils.clip_grad_value_(model.parameters(), q)
            opt.step()
        for n, p in named.items():
            if "weight" in n:
                g_old[n] = p.grad.detach().clone()
                old[n] = p.detach().clone()
    return {n: p.detach().clone() for n, p in named.items()}


def u6_reference_code(double_task_step: bool = True) -> tuple[float, bool]:
    """:class:`LeadFLRef` on the sequential path vs :func:`reference_leadfl_loop` (MLP,
    momentum 0.1, 2 epochs of 3 batches). Returns the largest parameter difference."""
    from ..models.simple import MLP

    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(16,))
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(20, 1, 8, 8, generator=g), torch.randint(0, 10, (20,), generator=g)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    recipe = TrainRecipe(lr=0.05, momentum=0.1, batch_size=8, epochs=2, step_hook=LeadFLRef(0.4, 0.2, double_task_step))
    sched = BatchSchedule.build([20], recipe, [np.random.default_rng(0)])
    U, _ = train_sequential(model, params, x, y, [np.arange(20)], sched, recipe)
    ref = reference_leadfl_loop(model, x, y, sched.batches[0], 3, 0.05, 0.1, 0.4, 0.2, double_task_step)
    want = torch.cat([(ref[n] - params[n]).reshape(-1) for n in params])
    err = float((U[0] - want).abs().max())
    return err, err < 1e-5


# ------------------------------------------------------------------ U7: LDP and FL-WBC
def u7_noise_defenses(lr: float = 0.1, s: float = 0.2) -> tuple[str, bool]:
    """LDP adds ``lr * Laplace(0, s)`` to weights only (not biases), never on an epoch's first
    batch; FL-WBC zeroes the noise where ``|g_i - g_{i-1}| > |N|``."""
    names = ["fc.weight", "fc.bias"]
    z = lambda: [torch.zeros(1, 40), torch.zeros(1, 4)]
    ldp = NoiseDefense(s, False)
    p = z()
    _step(ldp, names, p, z(), lr, [True])
    first_ok = bool((p[0] == 0).all() and (p[1] == 0).all())
    _step(ldp, names, p, z(), lr, [False])
    want = lr * laplace((40,), s, torch.Generator().manual_seed(100))
    ldp_ok = bool(torch.equal(p[0][0], want) and (p[1] == 0).all())
    wbc = NoiseDefense(s, True)
    p = z()
    g0 = torch.zeros(1, 40)
    _step(wbc, names, p, [g0, torch.zeros(1, 4)], lr, [True])
    g1 = torch.zeros(1, 40)
    g1[0, :20] = 10.0  # large gradient change on the first half: no noise there
    _step(wbc, names, p, [g1, torch.zeros(1, 4)], lr, [False])
    noise = laplace((40,), s, torch.Generator().manual_seed(100))
    wbc_ok = bool((p[0][0, :20] == 0).all() and torch.equal(p[0][0, 20:], lr * noise[20:]))
    return f"first-batch untouched {first_ok}, LDP {ldp_ok}, FL-WBC mask {wbc_ok}", first_ok and ldp_ok and wbc_ok


# ------------------------------------------------------------------ U8, U9: aggregators
def _ctx(n: int, f: int, d: int) -> RoundContext:
    return RoundContext(
        round=0,
        layout=ParamLayout.from_params({"w": torch.zeros(d)}),
        client_ids=torch.arange(n),
        num_samples=torch.ones(n),
        f=f,
    )


def u8_aggregators() -> tuple[str, bool]:
    """The reference code's rules as configurations of ours on 10 points of a line
    (0..7 and two outliers 50, 60): Multi-Krum_ref (8 smallest incl. self, 5 selected) =
    multi-krum f=1 m=5: scores 44 (3, 4), 60 (2, 5), 92 (1, 6; tie broken by index) -> rows
    1..5, mean 3; Krum_ref (6 smallest incl. self) = krum f=3: rows 2, 3, 4 tie at 19 -> row 2;
    median_ref = the lower median 4; trimmed mean with int(0.2 n) = 2 per side -> mean(2..7) = 4.5.
    (Bulyan_ref, ranks 2-4 of 7-smallest scores, is not implemented: the standard Bulyan is.)"""
    U = torch.tensor([0.0, 1, 2, 3, 4, 5, 6, 7, 50, 60]).reshape(10, 1)
    mk = MultiKrum(m=5).aggregate(U, _ctx(10, 1, 1))
    kr = Krum().aggregate(U, _ctx(10, 3, 1))
    med = Median(even="lower").aggregate(U, _ctx(10, 0, 1)).update
    tm = TrimmedMean(trim=int(0.2 * 10)).aggregate(U, _ctx(10, 0, 1)).update
    sel = sorted(torch.nonzero(mk.weights).flatten().tolist())
    got = (
        f"multi-krum selects {sel} -> {float(mk.update):g}; krum {float(kr.update):g}; "
        f"lower median {float(med):g}; trimmed mean {float(tm):g}"
    )
    ok = (
        sel == [1, 2, 3, 4, 5]
        and float(mk.update) == 3.0
        and float(kr.update) == 2.0
        and float(med) == 4.0
        and float(tm) == 4.5
    )
    return got, ok


def u9_spike_beats_multikrum(seed: int = 0) -> tuple[int, bool]:
    """4 benign N(0, I) and 6 near-identical malicious N(3, 0.01^2) points in d = 100:
    malicious rows among Multi-Krum_ref's 5 selected (claim: >= 4)."""
    g = torch.Generator().manual_seed(seed)
    U = torch.cat([torch.randn(4, 100, generator=g), 3 + 0.01 * torch.randn(6, 100, generator=g)])
    mk = MultiKrum(m=5).aggregate(U, _ctx(10, 1, 100))
    n_mal = int(mk.weights[4:].sum())
    return n_mal, n_mal >= 4


# ------------------------------------------------------------------ U10: trigger
def u10_trigger() -> tuple[int, bool]:
    """The nine-pixel trigger changes exactly 9 pixels of a 28x28 image (6 set to 1, 3 to 0)."""
    from ..data.poison import make_trigger

    t = make_trigger("nine-pixel", (1, 28, 28))
    x = torch.full((1, 1, 28, 28), 0.5)
    changed = int((t.apply(x) != x).sum())
    return changed, changed == 9 and t.num_pixels == 9


UNITS: dict[str, Callable[[], tuple[Any, bool]]] = {
    "U1": u1_hypergeometric,
    "U2": u2_periodic,
    "U3": u3_eq6_identity,
    "U4": u4_a3_hessian,
    "U5": u5_a3_saturation,
    "U6": u6_reference_code,
    "U7": u7_noise_defenses,
    "U8": u8_aggregators,
    "U9": u9_spike_beats_multikrum,
    "U10": u10_trigger,
}

__all__ = ["UNITS", "reference_leadfl_loop"] + [f.__name__ for f in UNITS.values()]
