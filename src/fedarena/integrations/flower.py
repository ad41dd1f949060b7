"""fedarena in Flower: defenses as a strategy, attacks in clients (``pip install "fedarena[flower]"``).

Flower's Message API (flwr >= 1.22): a ``ServerApp`` runs a strategy's ``start``; each
round the strategy's ``configure_train`` sends the global ``ArrayRecord`` and
``aggregate_train`` turns the clients' replies into the next one.

* :class:`FedarenaStrategy` aggregates with any fedarena defense pipeline (``fedarena
  list``: aggregators and stages), given by name and parameters and validated like the
  CLI's ``defense.*`` keys. Replies carry full weights; the strategy turns them into the
  update matrix ``U`` (reply minus the global arrays it sent, cached in
  ``configure_train``), rejects malformed replies (client errors, missing or extra
  arrays, wrong shapes or dtypes, NaN/Inf, a bad ``num-examples`` for weighted rules),
  each with a reason, and reports per-client decisions and the defense's diagnostics in
  the round's metrics. One pipeline object lives as long as the strategy, so stateful
  defenses (Centered Clipping, FoolsGold, RLR, ...) keep their state across rounds.
* :class:`ColludingServerSimulation` is a **simulation**: omniscient attacks (ALIE, IPM,
  MinMax, ROP, ...) need the round's benign updates, which no real client sees, so the
  server crafts the malicious rows before the defense runs. For measuring defenses,
  never for a deployment.
* :class:`~fedarena.integrations.flower_client.ClientAttack` (client-side attacks in your
  own ClientApp) and :class:`~fedarena.integrations.flower_client.FlowerTask` (a whole
  fedarena experiment config played by Flower) live in
  :mod:`fedarena.integrations.flower_client`; the strategies in
  :mod:`fedarena.integrations.flower_server`. This module re-exports both.

>>> strategy = FedarenaStrategy({"name": "median"})            # doctest: +SKIP
>>> result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
...                         num_rounds=10)                      # doctest: +SKIP
"""

from .flower_client import ClientAttack, FlowerTask, client_side_attacks
from .flower_server import (
    PARTITION_KEY,
    REJECT_CODES,
    ColludingServerSimulation,
    FedarenaStrategy,
    ReplyBatch,
    check_reply,
    flat_to_record,
    record_layout,
    record_to_flat,
    replies_to_updates,
)

__all__ = [
    "ClientAttack",
    "ColludingServerSimulation",
    "FedarenaStrategy",
    "FlowerTask",
    "PARTITION_KEY",
    "REJECT_CODES",
    "ReplyBatch",
    "check_reply",
    "client_side_attacks",
    "flat_to_record",
    "record_layout",
    "record_to_flat",
    "replies_to_updates",
]
