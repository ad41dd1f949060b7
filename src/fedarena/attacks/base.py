"""The attack interface: three hooks and a declared threat model.

An attack implements any of:

* :meth:`Attack.poison` -- data poisoning: rewrite a malicious client's local data
  once, before training (label flips, backdoor triggers).
* :meth:`Attack.recipe` -- custom local training for malicious clients (extra loss
  terms, projections, negated losses). Clients with a custom recipe train on the
  sequential path unless the recipe says it can be vectorized.
* :meth:`Attack.craft` -- model poisoning: replace the malicious rows of the update
  matrix, given a :class:`RoundView` limited by :attr:`Attack.threat`.
* :meth:`Attack.local_train` -- attacker-run local training: the attack owns the whole
  local loop of its clients (a stateful optimisation such as AutoAdapt's per-step
  multipliers, an optimizer switch mid-training, a best-iterate memory) and returns their
  update rows. The engine calls it once per round with all of the round's malicious
  clients (colluders share information inside the call), after the benign clients have
  trained, and knows nothing about what happens inside.

Outside ``[start_round, end_round]`` malicious clients behave honestly (clean data,
benign recipe, no crafting); the engine enforces this window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

import numpy as np
import torch

from ..core.layout import ParamLayout
from ..core.recipe import TrainRecipe
from ..core.state import Stateful

Knowledge = Literal["own", "benign"]


@dataclass(frozen=True)
class ThreatModel:
    """What an attack may see when it crafts updates.

    ``knowledge``: ``"own"`` -- its own clients' honest updates and the broadcast history
    (global model, previous aggregate); ``"benign"`` -- omniscient: also this round's
    benign updates. ``collude``: malicious clients coordinate (e.g. send one vector).
    ``aggregator_aware``: the attack knows the defense (adaptive attacks).
    """

    knowledge: Knowledge = "own"
    collude: bool = False
    aggregator_aware: bool = False


@dataclass
class DataInfo:
    """What an attack may know about the task."""

    num_classes: int
    input_shape: tuple[int, ...]  # (C, H, W) for images, (F,) for vectors
    dataset: str = ""  # the task's dataset name
    root: Optional[str] = None  # data.root, for attacks that read extra files (tail sets)
    download: bool = False  # data.download
    verify: bool = True  # data.verify: check extra files (tail sets) against their known hashes


@dataclass
class ServerView:
    """What an aggregator-aware attack (``ThreatModel.aggregator_aware``) knows about the
    server in a round: the defense it faces and the round's context.

    ``pipeline``: the :class:`~fedarena.defenses.base.DefensePipeline` in use. Probe a
    ``copy.deepcopy`` of it (and of ``context``'s generator and extras), never the object
    itself: a stateful defense (Centered Clipping's centre, FoolsGold's history) must not
    be advanced by the probing. ``context``: this round's
    :class:`~fedarena.defenses.base.RoundContext` (declared f, client ids, the round's
    defense generator). ``malicious_rows``: ``(m,)`` positions of the malicious rows in
    ``U`` (the benign rows fill the others, in order). ``step``: aggregate -> the change
    of the flat global parameters it causes (``server_lr * agg`` for fedavg,
    ``-lr * agg`` for fedsgd). ``loss``: flat global parameters -> the model's loss on a
    held-out batch of the malicious clients' own clean data (``attack.optimize.batch_size``
    samples drawn once per run), or None.
    """

    pipeline: Any
    context: Any
    malicious_rows: torch.Tensor
    step: Callable[[torch.Tensor], torch.Tensor]
    loss: Optional[Callable[[torch.Tensor], float]] = None


@dataclass
class RoundView:
    """The round as a crafting attack sees it (fields beyond its threat model are None)."""

    round: int
    layout: ParamLayout
    global_params: torch.Tensor  # flat (d,)
    prev_update: Optional[torch.Tensor]  # previous aggregate, from the broadcast history
    malicious_ids: torch.Tensor  # (m,) global ids of this round's malicious clients
    num_clients: int  # rows in this round's U
    own_updates: Optional[torch.Tensor]  # (m, d) the malicious clients' honest updates
    benign_updates: Optional[torch.Tensor]  # (k - m, d) if knowledge == "benign"
    lr: float  # learning rate in force (server lr for fedavg, fl.lr for fedsgd)
    algorithm: str  # "fedavg" | "fedsgd"
    generator: torch.Generator
    benign_ids: Optional[torch.Tensor] = None  # (k - m,) global ids of the benign rows, if knowledge == "benign"
    server: Optional[ServerView] = None  # the defense and round context, if threat.aggregator_aware
    #: (m, d) the malicious clients' rows as an honest client would upload them (after the
    #: defense's client-side transform, e.g. local DP clipping + noise); None: same as own_updates
    uploads: Optional[torch.Tensor] = None


@dataclass(frozen=True)
class Strength:
    """A crafting attack's scalar strength, which ``attack.optimize`` may search.

    ``name``: the attribute (and ``attack.*`` parameter) holding it; ``lo``, ``hi``: the
    default search range; ``unit``: what the range is measured in: ``"1"`` (as is),
    ``"norm"`` (times the mean L2 norm of the round's benign rows: lengths, e.g. ROP's
    distance) or ``"rms"`` (times their root-mean-square coordinate: per-coordinate
    scales, e.g. a Gaussian's sigma).
    """

    name: str
    lo: float = 0.0
    hi: float = 10.0
    unit: Literal["1", "norm", "rms"] = "1"


@dataclass
class LocalTrainContext:
    """What :meth:`Attack.local_train` gets: everything a client needs to train locally.

    Sample indices point into the run's sample store ``x``/``y`` (raw inputs; apply
    ``prepare`` to a batch before the forward pass, as the engine does). ``rngs[i]`` is
    client ``i``'s batch-order stream (the one the engine would use), ``recipe`` the
    benign recipe in force (lr, momentum, weight decay, batch size, epochs).
    ``benign_updates`` is set only when the attack's threat model declares
    ``knowledge="benign"`` (e.g. an oracle ablation).
    """

    round: int
    model: torch.nn.Module  # the architecture; train a copy, or call it functionally
    global_params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    layout: ParamLayout
    client_ids: list[int]
    clean_index: list[np.ndarray]  # each client's clean samples
    poisoned_index: list[np.ndarray]  # each client's data after Attack.poison (= clean if none)
    x: torch.Tensor
    y: torch.Tensor
    prepare: Optional[Callable[[torch.Tensor], torch.Tensor]]
    recipe: TrainRecipe
    rngs: list[np.random.Generator]
    generator: torch.Generator
    benign_updates: Optional[torch.Tensor] = None


class Attack(Stateful):
    """Base class; the default is an honest client. Keyword ``__init__`` args are
    the attack's ``attack.*`` parameters. State kept across rounds is saved in
    checkpoints by :class:`~fedarena.core.state.Stateful`."""

    threat: ThreatModel = ThreatModel()
    #: whether malicious clients run local training (omniscient crafting attacks that
    #: ignore their own updates set this to False to save the compute)
    trains: bool = True
    #: the scalar strength ``attack.optimize`` may search (None: the attack has none)
    strength: Optional[Strength] = None

    def setup(self, info: DataInfo, generator: torch.Generator) -> None:
        """Called once before the run with what the attack may know about the task."""
        self.info = info

    def poison(
        self, x: torch.Tensor, y: torch.Tensor, client_id: int, generator: torch.Generator
    ) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """Return the poisoned local data of a malicious client, or None for no poisoning."""
        return None

    def begin_round(
        self, round: int, layout: ParamLayout, global_params: torch.Tensor, prev_update: Optional[torch.Tensor]
    ) -> None:
        """Called at the start of every round whose cohort holds an attacking client, before
        :meth:`recipe`, with what the broadcast tells that client: the flat global parameters
        and the previous aggregate (``None`` in round 0). Lets a recipe depend on the round
        (Neurotoxin's coordinate mask). Default: nothing."""

    def recipe(self, base: TrainRecipe, client_id: int) -> Optional[TrainRecipe]:
        """Return a custom recipe for a malicious client, or None to train like a benign one."""
        return None

    def craft(self, view: RoundView) -> Optional[torch.Tensor]:
        """Return the malicious rows ``(m, d)`` of the round's U (on ``view.global_params``'
        device), or None to keep their own."""
        return None

    def local_train(self, ctx: LocalTrainContext) -> torch.Tensor:
        """Attacker-run local training: return the update rows ``(len(ctx.client_ids), d)``
        (local model minus global model, in ``ctx.layout``'s order) of the round's malicious
        clients. Override it to own the local loop; the default (not overridden) lets the
        engine train malicious clients with :meth:`recipe`."""
        raise NotImplementedError

    def client_diagnostics(self) -> dict[int, dict[str, Any]]:
        """Per-client records of the last round (client id -> JSON-able dict); the engine
        merges them into those clients' rows of ``clients.jsonl``."""
        return {}

    def distance_specs(self) -> list[tuple[str, str, bool]]:
        """``(metric, scope, flat)`` distances to the global model this attack works with
        (see :mod:`fedarena.core.distances`); the engine logs them for every client."""
        return []

    def backdoor_testset(self, x: torch.Tensor, y: torch.Tensor) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """Triggered test inputs and the target labels for backdoor accuracy, or None."""
        return None

    @property
    def source_class(self) -> Optional[int]:
        """The class whose accuracy is reported as ``base_acc`` (None: not reported)."""
        return getattr(self, "source", None)

    def diagnostics(self) -> dict[str, float]:
        """Scalars about the last crafted round (e.g. a perturbation's cosine to the
        previous one); the engine writes them to ``rounds.jsonl`` as ``attack_<key>``."""
        return {}

    def reset(self) -> None:
        """Forget state kept across rounds."""

    def strength_value(self, view: RoundView) -> float:
        """The strength this round's :meth:`craft` uses at the configured settings (an
        attack whose default is computed per round, e.g. ALIE's z formula, overrides this)."""
        assert self.strength is not None
        return float(getattr(self, self.strength.name))


def runs_local_training(attack: Attack) -> bool:
    """Whether the attack owns its clients' local loop (overrides :meth:`Attack.local_train`)."""
    return type(attack).local_train is not Attack.local_train


def is_noop(attack: Attack) -> bool:
    t = type(attack)
    return (
        t.poison is Attack.poison
        and t.recipe is Attack.recipe
        and t.craft is Attack.craft
        and not runs_local_training(attack)
    )
