"""Data-poisoning attacks: no attack, label flipping and pixel-pattern backdoors."""

from __future__ import annotations

import math
from typing import Literal, Optional, Union

import torch

from ..data.poison import TRIGGERS, Trigger, eligible, flip_labels, make_trigger, poisoned_indices
from ..errors import ConfigError
from ..registry import ATTACKS
from .base import Attack, DataInfo, RoundView


def check_classes(attack: Attack, info: DataInfo, *keys: str) -> None:
    """Raise a one-line error if one of the attack's class parameters is out of range."""
    for key in keys:
        v = getattr(attack, key)
        if v is not None and not 0 <= v < info.num_classes:
            raise ConfigError(f"attack.{key}", f"class {v} out of range", f"0..{info.num_classes - 1}")


@ATTACKS.register("none")
class NoAttack(Attack):
    """No attack: every client is honest."""


@ATTACKS.register("label-flip")
class LabelFlip(Attack):
    """Label flipping (non-omniscient): malicious clients train on ``y -> C-1-y``
    (as in the Fall-of-CC paper, Sec. V), or on ``source -> target`` when both are set."""

    def __init__(self, *, source: Optional[int] = None, target: Optional[int] = None):
        self.source, self.target = source, target

    def setup(self, info: DataInfo, generator: torch.Generator) -> None:
        super().setup(info, generator)
        check_classes(self, info, "source", "target")
        if (self.source is None) != (self.target is None):
            raise ConfigError("attack.source", "set both attack.source and attack.target, or neither", "two class ids")

    def poison(self, x, y, client_id, generator):
        return x, flip_labels(y, self.info.num_classes, self.source, self.target)


@ATTACKS.register("backdoor")
class Backdoor(Attack):
    """Trojan (pixel-pattern) backdoor (BadNets, Gu et al. 2017; the RLR paper's setting,
    Ozdayi et al., AAAI 2021, Sec. 4), with distributed triggers and boosting.

    Poisoning (RLR paper Sec. 4 and its code's ``poison_dataset``): once, before training, a
    malicious client stamps the trigger on ``floor(poison_frac * n_source)`` of its samples
    of the ``source`` class (all non-target classes when ``source`` is None), chosen
    uniformly at random, and relabels them ``target``; the other samples stay untouched and
    the dataset size is unchanged. ``poison_frac`` is the share of the *source-class*
    samples (the code; App. A's glossary says "of the dataset").

    Evaluation: backdoor accuracy is the share of triggered test inputs of the source class
    (all non-target classes when no source) classified as ``target``, always with the
    full trigger; base-class accuracy is the clean accuracy on the source class.

    Options:
        trigger, trigger_size, trigger_position, trigger_value, trigger_blend: the trigger
            (see :mod:`fedarena.data.poison`: plus, square, copyright, apple, pixel, badnets).
        dba: distributed backdoor (Xie et al., ICLR 2020; RLR paper Table 2): the trigger is
            split into ``dba_parts`` parts and the j-th malicious client (by sorted id)
            stamps only part ``j mod dba_parts``.
        boost: model replacement / boosting (Bagdasaryan et al., AISTATS 2020, Eq. 3;
            Bhagoji et al., ICML 2019): a malicious client sends ``boost * delta`` instead
            of its update ``delta``; ``boost = n / eta`` replaces the global model. 1: off
            (the RLR paper uses no boosting). The scaling happens after local training, so
            client-side projection (``defense.clip_at=client``) does not bound it; server-side
            clipping (``defense.clip_at=server``, Sun et al. 2019) does.

    >>> b = Backdoor(target=7, source=1, trigger="plus")
    """

    def __init__(
        self,
        *,
        target: int = 0,
        source: Optional[int] = None,
        trigger: str = "square",
        poison_frac: float = 0.5,
        trigger_value: Optional[float] = None,
        trigger_size: Optional[int] = None,
        trigger_position: Optional[Union[str, tuple[int, int]]] = None,
        trigger_blend: Optional[Literal["replace", "add"]] = None,
        dba: bool = False,
        dba_parts: int = 4,
        boost: float = 1.0,
    ):
        if not 0.0 <= poison_frac <= 1.0:
            raise ConfigError("attack.poison_frac", f"must be in [0, 1] (got {poison_frac})", "0..1")
        if trigger not in TRIGGERS:
            raise ConfigError("attack.trigger", f"unknown trigger {trigger!r}", ", ".join(TRIGGERS))
        if dba_parts < 1:
            raise ConfigError("attack.dba_parts", f"must be >= 1 (got {dba_parts})", ">= 1")
        if not math.isfinite(boost) or boost <= 0:
            raise ConfigError("attack.boost", f"must be a finite number > 0 (got {boost})", "> 0, 1 = no boosting")
        self.target, self.source, self.trigger_name = target, source, trigger
        self.poison_frac, self.trigger_value = poison_frac, trigger_value
        self.trigger_size, self.trigger_position, self.trigger_blend = trigger_size, trigger_position, trigger_blend
        self.dba, self.dba_parts, self.boost = dba, dba_parts, boost
        self.part_of: dict[int, int] = {}  # client id -> DBA part index
        self.poisoned_counts: dict[int, int] = {}  # client id -> number of poisoned samples

    def setup(self, info: DataInfo, generator: torch.Generator) -> None:
        super().setup(info, generator)
        check_classes(self, info, "source", "target")
        if self.source is not None and self.source == self.target:
            raise ConfigError("attack.source", "must differ from attack.target", f"a class other than {self.target}")
        self.trigger: Trigger = make_trigger(
            self.trigger_name,
            info.input_shape,
            self.trigger_value,
            self.trigger_size,
            self.trigger_position,
            self.trigger_blend,
        )
        self.parts = self.trigger.split(self.dba_parts) if self.dba else None

    def client_trigger(self, client_id: int) -> Trigger:
        """The trigger a malicious client stamps: the full one, or its DBA part."""
        if self.parts is None:
            return self.trigger
        j = self.part_of.setdefault(int(client_id), len(self.part_of))
        return self.parts[j % len(self.parts)]

    def poison(self, x, y, client_id, generator):
        pick = poisoned_indices(y, self.target, self.source, self.poison_frac, generator)
        n = len(pick)
        x, y = x.clone(), y.clone()
        x[pick] = self.client_trigger(client_id).apply(x[pick])
        y[pick] = self.target
        self.poisoned_counts[int(client_id)] = n
        return x, y

    def craft(self, view: RoundView) -> Optional[torch.Tensor]:
        if self.boost == 1.0:
            return None
        return view.own_updates * self.boost

    def backdoor_testset(self, x, y):
        keep = eligible(y, self.target, self.source)
        return self.trigger.apply(x[keep]), torch.full_like(y[keep], self.target)

    def diagnostics(self) -> dict[str, float]:
        return {"boost": float(self.boost)} if self.boost != 1.0 else {}
