"""One federated run: set-up, the round loop, evaluation and records.

Each round (see DESIGN.md): schedule -> local training (vectorized per shared recipe)
-> craft (model-poisoning attackers) -> defend (pipeline on U) -> server step ->
evaluate -> record.

A round is played in phases (:meth:`Simulation.plan_round`, training, then
:meth:`Simulation.conclude_round`), so that :class:`~fedarena.run.lockstep.Lockstep`
can train the clients of several runs in one vectorized computation and evaluate their
models together. :meth:`Simulation.run` is a lockstep of one run: there is one engine.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch.func import functional_call

from ..attacks.base import Attack, DataInfo, LocalTrainContext, is_noop, runs_local_training
from ..core.distances import update_metric_values
from ..config import ExperimentConfig, defense_dict
from ..data.datasets import TensorDataset
from ..defenses.base import DefensePipeline, RoundContext
from ..defenses.client import client_hook
from ..defenses.pipeline import build_pipeline
from ..defenses.probe import ModelProbe
from ..errors import ConfigError, Diverged
from ..core.metrics import accuracy, backdoor_accuracy, backdoor_durability, class_accuracy
from ..registry import ATTACKS, DATASETS, MODELS, PARTITIONS
from ..core.layout import ParamLayout
from ..core.local import BatchSchedule, has_buffers, train_clients
from ..core.recipe import TrainRecipe
from ..core.seeds import SeedStreams
from .lockstep import Lockstep
from .training import TrainJob, seed_torch, train_round
from .results import RoundObservation, RunResult, client_records, round_record, scalar_info, summarize  # noqa: F401 (re-exported)
from .server_round import Attackers, server_round
from .recovery import spike_metrics
from .sampling import attacker_count, draw_cohort


@dataclass
class RoundPlan:
    """A round between its phases: who trains with which recipe and data (``jobs``), the
    rows the attack trains itself (``own_loop``), and the update matrix ``U`` the
    training fills in."""

    round: int
    cohort: np.ndarray
    active: bool  # the attack's window is open
    mal_mask: np.ndarray  # (k,) attacking clients of the cohort
    jobs: list[TrainJob]
    U: torch.Tensor
    index: list[np.ndarray]  # each row's samples in the run's sample store
    recipe: TrainRecipe  # the round's base recipe
    own_loop: list[int] = field(default_factory=list)
    new_buffers: list[dict[str, torch.Tensor]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("fl.device", "CUDA is not available on this machine", "cpu, auto")
    return torch.device(name)


def load_dataset(cfg: ExperimentConfig) -> TensorDataset:
    """The run's dataset; loaded once per process and shared (read-only) by later runs."""
    opts: dict[str, Any] = {"root": cfg.data.root, "download": cfg.data.download, "verify": cfg.data.verify}
    if cfg.data.dataset == "synthetic":
        opts.update(cfg.data.synthetic)
    n_test = cfg.eval.test_samples
    key = (cfg.data.dataset, repr(sorted(opts.items())), n_test)
    if key not in _DATASET_CACHE:
        if len(_DATASET_CACHE) >= 2:
            _DATASET_CACHE.pop(next(iter(_DATASET_CACHE)))
        data = DATASETS.build(cfg.data.dataset, opts)
        if n_test is not None:  # eval.test_samples: the first N test samples (one shared copy per process)
            data = dataclasses.replace(data, x_test=data.x_test[:n_test].clone(), y_test=data.y_test[:n_test].clone())
        _DATASET_CACHE[key] = data
    if cfg.eval.split == "validation":  # train minus a held-out share; that share is the "test" set
        from ..data.validation import validation_split

        return dataclasses.replace(validation_split(_DATASET_CACHE[key], cfg.eval.validation_frac))
    return dataclasses.replace(_DATASET_CACHE[key])


_DATASET_CACHE: dict[tuple, TensorDataset] = {}
_DEVICE_COPIES: dict[tuple[int, str], tuple[torch.Tensor, TensorDataset]] = {}


def on_device(data: TensorDataset, device: torch.device) -> TensorDataset:
    """``data`` on ``device``; runs of one process that load the same dataset share one
    copy per device (so that runs in lockstep share their sample store on a GPU too)."""
    if torch.device(device).type == "cpu":
        return data.to(device)
    key = (id(data.x_train), str(device))
    hit = _DEVICE_COPIES.get(key)
    if hit is None or hit[0] is not data.x_train:
        if len(_DEVICE_COPIES) >= 2:
            _DEVICE_COPIES.pop(next(iter(_DEVICE_COPIES)))
        hit = (data.x_train, dataclasses.replace(data).to(device))
        _DEVICE_COPIES[key] = hit
    return dataclasses.replace(hit[1])


def build_model(cfg: ExperimentConfig, data: TensorDataset) -> torch.nn.Module:
    params = MODELS.validate(cfg.model_name, dict(cfg.model.model_extra or {}))
    return MODELS.get(cfg.model_name)(data.input_shape, data.num_classes, **params)


def partition_data(cfg: ExperimentConfig, labels: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    name = cfg.data.partition
    opts = {
        "dirichlet": {
            "alpha": cfg.data.alpha,
            "dirichlet_variant": cfg.data.dirichlet_variant,
            "min_size": cfg.data.min_size,
        },
        "shards": {"classes_per_client": cfg.data.classes_per_client},
        "dominant-class": {"q": cfg.data.q, "q_rest": cfg.data.q_rest},
        "per-class-sample": {"per_class": cfg.data.per_class},
    }.get(name, {})
    return PARTITIONS.get(name)(labels, cfg.fl.num_clients, rng, **opts)


def chosen_malicious(ids: Sequence[int], num_clients: int) -> np.ndarray:
    """Sorted unique malicious client ids, checked against ``fl.num_clients``."""
    out = np.unique(np.asarray(list(ids), dtype=np.int64))
    if len(out) and (out[0] < 0 or out[-1] >= num_clients):
        raise ConfigError(
            "malicious", f"client ids must be in 0..{num_clients - 1} (got {out.tolist()})", f"0..{num_clients - 1}"
        )
    return out


class Simulation:
    """Set up everything a run needs from a validated config; :meth:`run` plays it."""

    #: what a checkpoint saves besides the Stateful components (attack, defense pipeline):
    #: everything the next round depends on that set-up does not rebuild from the config
    STATE_ATTRS = ["next_round", "params", "buffers", "client_momentum", "client_opt_state", "prev_update"]

    def __init__(
        self, cfg: ExperimentConfig, data: Optional[TensorDataset] = None, malicious: Optional[Sequence[int]] = None
    ):
        """``malicious``: the malicious client ids (default: ``attack.num_malicious`` ids
        drawn from the attack stream)."""
        self.cfg = cfg
        self.streams = SeedStreams(cfg.seed)
        self.device = resolve_device(cfg.fl.device)
        self.data = on_device(data or load_dataset(cfg), self.device)
        self.prepare = self.data.normalizer(self.device)
        labels = self.data.y_train.cpu().numpy()
        self.client_index = partition_data(cfg, labels, self.streams.numpy("partition"))

        torch.manual_seed(self.streams.seed_of("training"))
        self.model = build_model(cfg, self.data).to(self.device)
        self.params = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        self.buffers = {n: b.detach().clone() for n, b in self.model.named_buffers()}
        self.layout = ParamLayout.from_params(self.params, getattr(self.model, "layer_groups", None))

        self.attack: Attack = ATTACKS.build(cfg.attack.name, cfg.attack.params())
        if cfg.attack.optimize is not None:  # search the attack's strength against the defense each round
            from ..attacks.optimize import OptimizedAttack

            self.attack = OptimizedAttack(self.attack, **cfg.attack.optimize.model_dump())
        info = DataInfo(
            self.data.num_classes,
            self.data.input_shape,
            cfg.data.dataset,
            cfg.data.root,
            cfg.data.download,
            cfg.data.verify,
        )
        self.data_info = info  # what an attack may know about the task (public: attacks built on the side)
        self.attack.setup(info, self.streams.torch("attack", 0))
        rng = self.streams.numpy("attack", 1)
        self.malicious = np.sort(rng.choice(cfg.fl.num_clients, cfg.attack.num_malicious, replace=False)).astype(
            np.int64
        )
        if malicious is not None:
            self.malicious = chosen_malicious(malicious, cfg.fl.num_clients)
        self.is_malicious = np.zeros(cfg.fl.num_clients, dtype=bool)
        self.is_malicious[self.malicious] = True

        # sample store (x_store): clean training data, then each malicious client's poisoned
        # copy (x_extra), kept apart so that runs in lockstep share the clean data
        self.x_extra, self.y_extra = self.data.x_train[:0], self.data.y_train[:0]
        self.poisoned_index: dict[int, np.ndarray] = {}
        self._poison_clients()

        self.pipeline: DefensePipeline = build_pipeline(defense_dict(cfg))
        self.pipeline.validate(cfg.cohort_size, cfg.declared_f)
        self.recipe = TrainRecipe(
            lr=cfg.fl.lr,
            momentum=cfg.fl.momentum,
            weight_decay=cfg.fl.weight_decay,
            batch_size=cfg.fl.batch_size,
            epochs=cfg.fl.local_epochs,
            steps=cfg.fl.local_steps,
            grad_clip=cfg.fl.grad_clip,
            optimizer=cfg.fl.optimizer,
            betas=tuple(cfg.fl.adam_betas),
            eps=cfg.fl.adam_eps,
        )
        self.recipe = self.pipeline.client_recipe(self.recipe)
        self.benign_recipe = self.recipe.with_(step_hook=client_hook(cfg.defense))  # attackers train without it
        if cfg.fl.algorithm == "fedsgd" and runs_local_training(self.attack):
            raise ConfigError(
                "attack.name",
                f"{cfg.attack.name!r} runs its own local training, which needs fl.algorithm=fedavg",
                "fl.algorithm=fedavg",
            )
        if cfg.fl.algorithm == "fedsgd" and self.recipe.project is not None:
            raise ConfigError(
                "defense.clip_at", "client-side projection needs local steps (fl.algorithm=fedavg)", "server"
            )
        self.root_index = self._root_index()
        self.client_momentum: dict[int, torch.Tensor] = {}  # fedsgd: persistent per-client momentum
        # fl.client_state=persistent: each client's local optimizer state (momentum buffer, Adam
        # moments and step count; flat tensors on the run's device), kept between its participations
        self.client_opt_state: dict[int, dict[str, torch.Tensor]] = {}
        self.prev_update: Optional[torch.Tensor] = None
        self._heldout: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # aggregator-aware attackers' loss batch
        self.backdoor_test = self.attack.backdoor_testset(self.data.x_test, self.data.y_test)
        self.next_round = 0  # the round run() starts at (> 0 after loading a checkpoint)

    # ------------------------------------------------------------ set-up helpers
    def _poison_clients(self) -> None:
        xs, ys = [self.x_extra], [self.y_extra]
        offset = len(self.data.y_train)
        for cid in self.malicious:
            idx = torch.from_numpy(self.client_index[cid]).to(self.device)
            out = self.attack.poison(
                self.data.x_train[idx].clone(),
                self.data.y_train[idx].clone(),
                int(cid),
                self.streams.torch("attack", 2, int(cid)),
            )
            if out is None:
                continue
            px, py = out
            xs.append(px.to(self.device))
            ys.append(py.to(self.device))
            self.poisoned_index[int(cid)] = np.arange(offset, offset + len(py))
            offset += len(py)
        if len(xs) > 1:
            self.x_extra, self.y_extra = torch.cat(xs), torch.cat(ys)

    def _own_store(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Training data then ``x_extra``, concatenated once (not on every access: the
        attacker-run training reads it every round); rebuilt if ``x_extra`` is replaced."""
        cached = getattr(self, "_store_cache", None)
        if cached is None or cached[0] is not self.x_extra:
            if len(self.x_extra):
                x, y = torch.cat([self.data.x_train, self.x_extra]), torch.cat([self.data.y_train, self.y_extra])
            else:
                x, y = self.data.x_train, self.data.y_train
            cached = self._store_cache = (self.x_extra, x, y)
        return cached[1], cached[2]

    @property
    def x_store(self) -> torch.Tensor:
        """The sample store that client indices point into: training data, then ``x_extra``."""
        return self._own_store()[0]

    @property
    def y_store(self) -> torch.Tensor:
        return self._own_store()[1]

    def _root_index(self) -> Optional[np.ndarray]:
        """Training samples held by the server for root-dataset rules (FLTrust)."""
        size = int(getattr(self.pipeline.aggregator, "root_size", 0) or 0)
        if size <= 0:
            return None
        n = len(self.data.y_train)
        if size > n:
            raise ConfigError("defense.root_size", f"must be <= the training set size {n} (got {size})", f"1..{n}")
        return np.sort(self.streams.numpy("defense", 10**6).choice(n, size, replace=False))

    def root_gradient(self, t: int):
        """``flat_params -> update`` of the benign recipe on the root dataset (one client)."""

        def fn(flat: torch.Tensor) -> torch.Tensor:
            params = {n: v.clone() for n, v in self.layout.unflatten(flat).items()}
            recipe = self.recipe_at(t)
            sched = BatchSchedule.build([len(self.root_index)], recipe, [self.streams.numpy("defense", t, 10**6)])
            fedsgd = self.cfg.fl.algorithm == "fedsgd"
            rows, _ = train_clients(
                self.model,
                params,
                self.data.x_train,
                self.data.y_train,
                [self.root_index],
                sched,
                recipe,
                algorithm=self.cfg.fl.algorithm,
                vectorized=False,
                prepare=self.prepare,
                buffers=None if fedsgd else self.buffers,
            )
            return rows[0]

        def checked(flat: torch.Tensor) -> torch.Tensor:
            g0 = fn(flat)
            if not torch.isfinite(g0).all():
                raise Diverged("the server's update on its root dataset is not finite (NaN/Inf)")
            return g0

        return checked

    @property
    def flat_params(self) -> torch.Tensor:
        return self.layout.flatten(self.params)

    def lr_at(self, t: int) -> float:
        return self.cfg.fl.lr * self.cfg.fl.lr_decay ** sum(1 for r in self.cfg.fl.lr_decay_at if t >= r)

    def recipe_at(self, t: int) -> TrainRecipe:
        """The local recipe of round ``t``: the learning-rate schedule applies to FedAvg's
        local steps (FedSGD applies ``fl.lr`` at the server instead)."""
        return self.recipe.with_(lr=self.lr_at(t)) if self.cfg.fl.algorithm == "fedavg" else self.recipe

    def attack_active(self, t: int) -> bool:
        a = self.cfg.attack
        return (not is_noop(self.attack)) and t >= a.start_round and (a.end_round is None or t <= a.end_round)

    # ------------------------------------------------------------ one round
    def sample_clients(self, t: int) -> np.ndarray:
        """The round's cohort, drawn by the ``fl.sampling`` schedule (:mod:`fedarena.run.sampling`)
        from the round's own ``sampling`` stream (the same for every defense)."""
        fl, k = self.cfg.fl, self.cfg.cohort_size
        m = attacker_count(
            t,
            fl.sampling,
            k,
            fl.num_clients,
            len(self.malicious),
            period=fl.period,
            spike_rounds=fl.spike_rounds,
            spike_malicious=fl.spike_malicious,
            counts=fl.malicious_counts,
            forced_rounds=fl.forced_rounds,
            forced_malicious=fl.forced_malicious,
        )
        return draw_cohort(self.streams.numpy("sampling", t), k, fl.num_clients, self.malicious, self.is_malicious, m)

    def plan_round(self, t: int) -> RoundPlan:
        """Phase (a): the cohort, who attacks, and the round's training jobs (who trains
        with which recipe and data), from this run's own seed streams."""
        cohort = self.sample_clients(t)
        active = self.attack_active(t)
        mal_mask = self.is_malicious[cohort] if active else np.zeros(len(cohort), dtype=bool)
        if mal_mask.any():
            self.attack.begin_round(t, self.layout, self.flat_params, self.prev_update)
        return self._plan_jobs(t, cohort, active, mal_mask)

    def _plan_jobs(self, t: int, cohort: np.ndarray, active: bool, mal_mask: np.ndarray) -> RoundPlan:
        cfg = self.cfg
        recipe = self.recipe_at(t)
        benign = recipe.with_(step_hook=self.benign_recipe.step_hook)
        groups: dict[TrainRecipe, list[int]] = {}
        index: list[np.ndarray] = []
        own_loop: list[int] = []  # rows whose local training the attack runs itself
        for row, cid in enumerate(cohort):
            cid = int(cid)
            mal = active and self.is_malicious[cid]
            index.append(self.poisoned_index[cid] if mal and cid in self.poisoned_index else self.client_index[cid])
            if mal and runs_local_training(self.attack):
                own_loop.append(row)
                continue
            if mal and not self.attack.trains:
                continue  # its row is crafted; no training needed
            r = (self.attack.recipe(recipe, cid) or recipe) if mal else benign
            groups.setdefault(r, []).append(row)
        seq_model = has_buffers(self.model) or not cfg.fl.vectorize
        persistent = cfg.fl.client_state == "persistent"
        jobs = []
        for r, rows in groups.items():
            idx = [index[i] for i in rows]
            rngs = [self.streams.numpy("training", t, int(cohort[i])) for i in rows]
            jobs.append(
                TrainJob(
                    r,
                    rows,
                    idx,
                    BatchSchedule.build([len(a) for a in idx], r, rngs),
                    seed=self.streams.seed_of("training") + t,  # dropout masks
                    vectorized=r.vectorize and not seq_model,
                    opt_states=[self.client_opt_state.get(int(cohort[i])) for i in rows] if persistent else None,
                )
            )
        U = torch.zeros(len(cohort), self.layout.dim, device=self.device)
        return RoundPlan(t, cohort, active, mal_mask, jobs, U, index, recipe, own_loop)

    def finish_updates(self, plan: RoundPlan) -> torch.Tensor:
        """After training: keep the clients' optimizer states (``fl.client_state=persistent``),
        let the attack train its own rows, average the clients' buffers (BatchNorm
        statistics) into the global ones; FedSGD clients send their momentum. Returns ``U``."""
        U, cohort = plan.U, plan.cohort
        for job in plan.jobs:
            if job.opt_states is not None:
                self.client_opt_state.update({int(cohort[i]): st for i, st in zip(job.rows, job.opt_states)})
        if plan.own_loop:
            U[plan.own_loop] = self.attacker_training(plan.round, cohort, plan.own_loop, plan.index, plan.recipe, U).to(
                U.device, U.dtype
            )
        if plan.new_buffers and self.buffers and self.cfg.fl.buffers == "mean":
            for n, b in self.buffers.items():
                stacked = torch.stack([nb[n] for nb in plan.new_buffers])
                self.buffers[n] = (
                    stacked.float().mean(0).to(b.dtype) if b.is_floating_point() else stacked.max(0).values
                )
        if self.cfg.fl.algorithm == "fedsgd":  # m = beta m + (1 - beta) g, from m = 0 (one op for all rows)
            beta = self.cfg.fl.client_momentum
            prev = [self.client_momentum.get(int(c)) for c in cohort]
            last = getattr(self, "_momentum_rows", None)  # last round's rows: no stacking when the cohort repeats
            if (
                last is not None
                and len(last) == len(prev)
                and all(m is not None and m.data_ptr() == r.data_ptr() for m, r in zip(prev, last))
            ):
                M = last
            else:
                M = (
                    torch.stack([torch.zeros_like(U[i]) if m is None else m for i, m in enumerate(prev)])
                    if any(m is not None for m in prev)
                    else None
                )
            U.mul_(1 - beta)  # in place: two passes over U, no k x d temporaries
            if M is not None:
                U.add_(M, alpha=beta)
            kept = U.clone()  # the defenses may change U in place
            for row, cid in enumerate(cohort):
                self.client_momentum[int(cid)] = kept[row]
            self._momentum_rows = kept
        return U

    def local_updates(self, t: int, cohort: np.ndarray, active: bool) -> torch.Tensor:
        """Rows of U before crafting: each client's honest (or data-poisoned) update."""
        mal_mask = self.is_malicious[cohort] if active else np.zeros(len(cohort), dtype=bool)
        if mal_mask.any():
            self.attack.begin_round(t, self.layout, self.flat_params, self.prev_update)
        plan = self._plan_jobs(t, cohort, active, mal_mask)
        train_round([(self, plan)], self._solo())
        return self.finish_updates(plan)

    def _solo(self) -> Lockstep:
        if getattr(self, "_lockstep", None) is None:
            self._lockstep = Lockstep([self])
        return self._lockstep

    def attacker_training(
        self, t: int, cohort: np.ndarray, rows: list[int], index: list[np.ndarray], recipe: TrainRecipe, U: torch.Tensor
    ) -> torch.Tensor:
        """The update rows of malicious clients whose attack runs its own local loop
        (:meth:`Attack.local_train`); benign rows of ``U`` are final by now."""
        ids = [int(cohort[i]) for i in rows]
        benign = None
        if self.attack.threat.knowledge == "benign":
            mask = np.ones(len(cohort), dtype=bool)
            mask[rows] = False
            benign = U[torch.from_numpy(mask)].clone()
        ctx = dataclasses.replace(
            self.local_context(t, ids), poisoned_index=[index[i] for i in rows], recipe=recipe, benign_updates=benign
        )
        seed_torch(self.device, self.streams.seed_of("attack") + t)  # dropout masks
        out = self.attack.local_train(ctx)
        if out is None or tuple(out.shape) != (len(rows), self.layout.dim):
            raise RuntimeError(
                f"attack {self.cfg.attack.name!r}: local_train must return a "
                f"({len(rows)}, {self.layout.dim}) tensor of update rows"
            )
        return out

    def local_context(self, t: int, clients: Sequence[int]) -> LocalTrainContext:
        """What local training of ``clients`` in round ``t`` starts from, as
        :meth:`~fedarena.attacks.base.Attack.local_train` gets it: the model, the current
        global parameters and buffers, the layout, each client's clean sample indices and
        its data after poisoning (a malicious client's poisoned copy, else the clean data)
        into the sample store ``x``/``y``, ``prepare``, the round's recipe, each client's
        batch-order stream and the attack's round generator (fresh, seeded streams: calling
        this changes nothing). For tools that train a client outside a round, e.g. after
        :meth:`run` (the AutoAdapt reproduction times one client's local training); the
        tensors are the run's own: read them, do not modify them."""
        ids = [int(c) for c in clients]
        return LocalTrainContext(
            round=t,
            model=self.model,
            global_params=self.params,
            buffers=self.buffers,
            layout=self.layout,
            client_ids=ids,
            clean_index=[self.client_index[c] for c in ids],
            poisoned_index=[self.poisoned_index.get(c, self.client_index[c]) for c in ids],
            x=self.x_store,
            y=self.y_store,
            prepare=self.prepare,
            recipe=self.recipe_at(t),
            rngs=[self.streams.numpy("training", t, c) for c in ids],
            generator=self.streams.torch("attack", 4, t),
        )

    def client_extras(self, U: torch.Tensor, mal_mask: np.ndarray, cohort: np.ndarray) -> list[dict[str, Any]]:
        """Per-row additions to ``clients.jsonl``: the distances to the global model that
        the attack and the defense work with, and the attack's per-client records."""
        specs = list(
            dict.fromkeys(
                [*self.attack.distance_specs(), *getattr(self.pipeline.aggregator, "distance_specs", lambda: [])()]
            )
        )
        extras: list[dict[str, Any]] = [{} for _ in cohort]
        if specs:
            dist: list[dict[str, Any]] = [{} for _ in cohort]
            for metric, scope, flat in specs:
                vals, labels = update_metric_values(U, self.flat_params, self.layout, [metric], scope, flat)
                labels = [lb + ("/flat" if flat else "") for lb in labels]
                for i, row in enumerate(vals.tolist()):
                    dist[i].update({lb: (v if math.isfinite(v) else None) for lb, v in zip(labels, row)})
            for e, d in zip(extras, dist):
                e["distances"] = d
        if mal_mask.any():
            diag = self.attack.client_diagnostics()
            for i, cid in enumerate(cohort):
                if mal_mask[i] and int(cid) in diag:
                    extras[i].update(diag[int(cid)])
        return extras

    def run_round(self, t: int) -> dict[str, Any]:
        plan = self.plan_round(t)
        train_round([(self, plan)], self._solo())
        return self.conclude_round(plan)

    def conclude_round(self, plan: RoundPlan) -> dict[str, Any]:
        """Phase (c), after training: upload, craft, defend, step the global model. Returns
        the round's record (``"diverged"`` set when the aggregate or the model is not finite)."""
        cfg = self.cfg
        t, cohort, active, mal_mask = plan.round, plan.cohort, plan.active, plan.mal_mask
        raw_U = self.finish_updates(plan)
        U = self.pipeline.client_upload(raw_U, self.streams.torch("defense", t, 1))  # e.g. local DP noise
        honest_U = U
        ctx = RoundContext(
            round=t,
            layout=self.layout,
            client_ids=torch.from_numpy(cohort),
            num_samples=torch.tensor([len(self.client_index[c]) for c in cohort]),
            f=cfg.declared_f,
            global_params=self.flat_params,
            prev_update=self.prev_update,
            generator=self.streams.torch("defense", t),
            server_lr=cfg.fl.server_lr,
            root_gradient=self.root_gradient(t) if self.root_index is not None else None,
            extras={
                "lr": self.lr_at(t),
                "algorithm": cfg.fl.algorithm,
                "sampling_rate": cfg.cohort_size / cfg.fl.num_clients,
                "probe": self.probe(),
            },
        )
        attackers = None
        if active and mal_mask.any():
            rows = np.flatnonzero(mal_mask)
            omniscient = self.attack.threat.knowledge == "benign"
            attackers = Attackers(
                self.attack,
                torch.from_numpy(rows),
                torch.from_numpy(cohort[rows]),
                lr=self.lr_at(t) if cfg.fl.algorithm == "fedsgd" else cfg.fl.server_lr,
                algorithm=cfg.fl.algorithm,
                generator=self.streams.torch("attack", 3, t),
                own=raw_U[rows] if U is not raw_U else None,
                benign_ids=torch.from_numpy(cohort[~mal_mask]) if omniscient else None,
                loss=self._attacker_loss,
            )
        out = server_round(
            U, ctx, self.pipeline, lambda u: self.server_step(t, u), attackers=attackers, defense_name=cfg.defense.name
        )
        U, agg = out.U, out.agg
        if plan.new_buffers and self.buffers and cfg.fl.buffers == "selected":
            self.buffers = selected_buffers(self.buffers, plan, agg.weights)
        record: dict[str, Any] = {
            "round": t,
            "cohort": cohort,
            "malicious": mal_mask,
            "U": U,
            "honest_U": honest_U,
            "agg": agg,
            "extras": self.client_extras(U, mal_mask, cohort),
        }
        if out.params is None:
            record["diverged"] = f"round {t}: {out.problem}; the run stopped here"
            return record
        self.params = {n: v.clone() for n, v in self.layout.unflatten(out.params).items()}
        self.prev_update = agg.update.detach()
        return record

    def probe(self) -> ModelProbe:
        """The model as defenses may query it (``RoundContext.extras["probe"]``)."""
        root_x = (
            None if self.root_index is None else self.data.x_train[torch.from_numpy(self.root_index).to(self.device)]
        )
        return ModelProbe(
            self.model,
            self.buffers,
            self.layout,
            tuple(self.data.input_shape),
            self.data.num_classes,
            self.prepare,
            root_x,
        )

    def server_step(self, t: int, update: torch.Tensor) -> torch.Tensor:
        """The change of the flat global parameters an aggregate causes in round ``t``."""
        return -self.lr_at(t) * update if self.cfg.fl.algorithm == "fedsgd" else self.cfg.fl.server_lr * update

    def _attacker_loss(self, flat: torch.Tensor) -> float:
        """Loss of the model at ``flat`` on the malicious clients' held-out batch: up to
        ``attack.optimize.batch_size`` (256) samples of their clean data, drawn once per run."""
        if self._heldout is None:
            idx = np.concatenate([self.client_index[int(c)] for c in self.malicious])
            opt = self.cfg.attack.optimize
            size = min(len(idx), opt.batch_size if opt is not None else 256)
            drawn = np.sort(self.streams.numpy("attack", 5).choice(idx, size, replace=False))
            pick = torch.from_numpy(drawn).to(self.device)
            self._heldout = (self.data.x_train[pick], self.data.y_train[pick])
        x, y = self._heldout
        params = self.layout.unflatten(flat)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                xb = x if self.prepare is None else self.prepare(x)
                logits = functional_call(self.model, (params, self.buffers), (xb,))
                return float(torch.nn.functional.cross_entropy(logits, y))
        finally:
            self.model.train(was_training)

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of the global model on raw inputs ``x`` (batched)."""
        self.model.eval()
        outs = []
        bs = self.cfg.eval.batch_size
        for i in range(0, len(x), bs):
            xb = x[i : i + bs]
            if self.prepare is not None:
                xb = self.prepare(xb)
            outs.append(functional_call(self.model, (self.params, self.buffers), (xb,)))
        self.model.train()
        logits = torch.cat(outs) if outs else torch.empty(0, self.data.num_classes, device=x.device)
        return logits, predictions(logits)

    def evaluate(self, logits: Optional[torch.Tensor] = None) -> dict[str, Any]:
        """Test metrics of the global model; ``logits``: its test-set logits when already
        computed (the lockstep evaluates several runs' models together)."""
        if logits is None:
            logits, pred = self.predict(self.data.x_test)
        else:
            pred = predictions(logits)
        loss = float(torch.nn.functional.cross_entropy(logits, self.data.y_test))
        out: dict[str, Any] = {
            "main_acc": accuracy(pred, self.data.y_test),
            "loss": loss,
            "backdoor_acc": None,
            "base_acc": None,
        }
        if getattr(self.attack, "dynamic_trigger", False):  # a trigger that changes every round (A3FL): its current one
            self.backdoor_test = self.attack.backdoor_testset(self.data.x_test, self.data.y_test)
        if self.backdoor_test is not None:
            bx, by = self.backdoor_test
            _, bpred = self.predict(bx)
            out["backdoor_acc"] = backdoor_accuracy(bpred, by)
        src = self.attack.source_class
        if src is not None:
            out["base_acc"] = class_accuracy(pred, self.data.y_test, int(src))
        return out

    def eval_due(self, t: int) -> bool:
        return (t + 1) % self.cfg.eval.every == 0 or t == self.cfg.fl.rounds - 1

    # ------------------------------------------------------------ the loop
    def run(
        self,
        progress: Optional[Callable[[int, dict], None]] = None,
        on_round: Optional[Callable[[int, dict[str, list]], None]] = None,
        result: Optional[RunResult] = None,
        observe: Optional[Callable[[RoundObservation], None]] = None,
    ) -> RunResult:
        """Play rounds ``next_round .. fl.rounds - 1``: a lockstep of this one run.

        ``on_round(t, records)``: called after every round with the round's new records,
        ``{"metrics": [...], "clients": [...], "rounds": [...]}`` (a records sink such as
        :class:`fedarena.run.records.RunWriter`). ``result``: the records of the rounds
        before ``next_round`` when a run continues from a checkpoint.

        ``observe(obs)``: every finished round as a
        :class:`~fedarena.run.results.RoundObservation` (the rows the defense saw, its
        aggregate, the model before and after, the round's metrics): instrumentation
        without a round loop of one's own.

        A run whose aggregate, parameters or test loss become NaN/Inf stops at that round
        with ``status: diverged``.
        """
        return Lockstep([self]).run(
            None if progress is None else (lambda i, t, ev: progress(t, ev)),
            None if on_round is None else (lambda i, t, new: on_round(t, new)),
            [result],
            None if observe is None else (lambda i, obs: observe(obs)),
        )[0]

    def loss_gradient(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The gradient ``(d,)`` of the mean cross-entropy on ``(x, y)`` (inputs as stored,
        normalised here) at the flat parameters ``flat``: for diagnostics such as the
        first-order change of a backdoor loss."""
        params = {n: v.detach().clone().requires_grad_(True) for n, v in self.layout.unflatten(flat).items()}
        xp = self.prepare(x) if self.prepare is not None else x
        loss = torch.nn.functional.cross_entropy(functional_call(self.model, (params, self.buffers), (xp,)), y)
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(params.values()))])

    def finish_result(self, result: RunResult, wall: float, error: Optional[str], diverged_at: Optional[int]) -> None:
        """The run's summary once its last round is played."""
        cfg = self.cfg
        result.summary = summarize(result.metrics, cfg, wall, error, self.next_round)
        result.summary["diverged_at"] = diverged_at
        if self.backdoor_test is not None:  # backdoor accuracy by round type, recovery after spikes
            bd = {m["round"]: m.get("backdoor_acc") for m in result.metrics}
            result.summary.update(
                spike_metrics(
                    [r["num_attacking"] for r in result.rounds],
                    [bd.get(t) for t in range(len(result.rounds))],
                    cfg.cohort_size,
                    cfg.eval.recovery_threshold,
                )
            )
            result.summary.update(
                backdoor_durability(
                    [r["num_attacking"] for r in result.rounds],
                    [bd.get(t) for t in range(len(result.rounds))],
                    cfg.eval.recovery_threshold,
                )
            )
        for stage in (*self.pipeline.pre, self.pipeline.aggregator, *self.pipeline.post):
            final = getattr(stage, "final_metrics", None)  # a defense's own evaluation (CRFL's certification)
            if final is not None and error is None:
                result.summary.update(
                    final(
                        self.probe(),
                        self.flat_params,
                        self.data.x_test,
                        self.data.y_test,
                        self.backdoor_test,
                        self.streams.torch("evaluation", 1),
                    )
                )


def selected_buffers(
    buffers: dict[str, torch.Tensor], plan: RoundPlan, weights: Optional[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``fl.buffers=selected``: the global buffers (BatchNorm statistics) as the weighted mean
    of the clients' new buffers with the server rule's per-row weights (an accept mask:
    the plain mean of the accepted rows; ``None`` or nothing accepted: all rows). The
    LeadFL reference code runs its rule on the whole ``state_dict``, so Multi-Krum's
    buffers are the mean of its 5 selected clients'. Integer buffers (``num_batches_tracked``)
    take the largest of the weighted rows. Rows are matched through the jobs' rows (the
    order in which the sequential path appends the buffers)."""
    rows = [r for job in plan.jobs for r in job.rows]
    if len(rows) != len(plan.new_buffers):  # not every row trained here: all rows count
        rows = list(range(len(plan.new_buffers)))
        weights = None
    w = torch.ones(len(plan.cohort)) if weights is None else weights.detach().to("cpu", torch.float64)
    w = torch.nan_to_num(w.to(torch.float64), nan=0.0).clamp_min(0.0)
    w = torch.tensor([float(w[r]) for r in rows], dtype=torch.float64)
    if float(w.sum()) <= 0:
        w = torch.ones(len(rows), dtype=torch.float64)
    w = w / w.sum()
    out = {}
    for n, b in buffers.items():
        stacked = torch.stack([nb[n] for nb in plan.new_buffers])
        if b.is_floating_point():
            ww = w.to(stacked.device).reshape(-1, *([1] * (stacked.dim() - 1)))
            out[n] = (stacked.double() * ww).sum(0).to(b.dtype)
        else:
            out[n] = stacked[(w > 0).to(stacked.device)].max(0).values
    return out


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """Predicted classes; a NaN/Inf output is no prediction: counted wrong for every class (-1)."""
    return torch.where(torch.isfinite(logits).all(1), logits.argmax(1), -1)
