"""Runs in lockstep: several runs that share a model train and evaluate as one batch.

A study is many runs that differ in seed, attack, defense or a setting but share the
model architecture, the data shape and the cohort size. One small run is bound by
per-call overheads, not by arithmetic; :class:`Lockstep` plays N
:class:`~fedarena.run.simulation.Simulation` objects round by round, in phases:

(a) each run samples its cohort and decides who trains with which recipe and data
    (:meth:`Simulation.plan_round`, its own attack, defense and seed streams);
(b) the training jobs of all runs that share a recipe are one vectorized computation,
    runs being one more batch axis of the engine's strategies
    (:func:`~fedarena.run.training.train_round`):
    stacked initial parameters, one row per run, and each client's row (``owner``),
    chunked over runs x clients within the working-set budget of
    :func:`~fedarena.core.local.auto_chunk_size`;
(c) each run crafts, defends, steps and records on its own
    (:meth:`Simulation.conclude_round`);
(d) the models of the runs due for evaluation are evaluated together
    (:func:`evaluate_runs`: ``vmap`` over stacked parameters, or the clients-folded
    forward for CNNs on CPU), each run on its own schedule.

:meth:`Simulation.run` is ``Lockstep([sim]).run()``: a single run is a lockstep of one,
so there is one engine. Records are per run and equal, up to float rounding, to running
the runs one by one (``tests/test_lockstep.py``). Models with random operations
(dropout) train batched within a run only, so their dropout masks stay each run's own.

:func:`fedarena.run.runner.run_many` groups configs by :func:`group_key` and runs each group in lockstep.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence

import torch
from torch.func import functional_call, vmap

from ..core.local import auto_chunk_size, auto_strategy, fold_logits
from .results import RoundObservation, RunResult, client_records, round_record, scalar_info
from .training import SampleStores, TrainJob, random_ops, train_round

if TYPE_CHECKING:  # pragma: no cover
    from ..config import ExperimentConfig
    from .simulation import Simulation


#: a lockstep round's phases, in order (:attr:`Lockstep.seconds`)
PHASES = ("plan", "train", "conclude", "evaluate", "records")


def architecture(sim: "Simulation") -> tuple:
    """What runs in one lockstep must share: the model (its printed structure and
    parameter layout), the input shape and the device."""
    return (repr(sim.model), sim.layout, tuple(sim.data.x_train.shape[1:]), str(sim.device))


# ----------------------------------------------------------------------------- (d) evaluation
@torch.no_grad()
def _batched_test_logits(sims: Sequence["Simulation"]) -> Optional[list[torch.Tensor]]:
    """Test-set logits of several runs' models (same architecture and test set) in one
    pass per batch: ``vmap`` over stacked parameters and buffers, or the clients-folded
    forward (CNNs on CPU). ``None`` when the model takes neither (then run by run)."""
    s0 = sims[0]
    model, x, prepare, bs = s0.model, s0.data.x_test, s0.prepare, s0.cfg.eval.batch_size
    sample = (prepare(x[:1]) if prepare is not None else x[:1])[0] if len(x) else None
    strategy = auto_strategy(model, x.device, sample)
    if strategy == "loop":
        return None
    names = list(s0.params)
    chunk = max(1, auto_chunk_size(s0.layout.dim, bs, x[0].numel() if len(x) else 1))
    fwd = vmap(lambda p, b, xb: functional_call(model, (p, b), (xb,)), in_dims=(0, 0, None))
    out: list[torch.Tensor] = []
    model.eval()
    try:
        for start in range(0, len(sims), chunk):
            part = sims[start : start + chunk]
            P = {n: torch.stack([s.params[n] for s in part]) for n in names}
            B = {n: torch.stack([s.buffers[n] for s in part]) for n in s0.buffers}
            pieces = []
            for i in range(0, len(x), bs):
                xb = x[i : i + bs]
                if prepare is not None:
                    xb = prepare(xb)
                if strategy == "fold":
                    pieces.append(
                        fold_logits(model, names, [P[n] for n in names], xb.unsqueeze(0).expand(len(part), *xb.shape))
                    )
                else:
                    pieces.append(fwd(P, B, xb))
            logits = (
                torch.cat(pieces, dim=1) if pieces else torch.empty(len(part), 0, s0.data.num_classes, device=x.device)
            )
            out.extend(logits.unbind(0))
    finally:
        model.train()
    return out


def evaluate_runs(sims: Sequence["Simulation"]) -> list[dict[str, Any]]:
    """Phase (d): each run's test metrics; runs that share the test set and the
    evaluation batch size are evaluated together."""
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(sims):
        groups.setdefault((id(s.data.x_test), s.cfg.eval.batch_size, architecture(s)), []).append(i)
    out: list[Optional[dict[str, Any]]] = [None] * len(sims)
    for members in groups.values():
        logits = _batched_test_logits([sims[i] for i in members]) if len(members) > 1 else None
        for j, i in enumerate(members):
            out[i] = sims[i].evaluate(None if logits is None else logits[j])
    return out  # type: ignore[return-value]


# ----------------------------------------------------------------------------- the driver
class _Progress:
    """One run's bookkeeping inside a lockstep."""

    def __init__(self, sim: "Simulation", result: "RunResult"):
        self.sim, self.result = sim, result
        self.error: Optional[str] = None
        self.diverged_at: Optional[int] = None
        self.last_eval: dict[str, Any] = {}
        self.done = False
        self.wall = 0.0


class Lockstep:
    """Play several runs round by round, training and evaluating them together.

    The runs must share :func:`architecture` (model structure and parameter layout,
    input shape, device); they may differ in anything else, including the number of
    rounds and the evaluation schedule. ``len(sims) == 1`` is the plain run.
    """

    def __init__(self, sims: Sequence["Simulation"], timed: bool = False):
        self.sims = list(sims)
        if not self.sims:
            raise ValueError("a lockstep needs at least one run")
        arch = architecture(self.sims[0])
        for s in self.sims[1:]:
            if architecture(s) != arch:
                raise ValueError(
                    f"runs in one lockstep must share the model, input shape and device: "
                    f"{s.cfg.name!r} differs from {self.sims[0].cfg.name!r}"
                )
        self._stochastic = random_ops(self.sims[0].model)
        self._stores: Optional[SampleStores] = None
        #: seconds spent in each phase, summed over rounds (what ``fedarena bench`` reports):
        #: ``plan`` (a), ``train`` (b), ``conclude`` (c), ``evaluate`` (d), ``records``. On a
        #: GPU they count the device's work only when ``timed`` (a synchronize per phase,
        #: which stops the CPU from running ahead of the GPU: for measurements only)
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._sync = timed and self.sims[0].device.type == "cuda"

    def _lap(self, phase: str, since: float) -> float:
        """Add the time since ``since`` to ``phase`` and return now."""
        if self._sync:
            torch.cuda.synchronize(self.sims[0].device)
        now = time.perf_counter()
        self.seconds[phase] += now - since
        return now

    @property
    def stores(self) -> SampleStores:
        if self._stores is None or self._stores.key != tuple(id(s.x_extra) for s in self.sims):
            self._stores = SampleStores(self.sims)
        return self._stores

    def batch_key(self, sim: "Simulation", job: TrainJob) -> Optional[tuple]:
        """Jobs with equal keys train as one computation (``None``: on their own)."""
        if len(self.sims) == 1 or self._stochastic or not job.vectorized:
            return None
        return (
            self.stores.base_of[id(sim)],
            sim.cfg.fl.algorithm,
            sim.cfg.fl.chunk_size,
            job.recipe,
            job.opt_states is None,
        )

    def run(
        self,
        progress: Optional[Callable[[int, int, dict], None]] = None,
        on_round: Optional[Callable[[int, int, dict[str, list]], None]] = None,
        results: Optional[Sequence[Optional["RunResult"]]] = None,
        observe: Optional[Callable[[int, RoundObservation], None]] = None,
    ) -> list["RunResult"]:
        """Play every run from its ``next_round`` to its last round.

        ``progress(run, t, last_eval)`` after each run's round; ``on_round(run, t, records)``
        with the round's new records (see :meth:`Simulation.run`); ``results[run]``: the
        records so far of a run that continues from a checkpoint; ``observe(run, obs)``:
        each finished round as a :class:`~fedarena.run.results.RoundObservation`.
        """

        runs = [
            _Progress(s, (results[i] if results and results[i] is not None else None) or RunResult(s.cfg))
            for i, s in enumerate(self.sims)
        ]
        for r in runs:
            r.last_eval = r.result.metrics[-1] if r.result.metrics else {}
            r.done = r.sim.next_round >= r.sim.cfg.fl.rounds
        start = time.perf_counter()
        first = min((r.sim.next_round for r in runs), default=0)
        for t in range(first, max(s.cfg.fl.rounds for s in self.sims)):
            live = [r for r in runs if not r.done and r.sim.next_round <= t]
            if not live and all(r.done for r in runs):
                break
            lap = time.perf_counter()
            plans = [r.sim.plan_round(t) for r in live]
            lap = self._lap("plan", lap)
            train_round([(r.sim, p) for r, p in zip(live, plans)], self)
            lap = self._lap("train", lap)
            news, due, seen = [], [], []
            for r, plan in zip(live, plans):
                before = r.sim.flat_params if observe is not None else None
                rec = r.sim.conclude_round(plan)
                if observe is not None:
                    seen.append((r, rec, before))
                new = {
                    "metrics": [],
                    "clients": client_records(rec, r.sim.is_malicious),
                    "rounds": [round_record(rec, r.sim.attack)],
                }
                r.error = rec.get("diverged")
                if r.error is None:
                    r.sim.next_round = t + 1
                    if r.sim.eval_due(t):
                        due.append((r, rec, new))
                news.append(new)
            lap = self._lap("conclude", lap)
            for (r, rec, new), ev in zip(due, evaluate_runs([r.sim for r, _, _ in due])):
                r.last_eval = {"round": t, **ev, "lr": r.sim.lr_at(t), **scalar_info(rec["agg"].info)}
                new["metrics"].append(r.last_eval)
                if not math.isfinite(ev["loss"]):
                    r.error = f"round {t}: the test loss is not finite (NaN/Inf); the run stopped here"
            lap = self._lap("evaluate", lap)
            for r, rec, before in seen:
                observe(
                    runs.index(r),
                    RoundObservation(
                        round=t,
                        cohort=rec["cohort"],
                        malicious=rec["malicious"],
                        U=rec["U"],
                        aggregate=rec["agg"],
                        layout=r.sim.layout,
                        params_before=before,
                        params_after=None if r.error else r.sim.flat_params,
                        metrics=r.last_eval if r.last_eval.get("round") == t else None,
                        diverged=r.error,
                    ),
                )
            now = time.perf_counter() - start
            for r, new in zip(live, news):
                i = runs.index(r)
                for key, rows in new.items():
                    getattr(r.result, key).extend(rows)
                if on_round:
                    on_round(i, t, new)
                if r.error is not None:
                    r.diverged_at, r.done = t, True
                elif progress:
                    progress(i, t, r.last_eval)
                if t + 1 >= r.sim.cfg.fl.rounds:
                    r.done = True
                if r.done:
                    r.wall = now
            self._lap("records", lap)
        for r in runs:
            r.sim.finish_result(r.result, r.wall, r.error, r.diverged_at)
        return [r.result for r in runs]


# ----------------------------------------------------------------------------- grouping
def group_key(cfg: "ExperimentConfig") -> tuple:
    """Configs with equal keys can run in one lockstep (same model, data and input
    pipeline, cohort size, algorithm and device); a cheap proxy of :func:`architecture`
    computed from the config alone."""
    d = cfg.data
    return (
        cfg.model_name,
        repr(sorted((cfg.model.model_extra or {}).items())),
        d.dataset,
        d.root,
        repr(sorted(d.synthetic.items())),
        cfg.cohort_size,
        cfg.fl.algorithm,
        cfg.fl.device,
    )


def groups(configs: Iterable["ExperimentConfig"], max_runs: int = 64) -> list[list[int]]:
    """Indices of ``configs`` in lockstep groups of at most ``max_runs``, in input order."""
    by_key: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(configs):
        by_key.setdefault(group_key(cfg), []).append(i)
    out = []
    for members in by_key.values():
        out += [members[j : j + max_runs] for j in range(0, len(members), max_runs)]
    return sorted(out, key=lambda g: g[0])


__all__ = ["Lockstep", "PHASES", "evaluate_runs", "group_key", "groups", "architecture"]
