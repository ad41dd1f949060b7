"""Training of a round's clients for one run or several in lockstep: the jobs
(:class:`TrainJob`: clients of one run that share a recipe), the shared sample stores
(:class:`SampleStores`), and :func:`train_round`, which fills every run's update matrix
``U`` through :func:`fedarena.core.local.train_clients`, the one dispatch of local
training, with runs that share a recipe batched as one more axis (the phase (b) of
:mod:`fedarena.run.lockstep`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import torch

from ..core.local import BatchSchedule, auto_chunk_size, train_clients
from ..core.recipe import TrainRecipe

if TYPE_CHECKING:  # pragma: no cover
    from .lockstep import Lockstep
    from .simulation import RoundPlan, Simulation


@dataclass
class TrainJob:
    """Clients of one run that train with one recipe in a round."""

    recipe: TrainRecipe
    rows: list[int]  # their rows in the round's U
    index: list[np.ndarray]  # each client's samples: indices into its run's sample store
    schedule: BatchSchedule
    seed: int  # torch seed of the job's random operations (dropout masks)
    vectorized: bool  # False: the sequential path (custom recipes, models with buffers, fl.vectorize=false)
    opt_states: Optional[list] = None  # fl.client_state=persistent: each client's optimizer state, updated in place


def seed_torch(device: torch.device, seed: int) -> None:
    """``torch.manual_seed`` for the generator ``device`` draws from, without queueing
    lazy seeds for every other backend (1 ms per call on a CPU-only machine)."""
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)
    else:
        torch.random.default_generator.manual_seed(seed)


def random_ops(model: torch.nn.Module) -> bool:
    """Whether the model draws random numbers in training (dropout)."""
    return any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


# ----------------------------------------------------------------------------- data
class SampleStores:
    """One sample store per training set shared by the runs: the clean samples once,
    then each run's poisoned copies (``Simulation.x_extra``); ``shift`` maps a run's own
    store indices into it."""

    def __init__(self, sims: Sequence["Simulation"]):
        self.key = tuple(id(s.x_extra) for s in sims)
        self.store: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.base_of: dict[int, int] = {}  # id(sim) -> base key
        self.shift: dict[int, int] = {}
        bases: dict[int, list] = {}
        for s in sims:
            bases.setdefault(id(s.data.x_train), []).append(s)
        for b, members in bases.items():
            x0, y0 = members[0].data.x_train, members[0].data.y_train
            xs, ys, offset = [x0], [y0], len(y0)
            for s in members:
                self.base_of[id(s)] = b
                self.shift[id(s)] = offset - len(y0)
                if len(s.x_extra):
                    xs.append(s.x_extra)
                    ys.append(s.y_extra)
                    offset += len(s.y_extra)
            self.store[b] = (torch.cat(xs), torch.cat(ys)) if len(xs) > 1 else (x0, y0)

    def of(self, sim: "Simulation") -> tuple[torch.Tensor, torch.Tensor]:
        return self.store[self.base_of[id(sim)]]

    def index(self, sim: "Simulation", index: Sequence[np.ndarray]) -> list[np.ndarray]:
        shift, n = self.shift[id(sim)], len(sim.data.y_train)
        if not shift:
            return list(index)
        return [np.where(a >= n, a + shift, a) for a in index]


def train_round(items: Sequence[tuple["Simulation", "RoundPlan"]], lockstep: "Lockstep") -> None:
    """Phase (b): fill every plan's ``U`` with its clients' updates. Jobs of different runs
    with the same recipe (up to the learning rate), store and algorithm are trained as
    one vectorized computation; the rest job by job."""
    groups: dict[Any, list[tuple["Simulation", "RoundPlan", TrainJob]]] = {}
    for i, (sim, plan) in enumerate(items):
        for j, job in enumerate(plan.jobs):
            groups.setdefault(lockstep.batch_key(sim, job) or ("alone", i, j), []).append((sim, plan, job))
    for members in groups.values():
        if len(members) == 1:
            _train_alone(lockstep, *members[0])
        else:
            _train_together(lockstep, members)


def _train_alone(lockstep: "Lockstep", sim: "Simulation", plan: "RoundPlan", job: TrainJob) -> None:
    """One run's job: the engine's vectorized or sequential path from its global model."""
    cfg, r, U = sim.cfg, job.recipe, plan.U
    x, y = lockstep.stores.of(sim)
    idx = lockstep.stores.index(sim, job.index)
    seed_torch(sim.device, job.seed)
    whole = job.vectorized and cfg.fl.algorithm == "fedavg" and len(job.rows) == len(U)
    rows, bufs = train_clients(
        sim.model,
        sim.params,
        x,
        y,
        idx,
        job.schedule,
        r,
        algorithm=cfg.fl.algorithm,
        vectorized=job.vectorized,
        prepare=sim.prepare,
        buffers=sim.buffers,
        chunk_size=cfg.fl.chunk_size,
        opt_states=job.opt_states,
        out=U if whole else None,
    )  # one job: trained straight into U (no k x d copy)
    if not whole:
        U[job.rows] = rows
    plan.new_buffers += bufs


def _train_together(lockstep: "Lockstep", members: list[tuple["Simulation", "RoundPlan", TrainJob]]) -> None:
    """Jobs of several runs as one computation: runs x clients in chunks, each chunk one
    call of the engine with stacked initial parameters (one row per run)."""
    sim0, recipe = members[0][0], members[0][2].recipe
    fedsgd = sim0.cfg.fl.algorithm == "fedsgd"
    x, y = lockstep.stores.of(sim0)
    runs = list({id(s): s for s, _, _ in members}.values())
    slot = {id(s): i for i, s in enumerate(runs)}
    stacked = {n: torch.stack([s.params[n] for s in runs]) for n in sim0.params}
    # one entry per client: (plan, its row in U, its samples, its run, its job, its position in the job)
    clients = []
    for sim, plan, job in members:
        idx = lockstep.stores.index(sim, job.index)
        clients += [(plan, row, idx[j], slot[id(sim)], job, j) for j, row in enumerate(job.rows)]
    d = sim0.layout.dim
    chunk = sim0.cfg.fl.chunk_size or auto_chunk_size(d, recipe.batch_size, x[0].numel() if len(x) else 1)
    if fedsgd:  # runs' clients are grouped per run inside (vmap over runs of vmap(grad)): larger calls
        chunk = max(chunk, len(clients))
    for start in range(0, len(clients), chunk):
        part = clients[start : start + chunk]
        sched = BatchSchedule(
            [c[4].schedule.batches[c[5]] for c in part],
            [c[4].schedule.epoch_start[c[5]] for c in part] if part[0][4].schedule.epoch_start else None,
            [c[4].schedule.seeds[c[5]] for c in part] if part[0][4].schedule.seeds else None,
        )
        index, owner = [c[2] for c in part], [c[3] for c in part]
        states = None if part[0][4].opt_states is None else [c[4].opt_states[c[5]] for c in part]
        G, _ = train_clients(
            sim0.model,
            stacked,
            x,
            y,
            index,
            sched,
            recipe,
            algorithm=sim0.cfg.fl.algorithm,
            prepare=sim0.prepare,
            chunk_size=sim0.cfg.fl.chunk_size if fedsgd else len(part),
            opt_states=states,
            owner=owner,
        )
        if states is not None:
            for c, st in zip(part, states):
                c[4].opt_states[c[5]] = st
        by_plan: dict[int, tuple["RoundPlan", list[int], list[int]]] = {}
        for i, c in enumerate(part):
            entry = by_plan.setdefault(id(c[0]), (c[0], [], []))
            entry[1].append(c[1])
            entry[2].append(i)
        for plan, rows, pos in by_plan.values():
            if rows == list(range(len(plan.U))) and pos == list(range(pos[0], pos[0] + len(pos))):
                plan.U.copy_(G[pos[0] : pos[0] + len(pos)])  # the whole round in order: one copy
            else:
                plan.U[rows] = G[pos]


__all__ = ["TrainJob", "SampleStores", "random_ops", "seed_torch", "train_round"]
