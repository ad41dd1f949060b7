"""AutoAdapt: colluding backdoor attackers that keep their models inside the benign range
of the defense's metrics with an augmented Lagrangian; and the Eq. 2 baseline.

Krauß, König, Dmitrienko, Kanzow, "Automatic Adversarial Adaption for Stealthy Poisoning
Attacks in Federated Learning" (NDSS 2024); ``../shared/specs/autoadapt.md`` (Sect. 3.9 is
the procedure implemented here, Sect. 10 the decisions).

Both attacks run their clients' local training themselves (:meth:`Attack.local_train`),
on core's trainer (:func:`train_constrained`: phases of
:func:`fedarena.core.local.train_sequential`, the penalty as the recipe's ``extra_loss``,
the multipliers, memory and log in a step hook, :class:`ConstrainedRun`):

1-3. Each malicious client trains a **benign** model from the global model on its clean
     data with the benign recipe. For every metric in ``metrics`` (``cos``, ``l2``) and
     every group of ``scope`` (:mod:`fedarena.core.distances`) the colluders share
     ``lo = min`` and ``hi = max`` over these models (``ranges="oracle"``: over the round's
     true benign clients, an ablation). A range gives two inequality constraints
     ``h_lo = lo - M(x) <= 0`` and ``h_hi = M(x) - hi <= 0`` (Sect. 3.3).
4-6. Poisoned training (the client's data after :meth:`poison`, PDR ``poison_frac``).

``autoadapt`` trains unconstrained (benign recipe) until epoch ``activate_epoch``; then
momentum and weight decay are switched off for the rest of training, ``alpha_al`` is set
once by Eq. 24 (:func:`eq24_alpha`, capped at ``alpha_max = 10``) from the last
unconstrained batch's loss and the constraints at the current iterate, and every batch
minimises the box-7 objective (:func:`al_penalty`)::

    L(x, mu) = f(x) + 1/(2 alpha) sum_j (max(0, mu_j + alpha h_j(x))^2 - mu_j^2)

with ``mu_j`` updated after every step at the new iterate and reset to 0 when its
constraint is met (:func:`update_mu`). A memory (:class:`Memory`) submits the iterate
with the fewest violated constraints, then the smallest penalty sum
``sum_j max(0, h_j)^2`` (ties: the later iterate), judged on the original range.

``train-and-scale`` is Eq. 2 (Bagdasaryan et al. as the paper uses it, spec Sect. 4 and
decision 17): ``alpha * f + (1 - alpha) * adaptation`` from the first batch, momentum and
weight decay unchanged, the final model submitted (``memory=True``: the memory's), scaled
by ``gamma``. ``adaptation``: ``hinge-squared`` ``sum_j max(0, h_j)^2`` (default),
``hinge`` ``sum_j max(0, h_j)``, or ``raw`` (the metric values themselves: minimise the
distance to the global model).

Per client and round the attack records (``clients.jsonl``): ``batches_to_feasible``
(constrained steps from activation to the first iterate meeting every constraint; 0 if
the activation point meets them; null if none did), ``violations`` and ``penalty_sum``
of the submitted model, ``constraints`` (each one's value and range), ``alpha_al``,
``epochs``, ``train_seconds`` (the poisoned training), ``seconds_to_feasible``,
``train_backdoor_acc`` (the submitted model on the client's own poisoned samples).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional, Sequence, Union

import numpy as np
import torch
from torch.func import functional_call

from ..core.distances import METRICS, SCOPES, metric_values, update_metric_values
from ..core.layout import ParamLayout
from ..core.local import BatchSchedule, train_sequential
from ..core.recipe import HookStep, StepHook, TrainRecipe, cross_entropy
from ..data.poison import eligible
from ..errors import ConfigError
from ..registry import ATTACKS
from .base import DataInfo, LocalTrainContext, ThreatModel
from .data_poisoning import Backdoor

# ----------------------------------------------------------------------------- the equations


def al_penalty(h: torch.Tensor, mu: torch.Tensor, alpha: float) -> torch.Tensor:
    """Box 6/7 penalty ``1/(2 alpha) sum_j (max(0, mu_j + alpha h_j)^2 - mu_j^2)`` (App. A
    Eq. 20 summed over j). Its gradient is ``sum_j max(0, mu_j + alpha h_j) grad h_j``
    (App. B Eq. 23)."""
    return ((mu + alpha * h).clamp_min(0.0).square() - mu.square()).sum() / (2.0 * alpha)


def penalty_sum(h: torch.Tensor) -> torch.Tensor:
    """``sum_j max(0, h_j)^2``: the multiplier-free penalty the memory compares (decision 9)."""
    return h.clamp_min(0.0).square().sum()


def eq24_alpha(f: Optional[float], h: torch.Tensor, alpha_max: float = 10.0) -> float:
    """Eq. 24 with the cap: ``alpha_al = min(alpha_max, 2 f / sum_j max(0, h_j)^2)``;
    ``alpha_max`` when the denominator is 0 (or no loss is known yet). A zero loss would
    give ``alpha_al = 0`` (the paper does not cover it); it is floored at ``1e-6``."""
    v = float(penalty_sum(h.detach()))
    if f is None or v <= 0.0 or not math.isfinite(v):
        return float(alpha_max)
    return float(min(alpha_max, max(2.0 * f / v, 1e-6)))


def update_mu(mu: torch.Tensor, h: torch.Tensor, alpha: float, reset: str = "always") -> torch.Tensor:
    """Multiplier update after a step, at the new iterate ``h = h(x_k)``.

    ``always`` (box 7, the paper): ``mu_j = 0`` if ``h_j <= 0`` else
    ``max(0, mu_j + alpha h_j)``. ``never`` (box 6, plain AL): ``max(0, mu_j + alpha h_j)``.
    ``pair``: as ``never``, but ``mu_j`` of a range bound is reset when the opposite bound
    of the same range is violated (``h`` holds all lower bounds, then all upper bounds).
    """
    new = (mu + alpha * h).clamp_min(0.0)
    if reset == "always":
        return torch.where(h <= 0, torch.zeros_like(new), new)
    if reset == "pair":
        m = h.numel() // 2
        opposite = torch.cat([h[m:], h[:m]])
        return torch.where(opposite > 0, torch.zeros_like(new), new)
    return new


@dataclass
class Memory:
    """Best-iterate memory (Sect. IV): the lexicographic minimum of
    ``(violations, penalty sum)`` over the iterates offered; ties go to the later one."""

    best: Optional[torch.Tensor] = None
    key: tuple[float, float] = (math.inf, math.inf)
    step: int = -1

    def offer(self, x: torch.Tensor, violations: int, penalty: float, step: int = 0) -> bool:
        k = (float(violations), float(penalty))
        if k <= self.key:
            self.best, self.key, self.step = x.detach().clone(), k, step
            return True
        return False


def adaptation_loss(h: torch.Tensor, values: torch.Tensor, kind: str) -> torch.Tensor:
    """Eq. 2's ``Loss_Adaption`` (decision 17): ``hinge-squared``, ``hinge`` or ``raw``."""
    if kind == "hinge-squared":
        return h.clamp_min(0.0).square().sum()
    if kind == "hinge":
        return h.clamp_min(0.0).sum()
    return values.sum()


# ----------------------------------------------------------------------------- constraints


@dataclass
class Constraints:
    """Range (or equality) constraints on the distances of a model to the global model."""

    layout: ParamLayout
    global_flat: torch.Tensor
    metrics: Sequence[str]
    scope: str
    flat: bool
    lo: torch.Tensor  # (M,) float64
    hi: torch.Tensor
    labels: list[str]
    shrink: float = 0.0  # surrogate range: optimise against [lo + s w, hi - s w]
    equality: bool = False  # equality mode: target = lo (= hi), g = M(x) - target
    tol: float = 1e-4  # equality: |g| <= tol counts as met

    def values(self, x: torch.Tensor) -> torch.Tensor:
        return metric_values(x, self.global_flat, self.layout, self.metrics, self.scope, self.flat)[0]

    def h(self, v: torch.Tensor, surrogate: bool = False) -> torch.Tensor:
        """Constraint values: ``[lo - v, v - hi]`` (2M), or ``v - target`` (M, equality)."""
        if self.equality:
            return v - self.lo
        lo, hi = self.lo, self.hi
        if surrogate and self.shrink > 0:
            w = (hi - lo) * self.shrink
            lo, hi = torch.minimum(lo + w, (lo + hi) / 2), torch.maximum(hi - w, (lo + hi) / 2)
        return torch.cat([lo - v, v - hi])

    def violated(self, h: torch.Tensor) -> torch.Tensor:
        return h.abs() > self.tol if self.equality else h > 0

    def measure(self, h: torch.Tensor) -> tuple[int, float]:
        """(number violated, penalty sum) of constraint values ``h``."""
        pen = float(h.square().sum()) if self.equality else float(penalty_sum(h))
        return int(self.violated(h).sum()), pen

    def describe(self, v: torch.Tensor) -> dict[str, dict[str, float]]:
        return {
            lb: {"value": float(v[i]), "lo": float(self.lo[i]), "hi": float(self.hi[i])}
            for i, lb in enumerate(self.labels)
        }


# ----------------------------------------------------------------------------- local training


@dataclass
class LoopConfig:
    """How one malicious client trains (see the module docstring)."""

    mode: Literal["none", "autoadapt", "eq2"] = "autoadapt"
    activate_epoch: int = 8  # autoadapt: first constrained epoch (1-based)
    mu_reset: str = "always"
    alpha_max: float = 10.0
    alpha_growth: float = 1.0  # > 1: alpha *= growth when the penalty sum stalls with violations
    stop_when_feasible: bool = False
    max_extra_epochs: int = 0
    eq2_alpha: float = 0.3
    adaptation: str = "hinge-squared"
    eq2_memory: bool = False
    track: bool = True  # eq2/none: evaluate the constraints after every step (logs, memory)


@dataclass
class LoopResult:
    """A client's submitted model: ``flat`` (its parameters), ``update`` (``flat`` minus the
    parameters it started from), ``buffers`` (its BatchNorm statistics after training) and
    ``log`` (its record, see the module docstring)."""

    flat: torch.Tensor
    log: dict[str, Any] = field(default_factory=dict)
    update: Optional[torch.Tensor] = None
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)


def _weighted_ce(weight: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Eq. 2's task term as a per-sample loss: ``weight * cross_entropy``."""
    return lambda logits, y: weight * cross_entropy(logits, y)


class ConstrainedRun(StepHook):
    """One client's constrained objective and bookkeeping on core's trainer.

    :meth:`objective` is the recipe's ``extra_loss`` (the box-7 penalty with the current
    multipliers and ``alpha_al``, the equality form, or Eq. 2's adaptation term);
    :meth:`__call__`, the recipe's step hook, runs after every optimizer step of
    :func:`fedarena.core.local.train_sequential`: before activation it keeps the step's
    loss (Eq. 24's ``f``); once constrained it evaluates the constraints at the new
    iterate, updates the multipliers (:func:`update_mu`) and ``alpha_al`` (growth rule),
    offers the iterate to the :class:`Memory`, notes the first feasible step and, with
    ``stop_when_feasible``, ends training there (``HookStep.stop``). State of one client for
    one :func:`train_constrained` call (compares by identity).
    """

    def __init__(self, cfg: LoopConfig, cons: Optional["Constraints"], start: float):
        self.cfg, self.cons, self.start = cfg, cons, start
        self.tracking = cons is not None and (cfg.mode == "autoadapt" or cfg.track)
        self.constrained = False
        self.mem = Memory()
        self.mu: Optional[torch.Tensor] = None
        self.lam: Optional[torch.Tensor] = None
        self.alpha: Optional[float] = None
        self.f_prev: Optional[float] = None
        self.steps = 0  # steps since activation (autoadapt) or since the start (eq2)
        self.first_feasible: Optional[int] = None
        self.t_feasible: Optional[float] = None
        self.last_pen: Optional[float] = None
        self.act_violations: Optional[int] = None
        self.stopped = False
        self.epochs = 0  # epochs begun under this hook
        self.current: Optional[torch.Tensor] = None  # the flat parameters after the last step

    def objective(self, params: dict[str, torch.Tensor], global_params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The term added to the task loss, at the parameters before the step."""
        cfg, cons = self.cfg, self.cons
        v = cons.values(cons.layout.flatten(params))
        if cfg.mode == "eq2":
            return (1 - cfg.eq2_alpha) * adaptation_loss(cons.h(v), v, cfg.adaptation)
        if cons.equality:
            g = cons.h(v, surrogate=True)
            return self.alpha / 2 * g.square().sum() + (self.lam * g).sum()
        return al_penalty(cons.h(v, surrogate=True), self.mu, self.alpha)

    def activate(self, flat: torch.Tensor) -> None:
        """AutoAdapt's activation at the iterate ``flat``: ``alpha_al`` by Eq. 24 from the last
        unconstrained batch's loss, multipliers 0, the memory's first entry (step 0)."""
        cons, cfg = self.cons, self.cfg
        self.constrained = True
        with torch.no_grad():
            v = cons.values(flat)
        hs, ho = cons.h(v, surrogate=True), cons.h(v)
        if cons.equality:
            self.alpha = eq24_alpha(self.f_prev, torch.cat([hs, -hs]), cfg.alpha_max)
            self.lam = torch.zeros_like(hs)
        else:
            self.alpha = eq24_alpha(self.f_prev, hs, cfg.alpha_max)
            self.mu = torch.zeros_like(hs)
        viol, pen = cons.measure(ho)
        self.act_violations = viol
        self.mem.offer(flat, viol, pen, 0)
        if viol == 0:
            self.first_feasible, self.t_feasible = 0, time.perf_counter() - self.start

    def __call__(self, s: HookStep) -> Optional[list[torch.Tensor]]:
        cfg, cons = self.cfg, self.cons
        if bool(s.first[0]):
            self.epochs += 1
        self.current = cons.layout.flatten(dict(zip(s.names, s.params)))[0].detach()
        if not self.constrained:
            self.f_prev = float(s.loss[0])
            return s.bufs
        if not self.tracking:
            return s.bufs
        self.steps += 1
        v = cons.values(self.current)
        hs, ho = cons.h(v, surrogate=True), cons.h(v)
        if cfg.mode == "autoadapt":
            if cons.equality:
                self.lam = self.lam + self.alpha * hs
            else:
                self.mu = update_mu(self.mu, hs, self.alpha, cfg.mu_reset)
        viol, pen = cons.measure(ho)
        if cfg.mode == "autoadapt" and cfg.alpha_growth > 1 and viol > 0:
            if self.last_pen is not None and abs(pen - self.last_pen) <= 1e-12 * max(1.0, abs(self.last_pen)):
                self.alpha = min(self.alpha * cfg.alpha_growth, 1e12)
            self.last_pen = pen
        if cfg.mode == "autoadapt" or cfg.eq2_memory:
            self.mem.offer(self.current, viol, pen, self.steps)
        if viol == 0 and self.first_feasible is None:
            self.first_feasible, self.t_feasible = self.steps, time.perf_counter() - self.start
        if viol == 0 and cfg.stop_when_feasible:
            self.stopped = True
            s.stop[0] = True
        return s.bufs


def train_constrained(
    model: torch.nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    index: np.ndarray,
    prepare: Optional[Callable],
    recipe: TrainRecipe,
    rng: np.random.Generator,
    cfg: LoopConfig,
    cons: Optional[Constraints] = None,
) -> LoopResult:
    """One client's local training with the objective of ``cfg.mode``, on core's trainer
    (:func:`fedarena.core.local.train_sequential`; no loop of its own).

    From ``params`` (and ``buffers``) on samples ``index`` of ``x``/``y``, ``recipe.epochs``
    epochs (plus up to ``cfg.max_extra_epochs``), each a fresh ``rng.permutation`` in
    batches of ``recipe.batch_size`` (:class:`~fedarena.core.local.BatchSchedule`). The
    recipe's optimizer, learning rate, momentum, weight decay and gradient clipping apply;
    the loss is the cross-entropy; the benign clients' client-side additions (projection,
    extra loss, step hook) are not the attacker's and are dropped. Phases, one trainer call
    each:

    * ``none`` (or no constraints): plain training; the update is the trainer's row.
    * ``eq2``: from the first batch, per-sample loss ``a * CE`` and extra loss
      ``(1 - a) * adaptation`` (:meth:`ConstrainedRun.objective`).
    * ``autoadapt``: epochs ``1 .. activate_epoch - 1`` with the recipe's optimizer, the
      hook keeping the last batch's loss; activation (:meth:`ConstrainedRun.activate`);
      the remaining epochs with plain SGD (momentum and weight decay off, Sect. IV) and the
      box-7 penalty as extra loss; then, while the memory's model violates a constraint,
      one more epoch at a time, up to ``max_extra_epochs``. A phase starts from the exact
      parameters the previous one ended with (kept by the hook).

    Returns the submitted model (the memory's for ``autoadapt``, and for ``eq2`` with
    ``eq2_memory``; else the final one, ``params + update``) and the client's log.
    """
    start = time.perf_counter()
    E = recipe.epochs
    base = recipe.with_(loss=cross_entropy, extra_loss=None, project=None, step_hook=None)
    names = list(params)
    start_flat = torch.cat([params[n].detach().reshape(-1) for n in names])
    run = ConstrainedRun(cfg, cons, start)
    cur = {n: params[n].detach() for n in names}
    bufs = dict(buffers)
    done = 0  # epochs trained
    row: Optional[torch.Tensor] = None

    def train(rec: TrainRecipe, epochs: int, hook: Optional[StepHook]) -> torch.Tensor:
        nonlocal bufs, done
        sched = BatchSchedule.build([len(index)], base.with_(epochs=epochs), [rng])  # the hookless recipe's batches
        rows, new = train_sequential(
            model, cur, x, y, [np.asarray(index)], sched, rec.with_(step_hook=hook), prepare=prepare, buffers=bufs
        )
        bufs, done = new[0], done + epochs
        return rows[0]

    was_training = model.training
    model.train()
    try:
        if cfg.mode == "eq2" and cons is not None:
            run.constrained = True
            row = train(
                base.with_(loss=_weighted_ce(cfg.eq2_alpha), extra_loss=run.objective), E, run if run.tracking else None
            )
        elif cfg.mode == "autoadapt" and cons is not None and cfg.activate_epoch <= E:
            free = cfg.activate_epoch - 1
            run.current = start_flat
            if free > 0:
                train(base, free, run)
                cur = cons.layout.unflatten(run.current)
            run.activate(run.current)
            sgd = base.with_(optimizer="sgd", momentum=0.0, weight_decay=0.0, extra_loss=run.objective)
            train(sgd, E - free, run)
            extra = 0
            while not run.stopped and extra < cfg.max_extra_epochs and run.mem.key[0] != 0:
                cur = cons.layout.unflatten(run.current)
                train(sgd, 1, run)
                extra += 1
        else:
            row = train(base, E, None)
    finally:
        model.train(was_training)
    if run.mem.best is not None and (cfg.mode == "autoadapt" or cfg.eq2_memory):
        submitted = run.mem.best
        update = submitted - start_flat
    else:
        update = row
        submitted = start_flat + row
    epochs = run.epochs if run.stopped else done  # stopped: the epochs begun
    log: dict[str, Any] = {"epochs": epochs, "train_seconds": round(time.perf_counter() - start, 4)}
    if cons is not None:
        with torch.no_grad():
            v = cons.values(submitted)
        viol, pen = cons.measure(cons.h(v))
        log.update(
            batches_to_feasible=run.first_feasible,
            seconds_to_feasible=None if run.t_feasible is None else round(run.t_feasible, 4),
            violations=viol,
            penalty_sum=pen,
            violations_at_activation=run.act_violations,
            alpha_al=run.alpha,
            constraints=cons.describe(v),
            num_constraints=int(cons.h(v).numel()),
        )
    return LoopResult(submitted, log, update, bufs)


@torch.no_grad()
def hit_rate(
    model: torch.nn.Module,
    layout: ParamLayout,
    flat: torch.Tensor,
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
    prepare,
    target: int,
) -> Optional[float]:
    """Share of inputs ``x`` that the model with parameters ``flat`` (and ``buffers``, in
    evaluation mode) classifies as ``target`` (None when empty)."""
    if len(x) == 0:
        return None
    was_training = model.training
    model.eval()
    try:
        xb = prepare(x) if prepare is not None else x
        out = functional_call(model, (layout.unflatten(flat), buffers), (xb,))
    finally:
        model.train(was_training)
    return float((out.argmax(1) == target).float().mean())


# ----------------------------------------------------------------------------- the attacks


class _RangeAdaptiveBackdoor(Backdoor):
    """Shared by ``autoadapt`` and ``train-and-scale``: poisoning, ranges, the loop, logs."""

    threat = ThreatModel(knowledge="own", collude=True, aggregator_aware=True)
    mode = "autoadapt"

    def __init__(
        self,
        *,
        target: int = 0,
        source: Optional[int] = None,
        trigger: str = "square",
        poison_frac: float = 0.1,
        trigger_value: Optional[float] = None,
        trigger_size: Optional[int] = None,
        trigger_position: Optional[Union[str, tuple[int, int]]] = "top-left",
        metrics: list[str] = ["cos"],  # noqa: B006 (the registry reads this default)
        scope: str = "whole",
        flat: bool = False,
        ranges: Literal["attackers", "oracle"] = "attackers",
    ):
        super().__init__(
            target=target,
            source=source,
            trigger=trigger,
            poison_frac=poison_frac,
            trigger_value=trigger_value,
            trigger_size=trigger_size,
            trigger_position=trigger_position,
        )
        metrics = list(metrics)
        if not metrics or any(m not in METRICS for m in metrics):
            raise ConfigError(
                "attack.metrics",
                f"must be a non-empty list of {', '.join(METRICS)} (got {metrics!r})",
                ", ".join(METRICS),
            )
        if scope not in SCOPES:
            raise ConfigError("attack.scope", f"unknown scope {scope!r}", ", ".join(SCOPES))
        if ranges not in ("attackers", "oracle"):
            raise ConfigError("attack.ranges", f"unknown value {ranges!r}", "attackers, oracle")
        self.metrics, self.scope, self.flat, self.ranges = metrics, scope, flat, ranges
        if ranges == "oracle":
            self.threat = ThreatModel(knowledge="benign", collude=True, aggregator_aware=True)
        self._logs: dict[int, dict[str, Any]] = {}
        self._poisoned_pick: dict[int, np.ndarray] = {}

    def setup(self, info: DataInfo, generator: torch.Generator) -> None:
        if self.trigger_size is None and len(info.input_shape) == 3:
            self.trigger_size = max(1, round(info.input_shape[-1] / 16))  # 1/16 of the width (Sect. V-C)
        super().setup(info, generator)

    def poison(self, x, y, client_id, generator):
        """PDR: ``floor(poison_frac * n)`` of the client's samples (of the source class, or of
        any non-target class) get the trigger and the target label (decision 12)."""
        cand = torch.nonzero(eligible(y, self.target, self.source)).flatten()
        k = min(len(cand), int(math.floor(self.poison_frac * len(y))))
        pick = cand[torch.randperm(len(cand), generator=generator)[:k].to(cand.device)]
        x, y = x.clone(), y.clone()
        x[pick] = self.client_trigger(client_id).apply(x[pick])
        y[pick] = self.target
        self.poisoned_counts[int(client_id)] = k
        self._poisoned_pick[int(client_id)] = pick.cpu().numpy()  # for the local backdoor accuracy
        return x, y

    def craft(self, view):
        return None

    def distance_specs(self) -> list[tuple[str, str, bool]]:
        return [(m, self.scope, self.flat) for m in self.metrics]

    def client_diagnostics(self) -> dict[int, dict[str, Any]]:
        return self._logs

    def diagnostics(self) -> dict[str, float]:
        if not self._logs:
            return {}
        logs = list(self._logs.values())
        feas = [lg.get("violations") == 0 for lg in logs]
        b = [lg["batches_to_feasible"] for lg in logs if lg.get("batches_to_feasible") is not None]
        out = {"feasible_clients": float(sum(feas)), "clients": float(len(logs))}
        if b:
            out["median_batches_to_feasible"] = float(np.median(b))
        return out

    def loop_config(self, recipe: TrainRecipe) -> LoopConfig:  # pragma: no cover - overridden
        raise NotImplementedError

    def local_train(self, ctx: LocalTrainContext) -> torch.Tensor:
        if ctx.recipe.steps is not None:
            raise ConfigError(
                "fl.local_steps",
                f"attack {self.registered_name!r} trains in epochs (its activation epoch and epoch budget)",
                "unset fl.local_steps; use fl.local_epochs",
            )
        g = ctx.layout.flatten(ctx.global_params).detach()
        m = len(ctx.client_ids)
        seeds = torch.randint(0, 2**31 - 1, (m,), generator=ctx.generator).tolist()
        plain = LoopConfig(mode="none")
        # steps 1-3: a benign model per attacker on its clean data -> ranges
        refs = [
            train_constrained(
                ctx.model,
                ctx.global_params,
                ctx.buffers,
                ctx.x,
                ctx.y,
                ctx.clean_index[i],
                ctx.prepare,
                ctx.recipe,
                np.random.default_rng(seeds[i]),
                plain,
            ).update
            for i in range(m)
        ]
        ref_vals, labels = update_metric_values(torch.stack(refs), g, ctx.layout, self.metrics, self.scope, self.flat)
        if self.ranges == "oracle" and ctx.benign_updates is not None and len(ctx.benign_updates):
            src, _ = update_metric_values(ctx.benign_updates, g, ctx.layout, self.metrics, self.scope, self.flat)
            src = src[torch.isfinite(src).all(1)]
        else:
            src = ref_vals
        lo, hi = src.min(0).values, src.max(0).values
        cfg = self.loop_config(ctx.recipe)
        rows, self._logs = [], {}
        for i, cid in enumerate(ctx.client_ids):
            cons = self.constraints(ctx, g, lo, hi, ref_vals[i], labels)
            res = train_constrained(
                ctx.model,
                ctx.global_params,
                ctx.buffers,
                ctx.x,
                ctx.y,
                ctx.poisoned_index[i],
                ctx.prepare,
                ctx.recipe,
                ctx.rngs[i],
                cfg,
                cons,
            )
            rows.append(self.finish(res.update))
            pick = self._poisoned_pick.get(int(cid))
            if pick is not None and len(pick):
                idx = torch.as_tensor(ctx.poisoned_index[i][pick], device=ctx.x.device)
                res.log["train_backdoor_acc"] = hit_rate(
                    ctx.model, ctx.layout, res.flat, res.buffers, ctx.x[idx], ctx.prepare, self.target
                )
            self._logs[int(cid)] = res.log
        self._offtarget(torch.stack(rows) / self.gamma_scale() + g, torch.stack(refs), g, ctx.layout)
        return torch.stack(rows)

    def _offtarget(self, models: torch.Tensor, ref_updates: torch.Tensor, g: torch.Tensor, layout: ParamLayout) -> None:
        """Side effects on the metrics the attack does not constrain (claim C14): for every
        (metric, scope) of ``cos``/``l2`` x ``whole``/``last``/``layers`` other than its own, how
        many values of the submitted model lie outside the attackers' benign min/max
        (``ref_updates``: the attackers' benign updates)."""
        for metric in METRICS:
            for scope in SCOPES:
                if metric in self.metrics and scope == self.scope:
                    continue
                rv, _ = update_metric_values(ref_updates, g, layout, [metric], scope, self.flat)
                mv, _ = update_metric_values(models - g, g, layout, [metric], scope, self.flat)
                lo, hi = rv.min(0).values, rv.max(0).values
                out = (mv < lo) | (mv > hi)
                for i, cid in enumerate(self._logs):
                    self._logs[cid]["offtarget_outside"] = self._logs[cid].get("offtarget_outside", 0) + int(
                        out[i].sum()
                    )
                    self._logs[cid]["offtarget_total"] = self._logs[cid].get("offtarget_total", 0) + out.shape[1]

    def constraints(self, ctx, g, lo, hi, own, labels) -> Constraints:
        return Constraints(ctx.layout, g, self.metrics, self.scope, self.flat, lo, hi, labels)

    def finish(self, update: torch.Tensor) -> torch.Tensor:
        return update

    def gamma_scale(self) -> float:
        return 1.0


@ATTACKS.register("autoadapt")
class AutoAdapt(_RangeAdaptiveBackdoor):
    """AutoAdapt (Krauß et al., NDSS 2024): colluding backdoor clients adapt their models
    into the benign range of the defense's metrics with an augmented Lagrangian (box 7).

    Args (besides the backdoor's ``target``, ``source``, ``trigger*``, ``poison_frac``):
        metrics, scope, flat: the constrained distances (``cos``/``l2``; ``whole``,
            ``last``, ``layers``; summed or flat).
        ranges: ``attackers`` (min/max over the attackers' benign models, the paper) or
            ``oracle`` (over the round's true benign clients; ablation).
        adapt: False trains the poisoned model without constraints (the unadapted attack,
            same data and schedule).
        activate_epoch: first constrained epoch (1-based); default ``local_epochs - 2``
            (the paper's 8 of 10: three constrained epochs).
        mu_reset: ``always`` (box 7), ``never`` (box 6), ``pair`` (reset only when the
            opposite bound is violated).
        stop_when_feasible: stop at the first iterate meeting every constraint (step 6).
        max_extra_epochs: keep training past ``local_epochs`` while the memory's model
            still violates a constraint, up to this many epochs.
        surrogate_shrink: optimise against the range shrunk by this share of its width on
            each side (Sect. VI); the memory judges the original range.
        constraint: ``range`` or ``equality`` (box 4, one attacker: the target value of each
            metric is the attacker's own benign model's; met when ``|g| <= equality_tol``).
        alpha_max: the cap of Eq. 24 (10). alpha_growth: the optional x1.1 rule (1 = off).
    """

    def __init__(
        self,
        *,
        target: int = 0,
        source: Optional[int] = None,
        trigger: str = "square",
        poison_frac: float = 0.1,
        trigger_value: Optional[float] = None,
        trigger_size: Optional[int] = None,
        trigger_position: Optional[Union[str, tuple[int, int]]] = "top-left",
        metrics: list[str] = ["cos"],  # noqa: B006 (the registry reads this default)
        scope: str = "whole",
        flat: bool = False,
        ranges: Literal["attackers", "oracle"] = "attackers",
        adapt: bool = True,
        activate_epoch: Optional[int] = None,
        mu_reset: Literal["always", "never", "pair"] = "always",
        stop_when_feasible: bool = False,
        max_extra_epochs: int = 0,
        surrogate_shrink: float = 0.0,
        constraint: Literal["range", "equality"] = "range",
        equality_tol: float = 1e-4,
        alpha_max: float = 10.0,
        alpha_growth: float = 1.0,
    ):
        super().__init__(
            target=target,
            source=source,
            trigger=trigger,
            poison_frac=poison_frac,
            trigger_value=trigger_value,
            trigger_size=trigger_size,
            trigger_position=trigger_position,
            metrics=metrics,
            scope=scope,
            flat=flat,
            ranges=ranges,
        )
        if activate_epoch is not None and activate_epoch < 1:
            raise ConfigError("attack.activate_epoch", f"must be >= 1 (got {activate_epoch})", "1..fl.local_epochs")
        if max_extra_epochs < 0:
            raise ConfigError("attack.max_extra_epochs", f"must be >= 0 (got {max_extra_epochs})", ">= 0")
        if not 0.0 <= surrogate_shrink < 0.5:
            raise ConfigError(
                "attack.surrogate_shrink", f"must be in [0, 0.5) (got {surrogate_shrink})", "0 <= s < 0.5"
            )
        if not alpha_max > 0:
            raise ConfigError("attack.alpha_max", f"must be > 0 (got {alpha_max})", "> 0, paper: 10")
        if alpha_growth < 1:
            raise ConfigError("attack.alpha_growth", f"must be >= 1 (got {alpha_growth})", ">= 1, 1 = off, paper: 1.1")
        self.adapt, self.activate_epoch, self.mu_reset = adapt, activate_epoch, mu_reset
        self.stop_when_feasible, self.max_extra_epochs, self.surrogate_shrink = (
            stop_when_feasible,
            max_extra_epochs,
            surrogate_shrink,
        )
        self.constraint, self.equality_tol, self.alpha_max, self.alpha_growth = (
            constraint,
            equality_tol,
            alpha_max,
            alpha_growth,
        )

    def loop_config(self, recipe: TrainRecipe) -> LoopConfig:
        act = self.activate_epoch if self.activate_epoch is not None else max(1, recipe.epochs - 2)
        if act > recipe.epochs and self.adapt:
            raise ConfigError(
                "attack.activate_epoch",
                f"must be <= fl.local_epochs = {recipe.epochs} (got {act})",
                f"1..{recipe.epochs}",
            )
        return LoopConfig(
            mode="autoadapt" if self.adapt else "none",
            activate_epoch=act,
            mu_reset=self.mu_reset,
            alpha_max=self.alpha_max,
            alpha_growth=self.alpha_growth,
            stop_when_feasible=self.stop_when_feasible,
            max_extra_epochs=self.max_extra_epochs,
        )

    def constraints(self, ctx, g, lo, hi, own, labels) -> Constraints:
        if self.constraint == "equality":
            return Constraints(
                ctx.layout,
                g,
                self.metrics,
                self.scope,
                self.flat,
                own.clone(),
                own.clone(),
                labels,
                equality=True,
                tol=self.equality_tol,
            )
        return Constraints(
            ctx.layout, g, self.metrics, self.scope, self.flat, lo, hi, labels, shrink=self.surrogate_shrink
        )


@ATTACKS.register("train-and-scale")
class TrainAndScale(_RangeAdaptiveBackdoor):
    """The Eq. 2 baseline (Bagdasaryan et al., AISTATS 2020, as the AutoAdapt paper uses
    it): ``alpha * task + (1 - alpha) * adaptation`` over the same range constraints as
    AutoAdapt, from the first batch, momentum and weight decay unchanged.

    Args (besides the backdoor's and the ranges' parameters, see ``autoadapt``):
        alpha: Eq. 2's weight (paper: 0.3 default scenario, 0.9 in Table I, sweep 0.1..0.9).
        adaptation: ``hinge-squared`` (default), ``hinge`` or ``raw`` (decision 17).
        gamma: scale the submitted update (1 = off, the paper's setting).
        memory: submit the memory-selected iterate instead of the final one.
    """

    mode = "eq2"

    def __init__(
        self,
        *,
        target: int = 0,
        source: Optional[int] = None,
        trigger: str = "square",
        poison_frac: float = 0.1,
        trigger_value: Optional[float] = None,
        trigger_size: Optional[int] = None,
        trigger_position: Optional[Union[str, tuple[int, int]]] = "top-left",
        metrics: list[str] = ["cos"],  # noqa: B006 (the registry reads this default)
        scope: str = "whole",
        flat: bool = False,
        ranges: Literal["attackers", "oracle"] = "attackers",
        alpha: float = 0.3,
        adaptation: Literal["hinge-squared", "hinge", "raw"] = "hinge-squared",
        gamma: float = 1.0,
        memory: bool = False,
    ):
        super().__init__(
            target=target,
            source=source,
            trigger=trigger,
            poison_frac=poison_frac,
            trigger_value=trigger_value,
            trigger_size=trigger_size,
            trigger_position=trigger_position,
            metrics=metrics,
            scope=scope,
            flat=flat,
            ranges=ranges,
        )
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError("attack.alpha", f"must be in [0, 1] (got {alpha})", "0..1, paper sweep 0.1..0.9")
        if not (math.isfinite(gamma) and gamma > 0):
            raise ConfigError("attack.gamma", f"must be a finite number > 0 (got {gamma})", "> 0, 1 = no scaling")
        self.alpha, self.adaptation, self.gamma, self.memory = alpha, adaptation, gamma, memory

    def loop_config(self, recipe: TrainRecipe) -> LoopConfig:
        return LoopConfig(mode="eq2", eq2_alpha=self.alpha, adaptation=self.adaptation, eq2_memory=self.memory)

    def finish(self, update: torch.Tensor) -> torch.Tensor:
        return update * self.gamma

    def gamma_scale(self) -> float:
        return self.gamma
