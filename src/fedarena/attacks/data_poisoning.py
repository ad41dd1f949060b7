"""Data-poisoning attacks: no attack, label flipping and pixel-pattern backdoors."""

from __future__ import annotations

from typing import Optional

import torch

from ..data.poison import Trigger, flip_labels, make_trigger
from ..errors import ConfigError
from ..registry import ATTACKS
from .base import Attack, DataInfo


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
    """Pixel-pattern backdoor (BadNets, Gu et al. 2017; the RLR paper's trojan setting).

    A malicious client stamps the trigger on ``floor(poison_frac * n_source)`` of its
    samples of the source class (default: all non-target classes) and relabels them
    ``target``, once, in place (the RLR reference code's ``poison_dataset``). Backdoor
    accuracy is measured on triggered test inputs of the source class (all non-target
    classes when no source is set).
    """

    def __init__(self, *, target: int = 0, source: Optional[int] = None, trigger: str = "square",
                 poison_frac: float = 0.5, trigger_value: float = 1.0):
        if not 0.0 <= poison_frac <= 1.0:
            raise ConfigError("attack.poison_frac", f"must be in [0, 1] (got {poison_frac})", "0..1")
        self.target, self.source, self.trigger_name = target, source, trigger
        self.poison_frac, self.trigger_value = poison_frac, trigger_value

    def setup(self, info: DataInfo, generator: torch.Generator) -> None:
        super().setup(info, generator)
        check_classes(self, info, "source", "target")
        if self.source is not None and self.source == self.target:
            raise ConfigError("attack.source", "must differ from attack.target", f"a class other than {self.target}")
        self.trigger: Trigger = make_trigger(self.trigger_name, info.input_shape, self.trigger_value)

    def _eligible(self, y: torch.Tensor) -> torch.Tensor:
        return (y == self.source) if self.source is not None else (y != self.target)

    def poison(self, x, y, client_id, generator):
        cand = torch.nonzero(self._eligible(y)).flatten()
        n = int(self.poison_frac * len(cand))
        pick = cand[torch.randperm(len(cand), generator=generator)[:n].to(cand.device)]
        x, y = x.clone(), y.clone()
        x[pick] = self.trigger.apply(x[pick])
        y[pick] = self.target
        return x, y

    def backdoor_testset(self, x, y):
        keep = self._eligible(y)
        return self.trigger.apply(x[keep]), torch.full_like(y[keep], self.target)
