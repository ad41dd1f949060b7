"""Byzantine (model-poisoning) attacks: the malicious rows of ``U`` are crafted.

Every attack here works through :meth:`Attack.craft` on whole rows of the round's update
matrix (tensor code; no loop over coordinates) and declares what it sees:

========== ====================== ========= ======== =====================================
name       paper                  knowledge collude  trains
========== ====================== ========= ======== =====================================
alie       Baruah et al. 2019     benign    yes      no  (mean - z * std of benign rows)
ipm        Xie et al. 2020        benign    yes      no  (-epsilon * benign mean)
bit-flip   (Fall of CC, Sec. VI)  own       no       yes (negated own honest update)
gaussian   Blanchard et al. 2017  own       no       no  (N(mu, sigma^2 I) rows)
nan        fault injection        own       no       no  (NaN / Inf / 1e30 rows)
minmax     Shejwalkar & H. 2021   benign    yes      no  (mean + gamma * perturbation)
minsum     Shejwalkar & H. 2021   benign    yes      no
rop        Ozfatura et al. 2024   benign    yes      no  (relocated orthogonal perturbation)
rop-s      Ozfatura et al. 2024   benign    yes      no  (sparse ROP, Eq. 20)
========== ====================== ========= ======== =====================================

"benign" knowledge is the omniscient threat model of the Fall-of-CC paper (Sec. III-B):
the attackers see this round's benign updates (for ``fl.algorithm=fedsgd`` these are
the benign clients' momenta) and the previous aggregate (``view.prev_update``, which an
attacker can also recover from two broadcasts as ``(theta_{t-2} - theta_{t-1}) / lr``).
Colluding attackers send one identical vector. A configuration in which no cohort can
hold a benign client (every client malicious) is refused at set-up with one
``attack.num_malicious`` line. A single sampled round whose cohort happens to hold only
attackers (``fl.sampling=uniform``) leaves them nothing to estimate from: they send zero
updates that round (their rows of ``U`` stay 0) and log no diagnostics.

Per-round diagnostics (:meth:`diagnostics`, written as ``attack_<key>`` in
``rounds.jsonl``) support the Fall-of-CC reproduction: ALIE logs the cosine of its
perturbation to the previous round's (Table II); ROP logs the cosine of the crafted
vector and of the benign rows to CC's reference, the previous aggregate (Table III).
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from scipy.stats import norm as _normal

from ..core.layout import ParamLayout
from ..errors import ConfigError
from ..registry import ATTACKS
from .base import Attack, RoundView, Strength, ThreatModel

OMNISCIENT = ThreatModel(knowledge="benign", collude=True)


# ---------------------------------------------------------------- helpers
def _cos(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> float:
    """Cosine of two vectors (0 when one of them is 0), as a float."""
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    if float(na) <= eps or float(nb) <= eps:
        return 0.0
    return float((a @ b) / (na * nb))


def _mean_cos_rows(U: torch.Tensor, v: torch.Tensor, eps: float = 1e-12) -> float:
    """Mean over rows of ``U`` of cos(row, v) (rows or v of norm 0 count as 0)."""
    nv = torch.linalg.vector_norm(v)
    if float(nv) <= eps or len(U) == 0:
        return 0.0
    nu = torch.linalg.vector_norm(U, dim=1)
    cos = torch.where(nu > eps, (U @ v) / (nu.clamp_min(eps) * nv), torch.zeros_like(nu))
    return float(cos.mean())


def repeat_rows(v: torch.Tensor, m: int) -> torch.Tensor:
    """``m`` identical rows (colluding attackers send the same vector)."""
    return v.reshape(1, -1).repeat(m, 1)


def benign_rows(view: RoundView) -> Optional[torch.Tensor]:
    B = view.benign_updates
    return B if B is not None and len(B) > 0 else None


def coordinate_std(B: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise unbiased standard deviation (ddof = 1; 0 with a single row)."""
    if len(B) < 2:
        return torch.zeros_like(B[0])
    dev = B - B.mean(0)  # explicit form: several times faster than Tensor.std(dim=0) on CPU
    return ((dev * dev).sum(0) / (len(B) - 1)).sqrt()


Z_RULES = ("alie", "fall-of-cc")


def alie_z(n: int, m: int, strict: bool = True, rule: str = "fall-of-cc") -> float:
    """ALIE's z^max for ``n`` clients of which ``m`` attack; ``s = floor(n/2 + 1) - m``
    benign "supporters" are needed (Baruch et al. 2019, Sec. 4; Fall of CC, Eq. 2).

    * ``rule="alie"`` -- the ALIE paper (Baruch, Baruch & Goldberg, NeurIPS 2019,
      Algorithm 3): ``z = Phi^-1((n - s) / n)``. n = 10, m = 2: ``s = 4``,
      ``Phi^-1(0.6) = 0.2533``; n = 25, m = 5: ``s = 8``, ``Phi^-1(0.68) = 0.4677``.
    * ``rule="fall-of-cc"`` -- Fall of CC, Eq. 3 (Ozfatura et al. 2024), the share taken
      among the benign clients only: ``z = Phi^-1((n - m - s) / (n - m))``. n = 25, m = 5:
      ``Phi^-1(12/20) = 0.2533``; n = 10, m = 2: ``Phi^-1(4/8) = 0`` (the attack then
      sends the benign mean).

    The formula has no answer when the attackers are a majority (``s < 1``): ``strict``
    raises a :class:`ConfigError`; otherwise (a sampled round with many attackers) it
    uses ``s = 1``, and ``z = 0`` when no other benign client is left.

    >>> round(alie_z(25, 5), 4), round(alie_z(25, 5, rule="alie"), 4)
    (0.2533, 0.4677)
    """
    if rule not in Z_RULES:
        raise ConfigError("attack.z_rule", f"unknown rule {rule!r}", ", ".join(Z_RULES))
    if not 0 < m < n:
        raise ConfigError("attack.num_malicious", f"ALIE's z formula needs 0 < m < n (got m={m}, n={n})", f"1..{n - 1}")
    s = math.floor(n / 2 + 1) - m
    if s < 1:
        if strict:
            raise ConfigError(
                "attack.z",
                f"the ALIE formula needs fewer than half the clients malicious "
                f"(m={m} of n={n}); set attack.z explicitly",
                "a float >= 0",
            )
        s = 1
    num, den = (n - s, n) if rule == "alie" else (n - m - s, n - m)
    if num <= 0:
        return 0.0
    return float(_normal.ppf(num / den))


# ---------------------------------------------------------------- ALIE
@ATTACKS.register("alie")
class ALIE(Attack):
    """A Little Is Enough (Baruah et al., NeurIPS 2019; Fall of CC, Eqs. 2-4).

    Every attacker sends ``mean(B) - z * std(B)``, with ``B`` the round's benign updates,
    coordinate-wise mean and unbiased (ddof = 1) standard deviation (Fall of CC, A8).

    ``z``: ``None`` (default) computes z^max from the round's ``n`` clients and ``m``
    attackers with the rule ``z_rule`` (:func:`alie_z`; a round where the attackers are a
    majority uses s = 1); a number fixes it. The Fall-of-CC authors' code defaults to a
    fixed ``z = 1.2`` (``--set attack.z=1.2`` reproduces it).

    ``z_rule``: ``alie`` (default) is the ALIE paper's own rule, ``Phi^-1((n - s)/n)``
    (Baruch et al. 2019, Algorithm 3); ``fall-of-cc`` is Fall of CC's Eq. 3,
    ``Phi^-1((n - m - s)/(n - m))``. The default is the attack's own paper: Eq. 3 gives
    z = 0 whenever ``n - m = 2s`` (e.g. n = 10, m = 2, or any even n with m = 2), so ALIE
    would silently send the benign mean in common small settings; the original rule is
    positive for every m >= 2 below half of n. The Fall-of-CC reproduction sets
    ``z_rule: fall-of-cc`` to follow that paper (0.2533 at n = 25, m = 5).
    ``alternate``: flip the perturbation's sign every round (Eq. 19, Fig. 1: the
    alternating variant cannot accumulate error).

    Diagnostics: ``pert_cos_prev`` = cos(Delta_t, Delta_{t-1}) of the perturbation
    ``Delta_t = crafted - mean(B)`` (Table II), ``pert_norm``, ``z``.
    """

    threat = OMNISCIENT
    trains = False
    strength = Strength("z", 0.0, 10.0)

    def __init__(
        self, *, z: Optional[float] = None, z_rule: Literal["alie", "fall-of-cc"] = "alie", alternate: bool = False
    ):
        if z is not None and z < 0:
            raise ConfigError("attack.z", f"must be >= 0 (got {z})", "a float >= 0, or null for the paper's formula")
        if z_rule not in Z_RULES:
            raise ConfigError("attack.z_rule", f"unknown rule {z_rule!r}", ", ".join(Z_RULES))
        self.z, self.z_rule, self.alternate = z, z_rule, alternate
        self.reset()

    def reset(self) -> None:
        self._prev: Optional[torch.Tensor] = None
        self._diag: dict[str, float] = {}

    def z_for(self, n: int, m: int) -> float:
        return self.z if self.z is not None else alie_z(n, m, strict=False, rule=self.z_rule)

    def strength_value(self, view: RoundView) -> float:
        return self.z_for(view.num_clients, len(view.malicious_ids))

    def craft(self, view: RoundView) -> Optional[torch.Tensor]:
        self._diag = {}
        B = benign_rows(view)
        if B is None:
            return None
        m = len(view.malicious_ids)
        z = self.z_for(view.num_clients, m)
        sign = -1.0 if (self.alternate and view.round % 2 == 1) else 1.0
        delta = -sign * z * coordinate_std(B)
        diag = {"z": z, "pert_norm": float(torch.linalg.vector_norm(delta))}
        if self._prev is not None:
            diag["pert_cos_prev"] = _cos(delta, self._prev)
        self._prev, self._diag = delta, diag
        return repeat_rows(B.mean(0) + delta, m)

    def diagnostics(self) -> dict[str, float]:
        return dict(self._diag)


# ---------------------------------------------------------------- IPM
@ATTACKS.register("ipm")
class IPM(Attack):
    """Inner Product Manipulation (Xie, Koyejo & Gupta, UAI 2020): every attacker sends
    ``-epsilon * mean(B)``. ``epsilon = 0.2`` is the Fall-of-CC setting (Sec. VI);
    the CC reference code uses 0.1 with 11 of 25 attackers.
    """

    threat = OMNISCIENT
    trains = False
    strength = Strength("epsilon", 0.0, 10.0)

    def __init__(self, *, epsilon: float = 0.2):
        if epsilon < 0:
            raise ConfigError("attack.epsilon", f"must be >= 0 (got {epsilon})", "a float >= 0")
        self.epsilon = epsilon

    def craft(self, view: RoundView) -> Optional[torch.Tensor]:
        B = benign_rows(view)
        if B is None:
            return None
        return repeat_rows(-self.epsilon * B.mean(0), len(view.malicious_ids))


# ---------------------------------------------------------------- bit flip
@ATTACKS.register("bit-flip")
class BitFlip(Attack):
    """Bit flip (Fall of CC, Sec. VI-C; A17): each attacker computes its honest update
    on its own data and sends it negated. With ``fl.algorithm=fedsgd`` the honest row is
    the client momentum, and since momentum is linear in the gradients, negating it equals
    the authors' code (negate every gradient, then the momentum update).
    ``scale``: send ``-scale * own`` (1 = plain sign flip)."""

    threat = ThreatModel(knowledge="own", collude=False)
    trains = True
    strength = Strength("scale", 0.0, 10.0)

    def __init__(self, *, scale: float = 1.0):
        if scale <= 0:
            raise ConfigError("attack.scale", f"must be > 0 (got {scale})", "a float > 0")
        self.scale = scale

    def craft(self, view: RoundView) -> Optional[torch.Tensor]:
        return -self.scale * view.own_updates


# ---------------------------------------------------------------- Gaussian
@ATTACKS.register("gaussian")
class GaussianAttack(Attack):
    """Gaussian attack (Blanchard et al., NeurIPS 2017, Sec. 5): each attacker sends an
    independent draw from ``N(mu, sigma^2 I)`` (the attack stream's generator, so runs
    are reproducible)."""

    threat = ThreatModel(knowledge="own", collude=False)
    trains = False
    strength = Strength("sigma", 0.0, 10.0, "rms")

    def __init__(self, *, sigma: float = 1.0, mu: float = 0.0):
        if sigma < 0:
            raise ConfigError("attack.sigma", f"must be >= 0 (got {sigma})", "a float >= 0")
        self.sigma, self.mu = sigma, mu

    def craft(self, view: RoundView) -> torch.Tensor:
        m, d = len(view.malicious_ids), view.layout.dim
        noise = torch.randn(m, d, generator=view.generator, dtype=view.global_params.dtype)
        return (self.mu + self.sigma * noise).to(view.global_params.device)


# ---------------------------------------------------------------- non-finite rows
_FILL = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "large": 1e30}


@ATTACKS.register("nan")
class NonFinite(Attack):
    """Fault injection: attackers send rows filled with ``value``: ``nan`` (default),
    ``inf``, ``-inf``, ``large`` (1e30, finite but overflows sums of squares) or
    ``mixed`` (NaN, +Inf, -Inf and 1e30 in turn over the coordinates). For testing that
    robust rules neither crash nor output NaN."""

    threat = ThreatModel(knowledge="own", collude=False)
    trains = False

    def __init__(self, *, value: str = "nan"):
        if value not in (*_FILL, "mixed"):
            raise ConfigError("attack.value", f"unknown fill {value!r}", ", ".join([*_FILL, "mixed"]))
        self.value = value

    def craft(self, view: RoundView) -> torch.Tensor:
        m, d = len(view.malicious_ids), view.layout.dim
        dt, dev = view.global_params.dtype, view.global_params.device
        if self.value == "mixed":
            cycle = torch.tensor([_FILL["nan"], _FILL["inf"], _FILL["-inf"], _FILL["large"]], dtype=dt, device=dev)
            return cycle[torch.arange(d, device=dev) % 4].repeat(m, 1)
        return torch.full((m, d), _FILL[self.value], dtype=dt, device=dev)


# ---------------------------------------------------------------- Min-Max / Min-Sum
PERTURBATIONS = ("std", "unit-vector", "sign")
MIN_TOL = 1e-12  # relative bisection tolerance: below ~1e-16 float64 midpoints stop moving
MAX_SEARCH_STEPS = 200  # each of the doubling and the bisection loops ends within this many steps


def perturbation(B: torch.Tensor, kind: str) -> torch.Tensor:
    """The perturbation direction of Shejwalkar & Houmansadr (NDSS 2021, Sec. IV-A):
    ``std``: ``-std(B)``; ``unit-vector``: ``-mean/||mean||``; ``sign``: ``-sign(mean)``."""
    mu = B.mean(0)
    if kind == "std":
        return -coordinate_std(B)
    if kind == "unit-vector":
        n = torch.linalg.vector_norm(mu)
        return -mu / n if float(n) > 0 else torch.zeros_like(mu)
    if kind == "sign":
        return -torch.sign(mu)
    raise ConfigError("attack.perturbation", f"unknown perturbation {kind!r}", ", ".join(PERTURBATIONS))


class _OptimizedMean(Attack):
    """Shared part of Min-Max and Min-Sum (Shejwalkar & Houmansadr, "Manipulating the
    Byzantine: Optimizing Model Poisoning Attacks and Defenses for Federated Learning",
    NDSS 2021, Sec. IV-A, AGR-agnostic attacks).

    The attackers send ``mean(B) + gamma * p`` for the largest ``gamma >= 0`` that keeps
    a distance statistic of the crafted vector to the benign rows within the benign
    one's maximum. The constraint is a convex function of ``gamma`` that holds at 0
    (the mean lies in the benign rows' convex hull), so its feasible set is an interval
    ``[0, gamma*]``: the search doubles ``gamma_init`` until the constraint breaks (or
    ``gamma_max`` is reached), then bisects to ``tol`` (relative, >= 1e-12); both loops
    are bounded (``MAX_SEARCH_STEPS``), and ``0 < gamma_init <= gamma_max`` finite. The authors' code runs
    a similar halving search from ``gamma_init = 10`` (which caps gamma below 20).
    Distances come from one expansion per round: for ``g = mean + gamma p``,
    ``||g - b_i||^2 = a_i + 2 gamma c_i + gamma^2 ||p||^2`` with ``a_i = ||mean - b_i||^2``,
    ``c_i = <p, mean - b_i>``, so each bisection step is O(n).

    ``gamma``: a fixed gamma instead of the search (None, default: the paper's search);
    ``attack.optimize`` searches it against the defense in use instead (range 0..50 for
    the ``std`` perturbation, 0..10 benign norms for ``unit-vector``, 0..10 benign RMS
    coordinates for ``sign``).
    """

    threat = OMNISCIENT
    trains = False
    strength = Strength("gamma", 0.0, 50.0)  # per instance: depends on the perturbation

    def __init__(
        self,
        *,
        perturbation: str = "std",
        gamma_init: float = 10.0,
        tol: float = 1e-5,
        gamma_max: float = 1e6,
        gamma: Optional[float] = None,
    ):
        if perturbation not in PERTURBATIONS:
            raise ConfigError("attack.perturbation", f"unknown perturbation {perturbation!r}", ", ".join(PERTURBATIONS))
        if not 0 < gamma_max < math.inf:
            raise ConfigError("attack.gamma_max", f"must be a finite float > 0 (got {gamma_max})", "e.g. 1e6")
        if not 0 < gamma_init <= gamma_max:
            raise ConfigError(
                "attack.gamma_init",
                f"must be in (0, gamma_max = {gamma_max:g}] (got {gamma_init})",
                "a float > 0, e.g. 10",
            )
        if not MIN_TOL <= tol < 1:
            raise ConfigError("attack.tol", f"must be in [{MIN_TOL:g}, 1) (got {tol})", "e.g. 1e-5")
        if gamma is not None and gamma < 0:
            raise ConfigError("attack.gamma", f"must be >= 0 (got {gamma})", "a float >= 0, or null for the search")
        self.perturbation, self.gamma_init, self.tol, self.gamma_max = perturbation, gamma_init, tol, gamma_max
        self.gamma = gamma
        self.strength = {
            "std": Strength("gamma", 0.0, 50.0),
            "unit-vector": Strength("gamma", 0.0, 10.0, "norm"),
            "sign": Strength("gamma", 0.0, 10.0, "rms"),
        }[perturbation]
        self._diag: dict[str, float] = {}

    def strength_value(self, view: RoundView) -> float:
        if self.gamma is not None:
            return float(self.gamma)
        B = benign_rows(view)
        return 0.0 if B is None else self.find_gamma(B, perturbation(B, self.perturbation))

    # statistic of the crafted vector's squared distances (n,) vs the benign threshold
    def _stat(self, sq: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _threshold(self, D2: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def find_gamma(self, B: torch.Tensor, p: torch.Tensor) -> float:
        B64, p64 = B.double(), p.double()
        mu = B64.mean(0)
        diff = mu - B64  # (n, d)
        a = (diff * diff).sum(1)
        c = diff @ p64
        pp = float(p64 @ p64)
        G = B64 @ B64.T
        sq_norms = G.diagonal()
        D2 = (sq_norms[:, None] + sq_norms[None, :] - 2 * G).clamp_min(0)
        thr = float(self._threshold(D2))
        if pp == 0.0:
            return 0.0

        def ok(g: float) -> bool:
            return float(self._stat(a + 2 * g * c + g * g * pp)) <= thr

        lo, hi = 0.0, self.gamma_init
        for _ in range(MAX_SEARCH_STEPS):  # doubling: gamma_max / gamma_init < 2**200
            if not ok(hi):
                break
            lo = hi
            if hi >= self.gamma_max:
                return self.gamma_max
            hi = min(2 * hi, self.gamma_max)
        for _ in range(MAX_SEARCH_STEPS):  # bisection: tol >= 1e-12 needs < 100 halvings
            if hi - lo <= self.tol * max(1.0, lo):
                break
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        return lo

    def craft(self, view: RoundView) -> Optional[torch.Tensor]:
        self._diag = {}
        B = benign_rows(view)
        if B is None:
            return None
        p = perturbation(B, self.perturbation)
        gamma = self.find_gamma(B, p) if self.gamma is None else float(self.gamma)
        self._diag = {"gamma": gamma}
        return repeat_rows(B.mean(0) + gamma * p, len(view.malicious_ids))

    def diagnostics(self) -> dict[str, float]:
        return dict(self._diag)


@ATTACKS.register("minmax")
class MinMax(_OptimizedMean):
    """Min-Max (Shejwalkar & Houmansadr, NDSS 2021, Eq. 6): the largest gamma with
    ``max_i ||g - b_i|| <= max_{i,j} ||b_i - b_j||`` for ``g = mean(B) + gamma p``.
    ``attack.perturbation``: std (default), unit-vector, sign."""

    def _stat(self, sq):
        return sq.max()

    def _threshold(self, D2):
        return D2.max()


@ATTACKS.register("minsum")
class MinSum(_OptimizedMean):
    """Min-Sum (Shejwalkar & Houmansadr, NDSS 2021, Eq. 7): the largest gamma with
    ``sum_i ||g - b_i||^2 <= max_i sum_j ||b_i - b_j||^2`` for ``g = mean(B) + gamma p``.
    ``attack.perturbation``: std (default), unit-vector, sign."""

    def _stat(self, sq):
        return sq.sum()

    def _threshold(self, D2):
        return D2.sum(1).max()


# ---------------------------------------------------------------- ROP
@ATTACKS.register("rop")
class ROP(Attack):
    """Relocated Orthogonal Perturbation (Ozfatura et al., "Byzantines can also Learn
    from History: Fall of Centered Clipping in Federated Learning", IEEE TIFS 2024,
    Algorithm 3).

    With ``mbar`` the benign mean and ``ref`` the previous aggregate m~_{t-1}
    (``mbar`` in the first round, Alg. 3 lines 2-3)::

        u   = lam * ref + (1 - lam) * mbar          # line 4 (the printed (1-lam) m~_t is a typo)
        p   = 1 - (<1, u> / <u, u>) u               # lines 1, 5, 6: all-ones vector, u rejected
        out = ref + z * p / ||p||                   # line 7

    so ``||out - ref|| = z`` and ``<out - ref, u> = 0``; every attacker sends ``out``.
    Defaults are the paper's (z = 1, lam = 0.9). Two options of the authors' code
    (FL-Byzantine-Library ``reloc``), at the paper's values by default:

    * ``pi`` (1.0): attack location ``pi * ref + (1 - pi) * mbar`` (the paper relocates
      fully, pi = 1; the code's 2024 default was 0);
    * ``angle`` (90 degrees): ``p_hat <- sin(angle) p_hat + cos(angle) u / ||u||``, then
      renormalised (90: orthogonal, the paper; 270: the negated orthogonal direction,
      the code's current default).

    The code starts its reference at 0 in the first round; the paper (followed here)
    uses the benign mean. If ``u = 0`` the projection is skipped.

    Diagnostics: ``cos_ref_byz`` = cos(m~_{t-1}, out) and ``cos_ref_benign`` = mean over
    benign rows of cos(m~_{t-1}, m_i) (Table III; only from the second round on, when a
    reference exists), ``ref_norm`` = ||m~_{t-1}||, ``dist_ref`` = ||out - ref||.
    """

    threat = OMNISCIENT
    trains = False
    strength = Strength("z", 0.0, 10.0, "norm")

    def __init__(self, *, z: float = 1.0, lam: float = 0.9, pi: float = 1.0, angle: float = 90.0):
        if z < 0:
            raise ConfigError("attack.z", f"must be >= 0 (got {z})", "a float >= 0 (the perturbation's L2 norm)")
        if not 0.0 <= lam <= 1.0:
            raise ConfigError("attack.lam", f"must be in [0, 1] (got {lam})", "0..1")
        if not 0.0 <= pi <= 1.0:
            raise ConfigError("attack.pi", f"must be in [0, 1] (got {pi})", "0..1")
        self.z, self.lam, self.pi, self.angle = z, lam, pi, angle
        self._diag: dict[str, float] = {}

    def reset(self) -> None:
        self._diag = {}

    def direction(self, u: torch.Tensor) -> torch.Tensor:
        """Unit vector: the all-ones vector with its component along ``u`` removed,
        rotated by ``angle`` towards ``u`` (Alg. 3 lines 1, 5, 6; the code's angle).
        Computed in float64 so that the orthogonality holds to round-off at large d."""
        dtype, u = u.dtype, u.double()
        return self._direction64(u).to(dtype)

    def _direction64(self, u: torch.Tensor) -> torch.Tensor:
        p = torch.ones_like(u)
        uu = u @ u
        has_u = float(uu) > 0
        if has_u:
            p = p - ((p @ u) / uu) * u
        pn = torch.linalg.vector_norm(p)
        p = p / pn if float(pn) > 0 else p
        if not has_u:
            return p
        a = math.radians(self.angle % 360.0)
        sin, cos = math.sin(a), math.cos(a)
        if self.angle % 90.0 == 0.0:  # exact multiples of 90 degrees: no round-off
            sin, cos = float(round(sin)), float(round(cos))
        if (sin, cos) == (1.0, 0.0):
            return p
        p = sin * p + cos * u / torch.sqrt(uu)
        return p / torch.linalg.vector_norm(p)

    def perturb(self, ref: torch.Tensor, mbar: torch.Tensor, view: RoundView) -> tuple[torch.Tensor, torch.Tensor]:
        """(location, perturbation) of this round's vector."""
        u = self.lam * ref + (1 - self.lam) * mbar
        loc = self.pi * ref + (1 - self.pi) * mbar
        return loc, self.z * self.direction(u)

    def craft(self, view: RoundView) -> Optional[torch.Tensor]:
        self._diag = {}
        B = benign_rows(view)
        if B is None:
            return None
        mbar = B.mean(0)
        prev = view.prev_update
        ref = mbar if prev is None else prev.to(mbar)
        loc, pert = self.perturb(ref, mbar, view)
        out = loc + pert
        diag = {
            "ref_norm": float(torch.linalg.vector_norm(ref)),
            "dist_ref": float(torch.linalg.vector_norm(out - ref)),
            "benign_mean_norm": float(torch.linalg.vector_norm(mbar)),
        }
        if prev is not None:
            diag["cos_ref_byz"] = _cos(out, ref)
            diag["cos_ref_benign"] = _mean_cos_rows(B, ref)
        self._diag = diag
        return repeat_rows(out, len(view.malicious_ids))

    def diagnostics(self) -> dict[str, float]:
        return dict(self._diag)


def sparse_mask(layout: ParamLayout, last_layer: bool = False) -> torch.Tensor:
    """ROP-S mask (Fall of CC, Sec. V-A): the first layer's weights, normalisation
    parameters (1-D ``*.weight`` tensors: BatchNorm / GroupNorm / LayerNorm scales) and
    every bias, as the authors' code builds it (``bn_mask``); ``last_layer=True`` adds
    the last layer's weights (the paper's text also names the last layer).
    Returns a ``(d,)`` float 0/1 vector."""
    mask = torch.zeros(layout.dim)
    first = layout.names[0].rsplit(".", 1)[0]
    last = set(layout.last_layer()) if last_layer else set()
    for name, shape in zip(layout.names, layout.shapes):
        prefix, _, leaf = name.rpartition(".")
        pick = (
            (prefix == first and leaf == "weight")
            or leaf == "bias"
            or (leaf == "weight" and len(shape) == 1)
            or name in last
        )
        if pick:
            mask[layout.slice(name)] = 1.0
    return mask


@ATTACKS.register("rop-s")
class SparseROP(ROP):
    """Sparse ROP, ROP-S (Ozfatura et al., TIFS 2024, Sec. V-A, Eq. 20).

    With ROP's perturbation ``Delta = z p_hat`` (see :class:`ROP`) and a 0/1 ``mask``
    (:func:`sparse_mask`), the attackers send::

        loc + (d / ||mask||_1) * mask * Delta          # default: the recommended reading of Eq. 20

    with ``loc`` ROP's location (the reference m~_{t-1} at the default pi = 1): the
    unmasked coordinates equal the reference ("mimicking" it) and the
    masked ones carry the perturbation amplified by ``d / ||mask||_1``. Eq. 20 prints
    Delta_t on both sides; ``literal=True`` drops the reference on the masked
    coordinates: ``(1 - mask) * loc + (d / ||mask||_1) * mask * Delta``.
    ``last_layer``: also perturb the last layer's weights.
    Diagnostics as ROP, plus ``mask_frac`` = ||mask||_1 / d.
    """

    def __init__(
        self,
        *,
        z: float = 1.0,
        lam: float = 0.9,
        pi: float = 1.0,
        angle: float = 90.0,
        last_layer: bool = False,
        literal: bool = False,
    ):
        super().__init__(z=z, lam=lam, pi=pi, angle=angle)
        self.last_layer, self.literal = last_layer, literal
        self._mask: Optional[torch.Tensor] = None

    def mask_for(self, layout: ParamLayout) -> torch.Tensor:
        if self._mask is None or self._mask.numel() != layout.dim:
            self._mask = sparse_mask(layout, self.last_layer)
        return self._mask

    def perturb(self, ref, mbar, view):
        loc, pert = super().perturb(ref, mbar, view)
        mask = self.mask_for(view.layout).to(pert)
        k = float(mask.sum())
        if k == 0:
            return loc, pert
        amp = view.layout.dim / k
        if self.literal:
            return (1 - mask) * loc, amp * mask * pert
        return loc, amp * mask * pert

    def craft(self, view):
        out = super().craft(view)
        if out is not None:
            self._diag["mask_frac"] = float(self.mask_for(view.layout).mean())
        return out
