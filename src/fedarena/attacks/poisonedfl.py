"""PoisonedFL: model poisoning through multi-round consistency (Xie, Fang, Gong, CVPR 2025).

The fake clients (malicious identities that never train: :attr:`PoisonedFL.trains` is
False) keep one random sign vector ``s in {-1, +1}^d`` for the whole run, so that their
pushes accumulate over rounds instead of cancelling. Per round ``t`` every selected fake
client sends (LeadFL report, Sec. V, Eqs. 7-10)::

    h~   = g^{t-1} - ||g^{t-1}|| / (||k^{t-1} (.) s|| + 1e-9) * (k^{t-1} (.) s)   (7)
    v^t  = |h~| / (||h~||_2 + 1e-9)                                             (8)
    lam  = c_t ||g^{t-1}||_2                                                    (9)
    g_i^t = (v^t * lam) (.) s                                                   (10)

``g^{t-1}`` is the last global update (the previous aggregate, which every client can
compute from two broadcast models), ``k^{t-1} (.) s`` the mean of the rows the fake
clients sent the last time they took part. In the first round (no history) they send
zeros. The ``+1e-9`` terms are the authors' code's.

The scale ``c_t`` follows the authors' code (``byzantine.py::poisonedfl``,
:class:`MagnitudeController`): every ``check_every = 50`` rounds the controller counts
the coordinates where the model moved in the direction of ``s`` since the last check;
when that count is below ``k_99``, the 0.99 quantile of Binomial(d, 1/2) (scipy), the
attack is assumed to be filtered and ``c <- 0.7 c``, unless that would go below 0.5.
``c_0 = 8`` (every official script). ``rule="gt50"`` is the report's simplified rule
(alignment > 50 %).

Variants (each an option; defaults off):

* ``noise_rho`` -- noise adaptation (the paper's adaptive variant, report Sec. V): each
  fake client adds its own ``N(0, (rho * lam / sqrt(d))^2)`` per coordinate.
* ``flip_p`` -- sign flipping: each fake client flips every ``s_j`` with probability
  ``p`` (fresh per client and round).
* ``partition_dims`` -- the report's proposal: the colluders split the coordinates of
  ``s`` (a fixed random permutation cut into as many parts as fake clients this round),
  each pushes only its own part and sends 0 elsewhere.
* ``consistent=False`` -- the baseline without multi-round consistency: a fresh random
  sign vector every round.

Diagnostics (``attack_*`` in ``rounds.jsonl``): ``c``, ``lambda``, ``aligned_frac``
(share of coordinates moved along ``s`` at the last check).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from scipy.stats import binom

from ..core.state import Stateful
from ..errors import ConfigError
from ..registry import ATTACKS
from .base import Attack, DataInfo, RoundView, ThreatModel


def k99(d: int, quantile: float = 0.99) -> int:
    """The ``quantile`` of Binomial(d, 1/2): the aligned-coordinate count the model's drift
    must reach for the attack to count as unfiltered (authors' code; d = 139,960 -> 70,415).

    >>> k99(139_960)
    70415
    """
    return int(binom.ppf(quantile, d, 0.5))


class MagnitudeController(Stateful):
    """The scale factor ``c_t`` of PoisonedFL (authors' code, LeadFL spec §4.1 / A19).

    :meth:`observe` is called with the round index and the flat global model *before* that
    round's update. At ``t = 0, check_every, 2 check_every, ...`` (or, when the fake
    clients were absent at that round, at their first later round) it compares the model
    with the snapshot of the previous check: ``delta = W_t - W_snap``, coordinates with
    ``delta_j = 0`` use ``W_t,j`` instead (the code's rule); ``aligned = #{sign(delta_j) =
    direction * s_j}``. If ``aligned < threshold`` and ``beta * c >= c_min`` then
    ``c <- beta * c``. The snapshot is then renewed.
    """

    def __init__(
        self,
        s: torch.Tensor,
        *,
        c0: float = 8.0,
        beta: float = 0.7,
        c_min: float = 0.5,
        check_every: int = 50,
        quantile: float = 0.99,
        rule: str = "k99",
        direction: float = 1.0,
    ):
        self.s = s
        self.c, self.beta, self.c_min, self.check_every = float(c0), float(beta), float(c_min), int(check_every)
        d = s.numel()
        self.threshold = k99(d, quantile) if rule == "k99" else d // 2 + 1  # "gt50": strictly more than half
        self.direction = direction
        self.snapshot: Optional[torch.Tensor] = None
        self.next_check = 0
        self.aligned_frac: Optional[float] = None

    def observe(self, t: int, params: torch.Tensor) -> float:
        if t < self.next_check:
            return self.c
        if self.snapshot is not None:
            delta = params - self.snapshot
            delta = torch.where(delta == 0, params, delta)
            aligned = int((torch.sign(delta) == self.direction * self.s).sum())
            self.aligned_frac = aligned / self.s.numel()
            if aligned < self.threshold and self.beta * self.c >= self.c_min:
                self.c *= self.beta
        self.snapshot = params.detach().clone()
        self.next_check = (t // self.check_every + 1) * self.check_every
        return self.c


@ATTACKS.register("poisonedfl")
class PoisonedFL(Attack):
    """PoisonedFL: fake clients push one fixed sign direction every round (Xie et al., CVPR 2025).

    Eqs. 7-10 of the LeadFL report's summary, with the authors' code's magnitude
    controller (``c0 = 8``, ``beta = 0.7``, floor ``c_min = 0.5``, checked every 50
    rounds against the 0.99 quantile of Binomial(d, 1/2)). Fake clients do not train.

    Args:
        c0, beta, c_min, check_every, quantile: the controller (see module docstring).
        rule: ``"k99"`` (authors' code) or ``"gt50"`` (the report's "alignment > 50 %").
        consistent: False draws a fresh sign vector every round (the random-sign baseline).
        noise_rho: noise adaptation, per-client ``N(0, (rho lam / sqrt d)^2)``; 0 = off.
        flip_p: sign flipping probability per coordinate and client; 0 = off.
        partition_dims: colluders split the coordinates of ``s`` among themselves.
    """

    threat = ThreatModel(knowledge="own", collude=True)
    trains = False

    def __init__(
        self,
        *,
        c0: float = 8.0,
        beta: float = 0.7,
        c_min: float = 0.5,
        check_every: int = 50,
        quantile: float = 0.99,
        rule: str = "k99",
        consistent: bool = True,
        noise_rho: float = 0.0,
        flip_p: float = 0.0,
        partition_dims: bool = False,
    ):
        if not c0 > 0:
            raise ConfigError("attack.c0", f"must be > 0 (got {c0})", "a scale > 0 (the paper's scripts: 8)")
        if not 0 < beta <= 1:
            raise ConfigError("attack.beta", f"must be in (0, 1] (got {beta})", "0 < beta <= 1 (the code: 0.7)")
        if not c_min >= 0:
            raise ConfigError("attack.c_min", f"must be >= 0 (got {c_min})", ">= 0 (the code: 0.5)")
        if check_every < 1:
            raise ConfigError("attack.check_every", f"must be >= 1 (got {check_every})", "rounds >= 1 (the code: 50)")
        if not 0.5 <= quantile < 1:
            raise ConfigError("attack.quantile", f"must be in [0.5, 1) (got {quantile})", "e.g. 0.99")
        if rule not in ("k99", "gt50"):
            raise ConfigError("attack.rule", f"unknown value {rule!r}", "k99, gt50")
        if not noise_rho >= 0:
            raise ConfigError("attack.noise_rho", f"must be >= 0 (got {noise_rho})", ">= 0, 0 = off")
        if not 0 <= flip_p <= 1:
            raise ConfigError("attack.flip_p", f"must be in [0, 1] (got {flip_p})", "a probability, 0 = off")
        self.c0, self.beta, self.c_min, self.check_every = c0, beta, c_min, check_every
        self.quantile, self.rule, self.consistent = quantile, rule, consistent
        self.noise_rho, self.flip_p, self.partition_dims = noise_rho, flip_p, partition_dims
        self._seed = 0
        self.reset()

    def setup(self, info: DataInfo, generator: torch.Generator) -> None:
        super().setup(info, generator)
        self._seed = int(torch.randint(2**62, (1,), generator=generator))

    def reset(self) -> None:
        self.s: Optional[torch.Tensor] = None
        self.controller: Optional[MagnitudeController] = None
        self.last_mal: Optional[torch.Tensor] = None
        self.perm: Optional[torch.Tensor] = None
        self.direction = 1.0
        self._diag: dict[str, float] = {}

    def _init_state(self, view: RoundView) -> None:
        d = view.layout.dim
        g = torch.Generator().manual_seed(self._seed)
        self.s = torch.sign(torch.randn(d, generator=g))
        self.s[self.s == 0] = 1.0
        self.perm = torch.randperm(d, generator=g)
        self.direction = 1.0 if view.algorithm == "fedavg" else -1.0  # fedsgd steps against the aggregate
        self.controller = self._controller()

    def _controller(self) -> MagnitudeController:
        return MagnitudeController(
            self.s,
            c0=self.c0,
            beta=self.beta,
            c_min=self.c_min,
            check_every=self.check_every,
            quantile=self.quantile,
            rule=self.rule,
            direction=self.direction,
        )

    def load_state_dict(self, state: dict) -> None:
        """The controller is built on the restored sign vector, then given its state (a
        checkpoint taken after the first crafted round holds both)."""
        ctrl = state.get("controller")
        super().load_state_dict({k: v for k, v in state.items() if k != "controller"})
        if isinstance(ctrl, dict) and "__stateful__" in ctrl:
            self.controller = self._controller()
            self.controller.load_state_dict(ctrl["__stateful__"])

    def craft(self, view: RoundView) -> torch.Tensor:
        if self.s is None:
            self._init_state(view)
        m, d = len(view.malicious_ids), view.layout.dim
        c = self.controller.observe(view.round, view.global_params.detach().cpu().float())
        g_prev = view.prev_update
        if g_prev is None:  # first round: no history, the fake clients send zeros
            rows = torch.zeros(m, d)
            self.last_mal = rows.mean(0)
            self._diag = {"c": c, "lambda": 0.0}
            return rows.to(view.global_params.device)
        g_prev = g_prev.detach().cpu().float()
        gen = view.generator
        s = self.s if self.consistent else _random_signs(d, gen)
        last = self.last_mal if self.last_mal is not None else torch.zeros(d)
        g_norm = torch.linalg.vector_norm(g_prev)
        h = g_prev - g_norm / (torch.linalg.vector_norm(last) + 1e-9) * last  # Eq. 7
        v = h.abs() / (torch.linalg.vector_norm(h) + 1e-9)  # Eq. 8
        lam = c * float(g_norm)  # Eq. 9
        base = v * lam  # Eq. 10 is base (.) s
        signs = s.unsqueeze(0).repeat(m, 1)
        if self.flip_p > 0:
            flips = torch.rand(m, d, generator=gen) < self.flip_p
            signs = torch.where(flips, -signs, signs)
        rows = base.unsqueeze(0) * signs
        if self.noise_rho > 0:
            rows = rows + torch.randn(m, d, generator=gen) * (self.noise_rho * lam / math.sqrt(d))
        if self.partition_dims and m > 1:
            owner = torch.empty(d, dtype=torch.long)
            owner[self.perm] = torch.arange(d) % m
            rows = rows * (owner.unsqueeze(0) == torch.arange(m).unsqueeze(1))
        self.last_mal = rows.mean(0)
        self._diag = {"c": c, "lambda": lam}
        if self.controller.aligned_frac is not None:
            self._diag["aligned_frac"] = self.controller.aligned_frac
        return rows.to(view.global_params.device)  # the state lives on the CPU; U on the run's device

    def diagnostics(self) -> dict[str, float]:
        return dict(self._diag)


def _random_signs(d: int, gen: torch.Generator) -> torch.Tensor:
    s = torch.sign(torch.randn(d, generator=gen))
    s[s == 0] = 1.0
    return s
