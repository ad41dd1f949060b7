"""The server half of a round, written once.

Every place that plays a round's server side calls these two functions: the simulation
(:meth:`fedarena.run.simulation.Simulation.conclude_round`), the Flower strategy
(:class:`fedarena.integrations.flower.FedarenaStrategy`), its colluding-server simulation
and the Flower client task (which crafts one client's own row). The steps, in order:

1. the uploads ``U`` (one row per client, after the defense's client-side transform);
2. the attackers' view of the round (:class:`~fedarena.attacks.base.RoundView`: what the
   threat model lets them know) and crafting: :func:`craft_rows`;
3. the defense pipeline on ``U``;
4. the non-finite check: a NaN/Inf aggregate (or a :class:`~fedarena.errors.Diverged`
   raised inside the defense) ends the round without a step;
5. the server step ``global + step(aggregate)``, checked again.

The records (client and round rows, evaluation) stay with the caller, which knows its
own bookkeeping (run records, Flower metrics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..attacks.base import Attack, RoundView, ServerView
from ..core.layout import ParamLayout
from ..defenses.base import Aggregate, DefensePipeline, RoundContext
from ..errors import Diverged


@dataclass
class Attackers:
    """The round's crafting attackers: who they are and what they may know.

    ``rows``: ``(m,)`` positions of their rows in ``U``; ``ids``: their global ids;
    ``own``: ``(m, d)`` their honest updates before the client-side transform (None: the
    uploads themselves); ``benign_ids``: ids of the other rows (given to attacks whose
    threat model knows the benign updates); ``lr``: the learning rate in force (server
    lr for fedavg, ``fl.lr`` for fedsgd); ``loss``: the loss oracle of
    aggregator-aware attacks (flat params -> held-out loss), or None.
    """

    attack: Attack
    rows: torch.Tensor
    ids: torch.Tensor
    lr: float
    algorithm: str
    generator: torch.Generator
    own: Optional[torch.Tensor] = None
    benign_ids: Optional[torch.Tensor] = None
    loss: Optional[Callable[[torch.Tensor], float]] = None


def craft_rows(
    U: torch.Tensor,
    who: Attackers,
    *,
    round: int,
    layout: ParamLayout,
    global_params: torch.Tensor,
    prev_update: Optional[torch.Tensor],
    pipeline: Optional[DefensePipeline] = None,
    ctx: Optional[RoundContext] = None,
    step: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> torch.Tensor:
    """``U`` with the attackers' rows replaced by what their ``craft()`` returns (``U``
    itself when the attack does not craft). The view holds exactly what the attack's
    threat model allows: its own rows always, the benign rows for ``knowledge="benign"``,
    the server (pipeline, context, step, loss) for aggregator-aware attacks."""
    attack = who.attack
    if type(attack).craft is Attack.craft or who.rows.numel() == 0:
        return U
    rows = who.rows.to(U.device)
    benign_mask = torch.ones(U.shape[0], dtype=torch.bool, device=U.device)
    benign_mask[rows] = False
    omniscient = attack.threat.knowledge == "benign"
    server = None
    if attack.threat.aggregator_aware and pipeline is not None and ctx is not None and step is not None:
        server = ServerView(pipeline=pipeline, context=ctx, malicious_rows=who.rows, step=step, loss=who.loss)
    uploads = U[rows].clone()
    view = RoundView(
        round=round,
        layout=layout,
        global_params=global_params,
        prev_update=prev_update,
        malicious_ids=who.ids,
        num_clients=U.shape[0],
        own_updates=uploads if who.own is None else who.own.clone(),
        uploads=None if who.own is None else uploads,
        benign_updates=U[benign_mask].clone() if omniscient else None,
        benign_ids=who.benign_ids if omniscient else None,
        lr=who.lr,
        algorithm=who.algorithm,
        generator=who.generator,
        server=server,
    )
    crafted = attack.craft(view)
    if crafted is None:
        return U
    U = U.clone()
    U[rows] = crafted.to(U.device, U.dtype).reshape(len(rows), -1)
    return U


@dataclass
class ServerOutcome:
    """What the server half of a round produced.

    ``U``: the rows the defense saw (crafted); ``agg``: its aggregate (NaN when the
    defense raised :class:`~fedarena.errors.Diverged`); ``params``: the new flat global
    parameters, or None when the round diverged; ``problem``: why (one phrase, e.g. "the
    aggregate of defense 'median' is not finite (NaN/Inf)")."""

    U: torch.Tensor
    agg: Aggregate
    params: Optional[torch.Tensor]
    problem: Optional[str] = None


def server_round(
    U: torch.Tensor,
    ctx: RoundContext,
    pipeline: DefensePipeline,
    step: Callable[[torch.Tensor], torch.Tensor],
    *,
    attackers: Optional[Attackers] = None,
    defense_name: str = "defense",
) -> ServerOutcome:
    """Craft (if ``attackers``), defend, check, step: see the module docstring.

    ``step``: aggregate -> the change of the flat global parameters (``server_lr * agg``
    for fedavg, ``-lr * agg`` for fedsgd); applied to ``ctx.global_params``."""
    if attackers is not None:
        U = craft_rows(
            U,
            attackers,
            round=ctx.round,
            layout=ctx.layout,
            global_params=ctx.global_params,
            prev_update=ctx.prev_update,
            pipeline=pipeline,
            ctx=ctx,
            step=step,
        )
    try:
        agg = pipeline(U, ctx)
    except Diverged as e:
        return ServerOutcome(U, Aggregate(torch.full_like(U[0], math.nan)), None, str(e))
    if not bool(torch.isfinite(agg.update).all()):
        return ServerOutcome(U, agg, None, f"the aggregate of defense {defense_name!r} is not finite (NaN/Inf)")
    params = ctx.global_params + step(agg.update)
    if not bool(torch.isfinite(params).all()):
        return ServerOutcome(U, agg, None, "the model's parameters became NaN/Inf")
    return ServerOutcome(U, agg, params)


__all__ = ["Attackers", "ServerOutcome", "craft_rows", "server_round"]
