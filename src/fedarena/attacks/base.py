"""The attack interface: three hooks and a declared threat model.

An attack implements any of:

* :meth:`Attack.poison` -- data poisoning: rewrite a malicious client's local data
  once, before training (label flips, backdoor triggers).
* :meth:`Attack.recipe` -- custom local training for malicious clients (extra loss
  terms, projections, negated losses). Clients with a custom recipe train on the
  sequential path unless the recipe says it can be vectorized.
* :meth:`Attack.craft` -- model poisoning: replace the malicious rows of the update
  matrix, given a :class:`RoundView` limited by :attr:`Attack.threat`.

Outside ``[start_round, end_round]`` malicious clients behave honestly (clean data,
benign recipe, no crafting); the engine enforces this window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

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
    #: (m, d) the malicious clients' rows as an honest client would upload them (after the
    #: defense's client-side transform, e.g. local DP clipping + noise); None: same as own_updates
    uploads: Optional[torch.Tensor] = None


class Attack(Stateful):
    """Base class; the default is an honest client. Keyword ``__init__`` args are
    the attack's ``attack.*`` parameters. State kept across rounds is saved in
    checkpoints by :class:`~fedarena.core.state.Stateful`."""

    threat: ThreatModel = ThreatModel()
    #: whether malicious clients run local training (omniscient crafting attacks that
    #: ignore their own updates set this to False to save the compute)
    trains: bool = True

    def setup(self, info: DataInfo, generator: torch.Generator) -> None:
        """Called once before the run with what the attack may know about the task."""
        self.info = info

    def poison(self, x: torch.Tensor, y: torch.Tensor, client_id: int, generator: torch.Generator) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """Return the poisoned local data of a malicious client, or None for no poisoning."""
        return None

    def recipe(self, base: TrainRecipe, client_id: int) -> Optional[TrainRecipe]:
        """Return a custom recipe for a malicious client, or None to train like a benign one."""
        return None

    def craft(self, view: RoundView) -> Optional[torch.Tensor]:
        """Return the malicious rows ``(m, d)`` of the round's U, or None to keep their own."""
        return None

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


def is_noop(attack: Attack) -> bool:
    t = type(attack)
    return (
        t.poison is Attack.poison and t.recipe is Attack.recipe and t.craft is Attack.craft
    )
