"""``attack.optimize``: search a crafting attack's strength against the defense in use.

A defense is only as good as its worst case. ByzFL's Optimal-IPM and Optimal-ALIE
(Allouah et al., "Fixing by Mixing", AISTATS 2023; ``byzfl.attacks``) line-search the
attack factor that pushes the aggregate furthest from the honest mean, against one given
aggregator and its pre-aggregation stages. :class:`OptimizedAttack` makes that search
generic: it wraps any crafting attack that declares a scalar :class:`~.base.Strength`
(ALIE's z, IPM's epsilon, Min-Max/Min-Sum's gamma, ROP's distance, the Gaussian's sigma,
bit-flip's scale, and any later attack that sets ``strength``) and, every round,

1. evaluates candidate strengths: the wrapped attack crafts the malicious rows at that
   strength, the round's update matrix is assembled (benign rows in place) and run
   through a **copy** of the defense pipeline (``copy.deepcopy``; the round context's
   generator and extras are copied too), so a stateful defense (Centered Clipping's
   centre, FoolsGold's history, a bucketing permutation drawn from the round's generator)
   is neither advanced nor perturbed by the probing. Each probe replays the round's own
   defense randomness (the same generator state as the real aggregation), i.e. a
   white-box attacker that knows the server's draws;
2. keeps the strength with the largest objective and crafts the round with it.

Objectives (``objective``):

* ``distance`` (ByzFL's): ``||agg(U) - mean(benign rows)||``;
* ``loss``: the increase in loss, on a held-out batch of the attackers' own clean data,
  of the global model stepped by ``agg(U)`` over the model stepped by the benign mean.

A probe whose aggregate is not finite scores ``-inf`` (never chosen).

Searches (``search``), each with exactly ``evals`` objective evaluations at most:

* ``grid`` (default): ``ceil(evals / 2)`` evenly spaced points over the range, then
  golden-section refinement around the best grid point with the rest;
* ``golden``: golden-section search over the range (for unimodal objectives);
* ``byzfl``: ByzFL's expansion-contraction line search from ``start`` with step
  ``delta`` (doubled while the objective improves, then shrunk by ``ratio`` per
  evaluation), unbounded in range but not in evaluations.

With ``include_default`` (default true) the attack's own default strength for the round
is the first evaluation (it counts towards ``evals``), so the optimized attack is never
worse than the default one on the objective it optimizes. The first best evaluation wins
ties. Range and ByzFL's ``start``/``delta`` are in the strength's unit
(:class:`~.base.Strength`: as is, or in benign norms / RMS coordinates of the round).

Diagnostics (``rounds.jsonl`` as ``attack_<key>``): the wrapped attack's own, plus
``strength`` (chosen), ``strength_param`` (its name), ``strength_default``,
``objective``, ``objective_default`` and ``evals`` (evaluations used).

Matching ByzFL's published values (``tests/test_attack_optimize.py``): ByzFL's
``Optimal_InnerProductManipulation(agg, pre_agg_list, f, evals=20, start=0.0,
delta=10.0, ratio=0.8)`` is ``attack.name=ipm`` with ``attack.optimize.search=byzfl``,
``evals=20``, ``include_default=false`` (ByzFL's tau = our epsilon, both ``-tau * mean``);
``Optimal_ALittleIsEnough`` the same with ``attack.name=alie`` and ``delta=-10`` (ByzFL
sends ``mean + tau * std``, ours ``mean - z * std``: z = -tau; both with the unbiased
std). ByzFL appends its f Byzantine vectors after the honest ones; its
``pre_agg_list=[NNM, Clipping]`` runs NNM first, while a config-built pipeline runs
``defense.clip`` before ``defense.nnm`` (build ``DefensePipeline([NNM, NormClip], ...)``
in code for ByzFL's order); ByzFL's ``Clipping()`` is ``defense.clip=2.0``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from ..errors import ConfigError
from ..registry import ATTACKS, config_check
from .base import Attack, RoundView, ThreatModel

OBJECTIVES = ("distance", "loss")
SEARCHES = ("grid", "golden", "byzfl")
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


# ---------------------------------------------------------------- bounded searches
@dataclass
class Trace:
    """Every evaluation of one search, in order; :attr:`best` is the first maximum."""

    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)

    @property
    def best(self) -> tuple[float, float]:
        i = max(range(len(self.ys)), key=lambda j: (self.ys[j], -j))
        return self.xs[i], self.ys[i]


class _Budget:
    """An objective that records its evaluations and refuses to run past ``evals``."""

    def __init__(self, fn: Callable[[float], float], evals: int, trace: Trace):
        self.fn, self.left, self.trace = fn, evals, trace

    def __call__(self, x: float) -> float:
        if self.left <= 0:
            raise RuntimeError("search evaluation budget exceeded")  # a bug in a search, never a user error
        self.left -= 1
        y = float(self.fn(float(x)))
        y = y if math.isfinite(y) else -math.inf
        self.trace.xs.append(float(x))
        self.trace.ys.append(y)
        return y


def golden_section(f: Callable[[float], float], lo: float, hi: float, evals: int) -> None:
    """Golden-section search for a maximum on ``[lo, hi]`` with ``evals`` evaluations."""
    if evals <= 0:
        return
    if evals == 1 or hi <= lo:
        f(0.5 * (lo + hi))
        return
    a, b = lo, hi
    c, d = b - _INV_PHI * (b - a), a + _INV_PHI * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(evals - 2):
        if fc >= fd:  # the maximum is in [a, d]
            b, d, fd = d, c, fc
            c = b - _INV_PHI * (b - a)
            fc = f(c)
        else:  # in [c, b]
            a, c, fc = c, d, fd
            d = a + _INV_PHI * (b - a)
            fd = f(d)


def grid_refine(f: Callable[[float], float], lo: float, hi: float, evals: int) -> None:
    """``ceil(evals/2)`` grid points over ``[lo, hi]``, then golden-section refinement
    between the neighbours of the best one with the remaining evaluations."""
    if evals <= 0:
        return
    g = max(1, min(evals, -(-evals // 2)))
    xs = [lo + (hi - lo) * i / (g - 1) for i in range(g)] if g > 1 else [0.5 * (lo + hi)]
    ys = [f(x) for x in xs]
    i = max(range(g), key=lambda j: (ys[j], -j))
    golden_section(f, xs[max(0, i - 1)], xs[min(g - 1, i + 1)], evals - g)


def expand_contract(f: Callable[[float], float], start: float, delta: float, ratio: float, evals: int) -> None:
    """ByzFL's line search (``Optimal_*._expansion_phase`` / ``_contraction_phase``):
    from ``start``, step by ``delta`` and double it while the objective improves; after
    the first step that does not improve, shrink the step by ``ratio`` and keep
    proposing ``best + delta`` (shrinking ``delta`` after every proposal)."""
    if evals <= 0:
        return
    best_x, best_y = start, f(start)
    left = evals - 1
    expanding = True
    for _ in range(left):
        y = f(best_x + delta)
        if y > best_y:
            best_x, best_y = best_x + delta, y
            delta = delta * 2 if expanding else delta * ratio
        else:
            expanding = False
            delta *= ratio


def maximize(
    fn: Callable[[float], float],
    search: str,
    evals: int,
    lo: float,
    hi: float,
    *,
    first: Optional[float] = None,
    start: float = 0.0,
    delta: float = 10.0,
    ratio: float = 0.8,
) -> Trace:
    """Run one bounded search; ``first``: a strength evaluated before the search (one of
    the ``evals``). Returns the trace (its ``best`` is the first maximum)."""
    trace = Trace()
    f = _Budget(fn, evals, trace)
    if first is not None:
        f(first)
    n = f.left
    if search == "grid":
        grid_refine(f, lo, hi, n)
    elif search == "golden":
        golden_section(f, lo, hi, n)
    elif search == "byzfl":
        expand_contract(f, start, delta, ratio, n)
    else:
        raise ConfigError("attack.optimize.search", f"unknown search {search!r}", ", ".join(SEARCHES))
    return trace


# ---------------------------------------------------------------- the wrapper
def _clone_generator(g: Optional[torch.Generator]) -> Optional[torch.Generator]:
    if g is None:
        return None
    out = torch.Generator(device=g.device)
    out.set_state(g.get_state())
    return out


def check_optimizable(attack_cls) -> None:
    """ConfigError unless the attack declares a strength that ``attack.optimize`` can search."""
    if getattr(attack_cls, "strength", None) is None or getattr(attack_cls, "craft", None) is Attack.craft:
        ok = [n for n in ATTACKS.names() if getattr(ATTACKS.get(n), "strength", None) is not None]
        name = getattr(attack_cls, "registered_name", attack_cls.__name__)
        raise ConfigError("attack.optimize", f"attack {name!r} declares no strength to search", ", ".join(ok))


class OptimizedAttack(Attack):
    """Wrap a crafting attack so that each round it uses the strength that does the most
    damage against the defense in use (see the module docstring). Everything but
    :meth:`craft` is the wrapped attack's."""

    def __init__(
        self,
        inner: Attack,
        *,
        objective: str = "distance",
        search: str = "grid",
        evals: int = 20,
        range: Optional[tuple[float, float]] = None,
        include_default: bool = True,
        start: float = 0.0,
        delta: float = 10.0,
        ratio: float = 0.8,
        batch_size: int = 256,
    ):
        check_optimizable(type(inner))
        if objective not in OBJECTIVES:
            raise ConfigError("attack.optimize.objective", f"unknown objective {objective!r}", ", ".join(OBJECTIVES))
        if search not in SEARCHES:
            raise ConfigError("attack.optimize.search", f"unknown search {search!r}", ", ".join(SEARCHES))
        if evals < 1:
            raise ConfigError("attack.optimize.evals", f"must be >= 1 (got {evals})", "1, 2, ...")
        if range is not None and not range[0] <= range[1]:
            raise ConfigError("attack.optimize.range", f"needs lo <= hi (got {list(range)})", "[lo, hi]")
        self.inner = inner
        self.objective, self.search, self.evals, self.range = objective, search, int(evals), range
        self.include_default, self.start, self.delta, self.ratio = include_default, start, delta, ratio
        self.batch_size = batch_size
        self.threat = ThreatModel(knowledge="benign", collude=inner.threat.collude, aggregator_aware=True)
        self.trains = inner.trains
        self._diag: dict[str, float | str] = {}

    # everything but craft is the wrapped attack's
    def setup(self, info, generator) -> None:
        self.info = info
        self.inner.setup(info, generator)

    def poison(self, x, y, client_id, generator):
        return self.inner.poison(x, y, client_id, generator)

    def begin_round(self, round, layout, global_params, prev_update) -> None:
        self.inner.begin_round(round, layout, global_params, prev_update)

    def recipe(self, base, client_id):
        return self.inner.recipe(base, client_id)

    def backdoor_testset(self, x, y):
        return self.inner.backdoor_testset(x, y)

    @property
    def source_class(self):
        return self.inner.source_class

    def reset(self) -> None:
        self.inner.reset()
        self._diag = {}

    def diagnostics(self) -> dict[str, float | str]:
        return {**self.inner.diagnostics(), **self._diag}

    # -------------------------------------------------------------- the search
    def _inner_view(self, view: RoundView) -> RoundView:
        """The round as the wrapped attack may see it (its own threat model)."""
        own = self.inner.threat.knowledge == "own"
        return dataclasses.replace(
            view,
            benign_updates=None if own else view.benign_updates,
            benign_ids=None if own else view.benign_ids,
            server=view.server if self.inner.threat.aggregator_aware else None,
        )

    def _unit(self, B: torch.Tensor) -> float:
        unit = self.inner.strength.unit
        if unit == "norm":
            return float(torch.linalg.vector_norm(B.double(), dim=1).mean())
        if unit == "rms":
            return float(B.double().pow(2).mean().sqrt())
        return 1.0

    def _assemble(self, view: RoundView, rows: torch.Tensor) -> torch.Tensor:
        B, mal = view.benign_updates, view.server.malicious_rows.to(view.benign_updates.device)
        U = torch.empty(view.num_clients, B.shape[1], dtype=B.dtype, device=B.device)
        keep = torch.ones(view.num_clients, dtype=torch.bool, device=B.device)
        keep[mal] = False
        U[keep] = B
        U[mal] = rows.to(B.dtype).reshape(len(mal), -1)
        return U

    def _aggregate(self, view: RoundView, U: torch.Tensor) -> torch.Tensor:
        """The defense's output on ``U``, from copies of the pipeline and the context."""
        server = view.server
        pipeline = copy.deepcopy(server.pipeline)
        ctx = server.context
        ctx = dataclasses.replace(ctx, generator=_clone_generator(ctx.generator), extras=dict(ctx.extras or {}))
        return pipeline(U, ctx).update

    def _score(self, view: RoundView, agg: torch.Tensor, mean: torch.Tensor, base_loss: Optional[float]) -> float:
        if not bool(torch.isfinite(agg).all()):
            return -math.inf
        if self.objective == "distance":
            return float(torch.linalg.vector_norm((agg - mean).double()))
        return view.server.loss(view.global_params + view.server.step(agg)) - base_loss

    def craft(self, view: RoundView) -> Optional[torch.Tensor]:
        self._diag = {}
        inner, name = self.inner, self.inner.strength.name
        iview = self._inner_view(view)
        B = view.benign_updates
        if B is None or len(B) == 0 or view.server is None:
            return inner.craft(iview)  # nothing to measure against: the default strength
        if self.objective == "loss" and view.server.loss is None:
            raise ConfigError(
                "attack.optimize.objective",
                "the loss objective needs the attackers' held-out batch, which this engine did not provide",
                "distance",
            )
        mean = B.mean(0)
        base_loss = None
        if self.objective == "loss":
            base_loss = view.server.loss(view.global_params + view.server.step(mean))
        configured = getattr(inner, name)
        default = inner.strength_value(iview)

        def objective(x: float) -> float:
            probe = copy.deepcopy(inner)
            setattr(probe, name, x)
            rows = probe.craft(dataclasses.replace(iview, generator=_clone_generator(view.generator)))
            if rows is None:  # the attack keeps its rows: what the clients upload
                rows = view.uploads if view.uploads is not None else view.own_updates
            return self._score(view, self._aggregate(view, self._assemble(view, rows)), mean, base_loss)

        unit = self._unit(B)
        lo, hi = self.range if self.range is not None else (inner.strength.lo, inner.strength.hi)
        trace = maximize(
            objective,
            self.search,
            self.evals,
            lo * unit,
            hi * unit,
            first=default if self.include_default else None,
            start=self.start * unit,
            delta=self.delta * unit,
            ratio=self.ratio,
        )
        best, best_y = trace.best
        setattr(inner, name, best)
        try:
            out = inner.craft(iview)
        finally:
            setattr(inner, name, configured)
        self._diag = {
            "strength": best,
            "strength_param": name,
            "strength_default": default,
            "objective": best_y,
            "evals": len(trace.xs),
        }
        if self.include_default:
            self._diag["objective_default"] = trace.ys[0]
        return out


__all__ = [
    "OptimizedAttack",
    "Trace",
    "check_optimizable",
    "expand_contract",
    "golden_section",
    "grid_refine",
    "maximize",
    "OBJECTIVES",
    "SEARCHES",
]


@config_check
def check_optimize_config(cfg: Any) -> None:
    """``attack.optimize`` needs an attack with a searchable strength."""
    if cfg.attack.optimize is not None:
        check_optimizable(ATTACKS.get(cfg.attack.name))
