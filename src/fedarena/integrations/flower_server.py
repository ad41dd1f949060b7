"""The server side of fedarena in Flower: :class:`FedarenaStrategy` and the
colluding-server simulation :class:`ColludingServerSimulation` (see
:mod:`fedarena.integrations.flower`, which re-exports them with the client side)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch

from ..attacks.base import Attack, DataInfo
from ..core.layout import ParamLayout
from ..core.recipe import TrainRecipe
from ..core.seeds import SeedStreams
from ..defenses.base import DefensePipeline, RoundContext
from ..defenses.pipeline import build_pipeline
from ..errors import ConfigError
from ..registry import ATTACKS
from ..run.server_round import Attackers
from ..run.server_round import server_round as server_half  # aggregate_train has a parameter server_round
from ..run.results import scalar_info
from ._flwr import Array, ArrayRecord, FedAvg, Message, MetricRecord, log

#: reject codes reported per client as ``client-reject-code`` (0: the reply was valid)
REJECT_CODES = {
    "client-error": 1,
    "records": 2,
    "missing-array": 3,
    "extra-array": 4,
    "shape": 5,
    "dtype": 6,
    "non-finite": 7,
    "num-examples": 8,
}

#: reply metric that names the client's partition (FlowerTask's clients send it); used to
#: order rows deterministically and, in ColludingServerSimulation, to find the attackers
PARTITION_KEY = "partition-id"


# ---------------------------------------------------------------- records <-> flat vectors
def record_layout(record: ArrayRecord) -> ParamLayout:
    """Columns of ``U``: the record's floating-point arrays, in the record's order.
    Integer arrays (e.g. BatchNorm's ``num_batches_tracked``) are not in ``U``; the
    aggregate keeps the global value for them."""
    return ParamLayout.from_params(
        {k: torch.empty(tuple(a.shape)) for k, a in record.items() if np.issubdtype(np.dtype(a.dtype), np.floating)}
    )


def record_to_flat(record: ArrayRecord, layout: ParamLayout) -> torch.Tensor:
    """The layout's arrays of ``record`` as one float32 vector ``(d,)``."""
    parts = [torch.from_numpy(np.asarray(record[n].numpy(), dtype=np.float32)).reshape(-1) for n in layout.names]
    return torch.cat(parts) if parts else torch.empty(0)


def flat_to_record(flat: torch.Tensor, layout: ParamLayout, template: ArrayRecord) -> ArrayRecord:
    """A record shaped like ``template``: its floating arrays from ``flat`` (in the
    template's dtype), the others copied from the template."""
    views = layout.unflatten(flat.detach().cpu())
    out = {}
    for name, arr in template.items():
        a = arr.numpy()
        out[name] = Array(np.ascontiguousarray(views[name].numpy().astype(a.dtype)) if name in views else a.copy())
    return ArrayRecord(out)


# ---------------------------------------------------------------- replies -> U
class Rejected(Exception):
    """A malformed reply: ``code`` (a key of :data:`REJECT_CODES`) and a reason."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass
class ReplyEntry:
    """One reply: its node, the partition it reports, its row of ``U`` (None: rejected)."""

    node_id: int
    partition_id: Optional[int]
    row: Optional[int] = None
    code: str = ""
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReplyBatch:
    """A round's replies as fedarena sees them.

    ``U``: ``(k, d)`` updates of the valid replies (reply minus global), rows in the
    order of ``entries`` (sorted by reported partition id, then node id);
    ``num_examples``: ``(k,)``; ``entries``: every reply, valid or rejected.
    """

    U: torch.Tensor
    num_examples: torch.Tensor
    entries: list[ReplyEntry]

    @property
    def valid(self) -> list[ReplyEntry]:
        return [e for e in self.entries if e.row is not None]

    @property
    def rejected(self) -> list[ReplyEntry]:
        return [e for e in self.entries if e.row is None]


def _metrics_of(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rec in msg.content.metric_records.values():
        out.update(rec)
    return out


def _real(v: Any) -> Optional[float]:
    """``v`` as a finite float, or None (lists, NaN, non-numbers)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def check_reply(msg: Message, template: ArrayRecord, layout: ParamLayout) -> torch.Tensor:
    """The reply's floating arrays as a flat vector in ``layout``; raises :class:`Rejected`."""
    if msg.has_error():
        raise Rejected("client-error", f"the client replied with an error: {msg.error.reason}")
    records = msg.content.array_records
    if len(records) != 1:
        raise Rejected("records", f"expected one ArrayRecord in the reply, got {len(records)}")
    rec = next(iter(records.values()))
    missing = [k for k in template.keys() if k not in rec]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise Rejected("missing-array", f"array {missing[0]!r} is missing{more}")
    extra = [k for k in rec.keys() if k not in template]
    if extra:
        raise Rejected("extra-array", f"unexpected array {extra[0]!r} (the global model has no such array)")
    floats = set(layout.names)
    parts = []
    for name in template.keys():
        try:
            a = rec[name].numpy()
        except Exception as e:  # undecodable bytes from a broken or hostile client
            raise Rejected("records", f"array {name!r} cannot be decoded ({type(e).__name__})") from None
        want = tuple(template[name].shape)
        if tuple(a.shape) != want:
            raise Rejected("shape", f"array {name!r} has shape {tuple(a.shape)}, expected {want}")
        if name not in floats:
            continue
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)) or a.dtype == np.bool_:
            raise Rejected("dtype", f"array {name!r} has dtype {a.dtype}, expected a real number type")
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes Inf, rejected below
            t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(-1)
        if not bool(torch.isfinite(t).all()):
            raise Rejected("non-finite", f"array {name!r} holds NaN or Inf")
        parts.append(t)
    return torch.cat(parts) if parts else torch.empty(0)


def replies_to_updates(
    replies: Iterable[Message],
    template: ArrayRecord,
    layout: ParamLayout,
    *,
    weighted_by_key: str = "num-examples",
    need_weight: bool = False,
) -> ReplyBatch:
    """Replies carrying full weights -> ``U`` (reply minus ``template``) and the rejected ones.

    A reply is rejected (with a reason) when the client sent an error, when it holds not
    exactly one ArrayRecord, an array is missing, extra, of another shape, of a non-real
    dtype, or holds NaN/Inf, and, when ``need_weight`` (weighted rules), when
    ``weighted_by_key`` is not a finite number > 0.
    """
    global_flat = record_to_flat(template, layout)
    entries, rows, weights = [], [], []
    for msg in replies:
        metrics = {} if msg.has_error() else _metrics_of(msg)
        pid = _real(metrics.get(PARTITION_KEY))  # client-reported: only a small non-negative integer is kept
        ok = pid is not None and pid == int(pid) and 0 <= pid < 2**31
        entry = ReplyEntry(int(msg.metadata.src_node_id), int(pid) if ok else None, metrics=metrics)
        entries.append(entry)
        try:
            flat = check_reply(msg, template, layout)
            w = _real(metrics.get(weighted_by_key))
            if need_weight and (w is None or w <= 0):
                raise Rejected(
                    "num-examples",
                    f"metric {weighted_by_key!r} must be a finite number > 0 for a "
                    f"weighted rule (got {metrics.get(weighted_by_key)!r})",
                )
        except Rejected as r:
            entry.code, entry.reason = r.code, r.reason
            continue
        entry.row = len(rows)
        rows.append(flat - global_flat)
        weights.append(w if w is not None and w > 0 else 1.0)
    # deterministic row order: replies with a reported partition id first, by that id; then by node id
    order = sorted(
        range(len(entries)),
        key=lambda i: (entries[i].partition_id is None, entries[i].partition_id or 0, entries[i].node_id),
    )
    entries = [entries[i] for i in order]
    valid = [e for e in entries if e.row is not None]
    old_rows = [e.row for e in valid]
    for new, e in enumerate(valid):
        e.row = new
    d = layout.dim
    U = torch.stack([rows[i] for i in old_rows]) if old_rows else torch.empty(0, d)
    num = torch.tensor([weights[i] for i in old_rows], dtype=torch.float32)
    return ReplyBatch(U, num, entries)


# ---------------------------------------------------------------- the strategy
def defense_spec(defense: Mapping[str, Any] | str) -> dict[str, Any]:
    """``"median"`` or ``{"name": "median", ...}`` -> the flat defense dict the CLI builds."""
    d = {"name": defense} if isinstance(defense, str) else dict(defense)
    d.setdefault("name", "fedavg")
    f = d.get("f", 0)
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise ConfigError("defense.f", f"must be an integer >= 0 (got {f!r})", "0, 1, 2, ...")
    d["f"] = f
    if not isinstance(d.get("weighted", False), bool):
        raise ConfigError("defense.weighted", f"must be true or false (got {d['weighted']!r})", "true, false")
    return d


def split_spec(section: str, spec: Mapping[str, Any] | str) -> tuple[str, dict[str, Any]]:
    """``"alie"`` or ``{"name": "alie", "z": 1.0}`` -> (name, parameters)."""
    d = {"name": spec} if isinstance(spec, str) else dict(spec)
    if "name" not in d:
        raise ConfigError(f"{section}.name", "is required", f"see `fedarena list {section}s`")
    name = d.pop("name")
    return name, d


def has_client_side(pipeline: DefensePipeline) -> bool:
    """Whether the defense changes the clients' training or uploads (it then needs clients
    that run fedarena's side of it)."""
    probe = TrainRecipe(lr=0.1)
    rows = torch.full((2, 3), 1e6)
    uploads = not torch.equal(pipeline.client_upload(rows.clone(), torch.Generator().manual_seed(0)), rows)
    return uploads or pipeline.client_recipe(probe) != probe


class FedarenaStrategy(FedAvg):
    """A Flower strategy that aggregates with a fedarena defense pipeline.

    Args:
        defense: a defense name or a dict of ``defense.*`` keys, e.g. ``{"name": "rlr",
            "theta": 4}`` or ``{"name": "median", "clip": 2.0}``: validated like the CLI
            (:class:`~fedarena.errors.ConfigError` names the bad key and the valid values).
            ``f`` is the number of attackers the rule assumes (declared, default 0);
            ``weighted`` weights by the replies' ``num-examples`` (default false).
        server_lr: the server step ``global + server_lr * aggregate``.
        seed: seeds the defense's random stream (bucketing, noise), as ``seed`` does in
            ``fedarena run``.
        client_side_in_clients: the clients already apply the defense's client-side part
            (projected training, local DP noise), as FlowerTask's clients do; otherwise a
            defense with one is refused.
        num_clients: if given, the rule is checked now for that many replies per round;
            otherwise each round checks it, and a round with too few valid replies for
            the rule is skipped (the global model stays; ``fedarena-skipped`` = 1).
        **fedavg_kwargs: Flower's FedAvg options (``fraction_train``, ``min_train_nodes``,
            ``weighted_by_key``, ...).

    Round metrics (``Result.train_metrics_clientapp[round]``): ``fedarena-replies``,
    ``fedarena-rejected``, ``fedarena-skipped``; per reply, sorted by reported
    ``partition-id`` then node id: ``client-index`` (stable strategy index of the node,
    see :attr:`node_index`), ``client-partition-id`` (-1 if not reported),
    ``client-reject-code`` (:data:`REJECT_CODES`, 0 = valid), ``client-accepted`` (1 if
    valid and accepted by the defense), ``client-weight`` (the rule's weight or 0/1
    decision; absent when the rule has none, e.g. the median), ``client-norm`` (update
    norm, -1 if rejected); the defense's scalar diagnostics as ``defense_<key>``; and the
    mean of the client-reported scalar metrics over the valid replies. The rejection
    reasons (text) are logged and kept in :attr:`history`.
    """

    def __init__(
        self,
        defense: Mapping[str, Any] | str = "fedavg",
        *,
        server_lr: float = 1.0,
        seed: int = 0,
        num_clients: Optional[int] = None,
        client_side_in_clients: bool = False,
        **fedavg_kwargs: Any,
    ):
        self.defense = defense_spec(defense)
        self.pipeline = build_pipeline(self.defense)
        name = self.defense["name"]
        if int(getattr(self.pipeline.aggregator, "root_size", 0) or 0) > 0:
            raise ConfigError(
                "defense.name",
                f"{name!r} needs a root dataset on the server, which a Flower strategy does not hold",
                "a rule without root_size",
            )
        if not client_side_in_clients and has_client_side(self.pipeline):
            raise ConfigError(
                "defense",
                "this defense has a client-side part (e.g. defense.clip_at=client, local DP) "
                "that a server strategy cannot apply",
                "server-side options, e.g. defense.clip_at=server",
            )
        if _real(server_lr) is None or server_lr <= 0:
            raise ConfigError("server_lr", f"must be a finite number > 0 (got {server_lr!r})", "> 0, e.g. 1.0")
        if num_clients is not None:
            self.pipeline.validate(int(num_clients), self.defense["f"])
        super().__init__(**fedavg_kwargs)
        self.f, self.weighted = self.defense["f"], bool(self.defense.get("weighted", False))
        self.server_lr, self.seed = float(server_lr), seed
        self.streams = SeedStreams(seed)
        self.layout: Optional[ParamLayout] = None
        self.global_arrays: Optional[ArrayRecord] = None
        self.global_flat: Optional[torch.Tensor] = None
        self.prev_update: Optional[torch.Tensor] = None
        #: node id -> stable client index (the ``client_ids`` the defense sees)
        self.node_index: dict[int, int] = {}
        #: one dict per aggregated round: entries (with rejection reasons), skip reason, metrics
        self.history: list[dict[str, Any]] = []

    def summary(self) -> None:
        super().summary()
        log(INFO, "\t└──> fedarena defense: %s", self.defense)

    # -- the global arrays each round's updates are measured against
    def remember(self, arrays: ArrayRecord) -> None:
        """Cache the global arrays sent for training (``configure_train`` calls this)."""
        layout = record_layout(arrays)
        if layout != self.layout:
            self.layout, self.prev_update = layout, None
        self.global_arrays, self.global_flat = arrays, record_to_flat(arrays, layout)

    def configure_train(self, server_round, arrays, config, grid):
        self.remember(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def attackers(self, batch: ReplyBatch, ctx: RoundContext) -> Optional[Attackers]:
        """The round's crafting attackers (none; the colluding-server simulation overrides it)."""
        return None

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[Optional[ArrayRecord], Optional[MetricRecord]]:
        if self.global_arrays is None or self.layout is None:
            raise RuntimeError("aggregate_train before configure_train: no global arrays to measure updates against")
        t = server_round - 1
        batch = replies_to_updates(
            list(replies),
            self.global_arrays,
            self.layout,
            weighted_by_key=self.weighted_by_key,
            need_weight=self.weighted,
        )
        for e in batch.rejected:
            log(WARNING, "fedarena: rejected the reply of node %d: %s", e.node_id, e.reason)
        for e in sorted(batch.entries, key=lambda e: e.node_id):
            self.node_index.setdefault(e.node_id, len(self.node_index))
        record: dict[str, Any] = {"round": server_round, "entries": batch.entries, "skipped": None}
        self.history.append(record)
        k = batch.U.shape[0]
        skip = None
        if k == 0:
            skip = "no valid reply"
        else:
            try:
                self.pipeline.validate(k, self.f)
            except ConfigError as e:
                skip = f"{k} valid replies are too few for the rule: {e}"
        agg = None
        if skip is None:
            ctx = RoundContext(
                round=t,
                layout=self.layout,
                client_ids=torch.tensor([self.node_index[e.node_id] for e in batch.valid], dtype=torch.long),
                num_samples=batch.num_examples,
                f=self.f,
                global_params=self.global_flat,
                prev_update=self.prev_update,
                generator=self.streams.torch("defense", t),
                server_lr=self.server_lr,
                extras={"algorithm": "fedavg", "sampling_rate": self.fraction_train},
            )
            out = server_half(
                batch.U,
                ctx,
                self.pipeline,
                lambda u: self.server_lr * u,
                attackers=self.attackers(batch, ctx),
                defense_name=self.defense["name"],
            )
            agg = out.agg
            if out.params is None:
                skip, agg = out.problem, None
        metrics = self._round_metrics(batch, agg, skip)
        record.update(skipped=skip, metrics=metrics)
        if skip is not None:
            log(WARNING, "fedarena: round %d skipped, the global model stays: %s", server_round, skip)
            return None, MetricRecord(metrics)
        self.prev_update = agg.update.detach().clone()
        return flat_to_record(out.params, self.layout, self.global_arrays), MetricRecord(metrics)

    def _round_metrics(self, batch: ReplyBatch, agg, skip: Optional[str]) -> dict[str, Any]:
        entries = batch.entries
        m: dict[str, Any] = {
            "fedarena-replies": len(entries),
            "fedarena-rejected": len(batch.rejected),
            "fedarena-skipped": int(skip is not None),
        }
        m["client-index"] = [self.node_index[e.node_id] for e in entries]
        m["client-partition-id"] = [-1 if e.partition_id is None else e.partition_id for e in entries]
        m["client-reject-code"] = [REJECT_CODES.get(e.code, 0) for e in entries]
        norms = torch.linalg.vector_norm(batch.U, dim=1).tolist() if batch.U.shape[0] else []
        m["client-norm"] = [-1.0 if e.row is None else float(norms[e.row]) for e in entries]
        w = None if agg is None or agg.weights is None else agg.weights.detach().cpu()
        if w is not None and w.shape[0] != batch.U.shape[0]:
            w = None  # a rule whose decisions do not map to clients
        accepted = [
            0 if e.row is None or agg is None or (w is not None and not bool(w[e.row] > 0)) else 1 for e in entries
        ]
        m["client-accepted"] = accepted
        if w is not None:
            m["client-weight"] = [0.0 if e.row is None else float(w[e.row]) for e in entries]
        if agg is not None:
            m.update(
                {
                    k: v
                    for k, v in scalar_info(agg.info).items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                }
            )
        # clients' own scalar metrics: mean over the valid replies that report them all
        valid = [e.metrics for e in batch.valid]
        if valid:
            keys = set.intersection(*(set(x) for x in valid)) - {self.weighted_by_key, PARTITION_KEY}
            for key in sorted(keys):
                vals = [_real(x[key]) for x in valid]
                if all(v is not None for v in vals) and key not in m:
                    m[key] = float(np.mean(vals))
        return m


# ---------------------------------------------------------------- omniscient attacks: simulation only
class ColludingServerSimulation(FedarenaStrategy):
    """SIMULATION ONLY: a colluding server plays an omniscient fedarena attack.

    Attacks such as ALIE, IPM, MinMax, MinSum and ROP craft the malicious updates from
    the round's *benign* updates (threat model ``knowledge="benign"``). No real Flower
    client sees other clients' updates, so they cannot run in a ClientApp. This strategy
    simulates the threat model instead: after the replies are checked and before the
    defense runs, it replaces the rows of the malicious partitions (found through the
    ``partition-id`` metric the clients report) with the attack's ``craft()`` output,
    given the round's benign rows, through the same server round as fedarena's own
    simulation (:func:`fedarena.run.server_round.server_round`). Use it
    to measure a defense against these attacks, never in a deployment.

    Args:
        defense, server_lr, seed, num_clients, **fedavg_kwargs: as :class:`FedarenaStrategy`.
        attack: an attack name or ``{"name": "alie", "z": 1.0}`` (``attack.*`` keys); any
            fedarena attack with a ``craft()`` step (own-knowledge ones such as boosting
            work too).
        malicious_partitions: partition ids whose rows the attack crafts.
        start_round, end_round: 0-based rounds in which the attack is active (inclusive).
        data_info: what the attack may know about the task (classes, input shape).
    """

    def __init__(
        self,
        defense: Mapping[str, Any] | str = "fedavg",
        *,
        attack: Mapping[str, Any] | str,
        malicious_partitions: Sequence[int],
        start_round: int = 0,
        end_round: Optional[int] = None,
        data_info: Optional[DataInfo] = None,
        **kwargs: Any,
    ):
        super().__init__(defense, **kwargs)
        name, params = split_spec("attack", attack)
        self.attack: Attack = ATTACKS.build(name, params)
        if type(self.attack).craft is Attack.craft:
            crafting = [n for n in ATTACKS.names() if ATTACKS.get(n).craft is not Attack.craft]
            raise ConfigError(
                "attack.name",
                f"{name!r} has no craft() step; data-poisoning and training attacks run "
                "in the clients (ClientAttack, FlowerTask)",
                ", ".join(crafting),
            )
        self.attack.setup(data_info or DataInfo(num_classes=10, input_shape=(1,)), self.streams.torch("attack", 0))
        self.malicious_partitions = {int(p) for p in malicious_partitions}
        self.start_round, self.end_round = start_round, end_round
        log(
            WARNING,
            "ColludingServerSimulation: the server crafts the updates of partitions %s with %r; "
            "a simulation for measuring defenses, not a deployment",
            sorted(self.malicious_partitions),
            name,
        )

    def attackers(self, batch: ReplyBatch, ctx: RoundContext) -> Optional[Attackers]:
        """The valid replies of the malicious partitions, while the attack is active."""
        t = ctx.round
        if t < self.start_round or (self.end_round is not None and t > self.end_round):
            return None
        valid = batch.valid
        mal = torch.tensor([e.partition_id in self.malicious_partitions for e in valid], dtype=torch.bool)
        if not bool(mal.any()):
            return None
        # the attacker holds no data at the server: no loss oracle (loss=None)
        return Attackers(
            self.attack,
            torch.nonzero(mal).flatten(),
            torch.tensor([e.partition_id for e in valid if e.partition_id in self.malicious_partitions]),
            lr=self.server_lr,
            algorithm="fedavg",
            generator=self.streams.torch("attack", 3, t),
            benign_ids=torch.tensor(
                [
                    -1 if e.partition_id is None else e.partition_id
                    for e in valid
                    if e.partition_id not in self.malicious_partitions
                ]
            ),
        )


__all__ = [
    "ColludingServerSimulation",
    "FedarenaStrategy",
    "PARTITION_KEY",
    "REJECT_CODES",
    "ReplyBatch",
    "check_reply",
    "flat_to_record",
    "record_layout",
    "record_to_flat",
    "replies_to_updates",
]
