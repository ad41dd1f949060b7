"""fedarena attacks inside Flower clients, and whole fedarena experiments played by Flower.

* :class:`ClientAttack` makes chosen partitions of *your* ClientApp malicious with any
  fedarena attack that needs only the client's own data and update: data poisoning
  (label flip, backdoors, DBA, edge-case: :meth:`ClientAttack.poison` on your local
  tensors), attacker-run training (negated-loss backdoor: :meth:`ClientAttack.recipe`
  gives the TrainRecipe to train with; AutoAdapt, train-and-scale:
  :meth:`ClientAttack.local_train` runs the attack's own loop), and own-update
  crafting (boosting / model replacement, Gaussian noise, bit flips, NaN: the object is
  a Flower mod, ``ClientApp(mods=[client_attack])``, that rewrites the malicious train
  replies). Omniscient attacks (ALIE, IPM, MinMax, ROP) need other clients' updates and
  are refused here: see :class:`~fedarena.integrations.flower.ColludingServerSimulation`.
* :class:`FlowerTask` plays a fedarena experiment config in Flower: its ClientApp trains
  the config's model on the config's partition with fedarena's local training and the
  config's attack, and the matching strategy aggregates with the config's defense, so a
  Flower run and ``fedarena run`` of the same config see the same data, partition,
  attackers and training batches.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from ..attacks.base import Attack, DataInfo, LocalTrainContext, runs_local_training
from ..config import ExperimentConfig, defense_dict
from ..core.layout import ParamLayout
from ..core.recipe import TrainRecipe
from ..core.seeds import SeedStreams
from ..errors import ConfigError
from ..registry import ATTACKS
from ..run.server_round import Attackers, craft_rows
from ..run.simulation import Simulation
from ._flwr import ArrayRecord, ClientApp, Context, Message, MessageType, MetricRecord, RecordDict
from .flower_server import (
    PARTITION_KEY,
    ColludingServerSimulation,
    FedarenaStrategy,
    flat_to_record,
    record_layout,
    record_to_flat,
    split_spec,
)


def _server_round(msg: Message) -> int:
    """The ``server-round`` Flower's strategies put in the train config (1-based; 1 if absent)."""
    for rec in msg.content.config_records.values():
        if "server-round" in rec:
            return int(rec["server-round"])
    return 1


def _single_arrays(content: RecordDict) -> tuple[str, ArrayRecord]:
    records = content.array_records
    if len(records) != 1:
        raise ValueError(f"expected one ArrayRecord, got {len(records)}")
    return next(iter(records.items()))


class ClientAttack:
    """A fedarena attack run by chosen partitions of a Flower ClientApp.

    Args:
        attack: an attack name or ``{"name": "backdoor", "target": 0, ...}`` (``attack.*``
            keys, validated like the CLI's).
        malicious_partitions: the partition ids (``context.node_config["partition-id"]``)
            that attack.
        data_info: what the attack may know: ``DataInfo(num_classes, input_shape)``
            (``input_shape`` is ``(C, H, W)`` for images); triggers are drawn for it.
        seed: seeds the attack's stream (trigger placement, which samples are poisoned).
        start_round, end_round: 0-based rounds (Flower's ``server-round`` minus 1) in which
            the malicious partitions attack; outside them they behave honestly.

    Use: in your train function, ``x, y = attack.poison(pid, x, y, server_round)``
    (tensors as the model sees them before normalisation: images ``(n, C, H, W)`` in
    [0, 1]), train with ``attack.recipe(pid, base_recipe, server_round)`` if you train
    with fedarena's recipes, and register the object as a mod for crafting attacks.
    """

    def __init__(
        self,
        attack: Mapping[str, Any] | str,
        malicious_partitions: Sequence[int],
        *,
        data_info: DataInfo,
        seed: int = 0,
        start_round: int = 0,
        end_round: Optional[int] = None,
    ):
        name, params = split_spec("attack", attack)
        self.name = name
        self.attack: Attack = ATTACKS.build(name, params)
        if self.attack.threat.knowledge != "own":
            raise ConfigError(
                "attack.name",
                f"{name!r} needs the round's benign updates (omniscient), which a client "
                "never sees; simulate it with ColludingServerSimulation",
                "client-side attacks: " + ", ".join(client_side_attacks()),
            )
        self.streams = SeedStreams(seed)
        self.attack.setup(data_info, self.streams.torch("attack", 0))
        self.malicious = {int(p) for p in malicious_partitions}
        self.start_round, self.end_round = start_round, end_round
        self._poisoned: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def active(self, partition_id: int, server_round: int) -> bool:
        """Whether the partition attacks in this (1-based) Flower round."""
        t = server_round - 1
        return (
            int(partition_id) in self.malicious
            and t >= self.start_round
            and (self.end_round is None or t <= self.end_round)
        )

    def poison(
        self, partition_id: int, x: torch.Tensor, y: torch.Tensor, server_round: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The partition's training data: poisoned (once, then cached) while it attacks, else ``(x, y)``."""
        if not self.active(partition_id, server_round):
            return x, y
        pid = int(partition_id)
        if pid not in self._poisoned:
            out = self.attack.poison(x.clone(), y.clone(), pid, self.streams.torch("attack", 2, pid))
            self._poisoned[pid] = (x, y) if out is None else out
        return self._poisoned[pid]

    def recipe(self, partition_id: int, base: TrainRecipe, server_round: int = 1) -> TrainRecipe:
        """The recipe the partition trains with (the attack's own one while it attacks)."""
        if not self.active(partition_id, server_round):
            return base
        return self.attack.recipe(base, int(partition_id)) or base

    def local_train(
        self,
        partition_id: int,
        model: torch.nn.Module,
        global_params: Mapping[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        recipe: TrainRecipe,
        server_round: int = 1,
        prepare=None,
    ) -> Optional[torch.Tensor]:
        """Attacker-run local training (attacks that own their clients' loop, e.g. AutoAdapt):
        the partition's update ``(d,)`` in the order of ``model.named_parameters()``, or
        None when the attack has no own loop or the partition does not attack this round
        (then train as usual). ``x, y``: the partition's clean data; ``recipe``: the benign
        local training (lr, batch size, epochs); ``prepare``: input normalisation, if any.
        Colluding attacks see only this one client."""
        if not self.active(partition_id, server_round) or not runs_local_training(self.attack):
            return None
        pid, t = int(partition_id), server_round - 1
        px, py = self.poison(pid, x, y, server_round)
        n = len(y)
        params = {k: v.detach().clone() for k, v in global_params.items()}
        ctx = LocalTrainContext(
            round=t,
            model=model,
            global_params=params,
            buffers={k: b.detach().clone() for k, b in model.named_buffers()},
            layout=ParamLayout.from_params(params, getattr(model, "layer_groups", None)),
            client_ids=[pid],
            clean_index=[np.arange(n)],
            poisoned_index=[np.arange(n, n + len(py))],
            x=torch.cat([x, px.to(x.dtype)]),
            y=torch.cat([y, py.to(y.dtype)]),
            prepare=prepare,
            recipe=recipe,
            rngs=[self.streams.numpy("training", t, pid)],
            generator=self.streams.torch("attack", 4, t, pid),
        )
        return self.attack.local_train(ctx)[0]

    def craft(self, partition_id: int, server_round: int, sent: ArrayRecord, reply: ArrayRecord) -> ArrayRecord:
        """Apply the attack's own-update ``craft()`` (e.g. boosting) to a full-weights reply."""
        if not self.active(partition_id, server_round) or type(self.attack).craft is Attack.craft:
            return reply
        layout = record_layout(sent)
        g = record_to_flat(sent, layout)
        own = (record_to_flat(reply, layout) - g).unsqueeze(0)
        t = server_round - 1
        who = Attackers(
            self.attack,
            torch.tensor([0]),
            torch.tensor([int(partition_id)]),
            lr=1.0,
            algorithm="fedavg",
            generator=self.streams.torch("attack", 3, t, int(partition_id)),
        )
        crafted = craft_rows(own, who, round=t, layout=layout, global_params=g, prev_update=None)
        if crafted is own:
            return reply
        return flat_to_record(g + crafted[0].to(g.dtype), layout, reply)

    def __call__(self, msg: Message, context: Context, call_next) -> Message:
        """Flower mod: rewrite a malicious partition's train reply with :meth:`craft`."""
        reply = call_next(msg, context)
        if not msg.metadata.message_type.startswith(MessageType.TRAIN) or reply.has_error():
            return reply
        pid = context.node_config.get("partition-id")
        if pid is None or not self.active(int(pid), _server_round(msg)):
            return reply
        _, sent = _single_arrays(msg.content)
        key, arrays = _single_arrays(reply.content)
        reply.content[key] = self.craft(int(pid), _server_round(msg), sent, arrays)
        return reply


def client_side_attacks() -> list[str]:
    """Registered attacks a real client can run (threat model: own knowledge only)."""
    return [
        n
        for n in ATTACKS.names()
        if getattr(ATTACKS.get(n), "threat", None) is None or ATTACKS.get(n).threat.knowledge == "own"
    ]


class FlowerTask:
    """A fedarena experiment config played by Flower.

    The ClientApp (:meth:`client_app`) of partition ``p`` is fedarena's client ``p``: the
    config's dataset and partition, local training (TrainRecipe, the same seeded batches
    as ``fedarena run``) and, for malicious clients, the config's attack (poisoning,
    attacker recipe, own-update crafting). :meth:`strategy` aggregates with the config's
    defense (a :class:`ColludingServerSimulation` when the attack is omniscient), and
    :meth:`evaluate` is a server-side ``evaluate_fn`` reporting fedarena's metrics
    (``main_acc``, ``loss``, ``backdoor_acc``, ``base_acc``).

    Needs ``fl.algorithm=fedavg``, a model without buffers (no BatchNorm), and as many
    Flower supernodes as ``fl.num_clients``. Client sampling is Flower's (unseeded) when
    ``fl.clients_per_round`` < ``fl.num_clients``.

    Args:
        cfg: a validated config (:func:`fedarena.config.load_config`).
        malicious: the malicious partitions (default: drawn as in ``fedarena run``).
    """

    def __init__(self, cfg: ExperimentConfig, malicious: Optional[Sequence[int]] = None):
        if cfg.fl.algorithm != "fedavg":
            raise ConfigError(
                "fl.algorithm",
                f"Flower clients send model weights: only fedavg is supported (got {cfg.fl.algorithm!r})",
                "fedavg",
            )
        if cfg.fl.client_state != "reset":
            raise ConfigError(
                "fl.client_state",
                "Flower runs a ClientApp in any simulation worker, so local optimizer "
                "state cannot persist between a client's rounds",
                "reset",
            )
        self.cfg = cfg
        self.malicious = None if malicious is None else [int(m) for m in malicious]
        self._sim: Optional[Simulation] = None

    def __getstate__(self) -> dict[str, Any]:  # the ClientApp travels to simulation workers without the data
        return {**self.__dict__, "_sim": None}

    @property
    def sim(self) -> Simulation:
        if self._sim is None:
            sim = Simulation(self.cfg, malicious=self.malicious)
            if sim.buffers:
                raise ConfigError(
                    "model.name",
                    "the Flower task sends parameters only; models with buffers (BatchNorm) are not supported",
                    "mlp, cnn, or model.norm=group",
                )
            self._sim = sim
        return self._sim

    @property
    def malicious_partitions(self) -> list[int]:
        return [int(c) for c in self.sim.malicious]

    @property
    def omniscient(self) -> bool:
        return self.sim.attack.threat.knowledge == "benign"

    # ---------------------------------------------------------------- server side
    def initial_arrays(self) -> ArrayRecord:
        """The config's initial global model (seeded as in ``fedarena run``)."""
        return ArrayRecord({n: p.detach().cpu().clone() for n, p in self.sim.params.items()})

    def _load(self, arrays: ArrayRecord) -> None:
        sim = self.sim
        sim.params = {
            n: v.clone().to(sim.device)
            for n, v in sim.layout.unflatten(record_to_flat(arrays, record_layout(arrays))).items()
        }

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        """Server-side evaluation of the global model: fedarena's metrics on the test set."""
        self._load(arrays)
        ev = self.sim.evaluate()
        return MetricRecord({k: float(v) for k, v in ev.items() if v is not None})

    def strategy(self, **kwargs: Any) -> FedarenaStrategy:
        """The config's defense as a strategy: every client trains each round
        (``fl.clients_per_round`` of ``fl.num_clients`` are sampled by Flower), federated
        evaluation off (use :meth:`evaluate` as ``evaluate_fn``). Omniscient attacks
        give a :class:`ColludingServerSimulation` on the config's malicious clients."""
        cfg = self.cfg
        n, k = cfg.fl.num_clients, cfg.cohort_size
        opts: dict[str, Any] = dict(
            fraction_train=k / n,
            min_train_nodes=k,
            min_available_nodes=n,
            fraction_evaluate=0.0,
            server_lr=cfg.fl.server_lr,
            seed=cfg.seed,
            client_side_in_clients=True,
        )
        opts.update(kwargs)
        if self.omniscient:
            sim = self.sim
            info = DataInfo(
                sim.data.num_classes,
                sim.data.input_shape,
                cfg.data.dataset,
                cfg.data.root,
                cfg.data.download,
                cfg.data.verify,
            )
            return ColludingServerSimulation(
                defense_dict(cfg),
                attack={"name": cfg.attack.name, **cfg.attack.params()},
                malicious_partitions=self.malicious_partitions,
                data_info=info,
                start_round=cfg.attack.start_round,
                end_round=cfg.attack.end_round,
                **opts,
            )
        return FedarenaStrategy(defense_dict(cfg), **opts)

    # ---------------------------------------------------------------- client side
    def train(self, msg: Message, context: Context) -> Message:
        """ClientApp train handler: fedarena's client ``partition-id`` trains one round."""
        sim = self.sim
        pid = int(context.node_config["partition-id"])
        if not 0 <= pid < self.cfg.fl.num_clients:
            raise ValueError(
                f"partition-id {pid} is outside fl.num_clients = {self.cfg.fl.num_clients}; "
                "run as many supernodes as fl.num_clients"
            )
        t = _server_round(msg) - 1
        key, arrays = _single_arrays(msg.content)
        self._load(arrays)
        global_flat = sim.flat_params
        active = sim.attack_active(t) and not self.omniscient  # omniscient attacks: crafted at the server
        cohort = np.array([pid])
        raw = sim.local_updates(t, cohort, active)
        U = sim.pipeline.client_upload(raw, sim.streams.torch("defense", t, 1, pid))  # e.g. local DP noise
        if active and sim.is_malicious[pid]:  # the client crafts its own row (e.g. boosting)
            who = Attackers(
                sim.attack,
                torch.tensor([0]),
                torch.from_numpy(cohort),
                lr=self.cfg.fl.server_lr,
                algorithm="fedavg",
                generator=sim.streams.torch("attack", 3, t),
                own=raw if U is not raw else None,
            )
            U = craft_rows(U, who, round=t, layout=sim.layout, global_params=global_flat, prev_update=None)
        reply = flat_to_record(global_flat + U[0], sim.layout, arrays)
        metrics = MetricRecord({"num-examples": int(len(sim.client_index[pid])), PARTITION_KEY: pid})
        return Message(RecordDict({key: reply, "metrics": metrics}), reply_to=msg)

    def evaluate_local(self, msg: Message, context: Context) -> Message:
        """ClientApp evaluate handler: accuracy of the received model on the client's clean data."""
        sim = self.sim
        pid = int(context.node_config["partition-id"])
        _, arrays = _single_arrays(msg.content)
        self._load(arrays)
        idx = torch.from_numpy(sim.client_index[pid]).to(sim.device)
        _, pred = sim.predict(sim.data.x_train[idx])
        acc = float((pred == sim.data.y_train[idx]).float().mean()) if len(idx) else 0.0
        return Message(
            RecordDict({"metrics": MetricRecord({"num-examples": int(len(idx)), "accuracy": acc})}), reply_to=msg
        )

    def client_app(self, mods: Sequence[Any] = ()) -> ClientApp:
        """A ClientApp whose train and evaluate handlers are :meth:`train` and :meth:`evaluate_local`."""
        app = ClientApp(mods=list(mods))
        app.train()(self.train)
        app.evaluate()(self.evaluate_local)
        return app
