"""The negated-loss backdoor: an adaptive attack on the Robust Learning Rate.

Ozdayi et al., "Defending against Backdoors in Federated Learning with Robust Learning
Rate", AAAI 2021, Sec. 5 and App. C.3 (Table 7): RLR multiplies the server learning rate
by -1 on coordinates where too few clients agree on the update's sign, so an attacker
might try to "pre-negate": its clients train on their poisoned data with the *negated*
loss ``-CE`` (gradient ascent), hoping the flip turns it back into descent. The paper
finds it does not help (backdoor accuracy 0.7 % i.i.d., 3 % non-i.i.d.) because RLR flips
every low-consensus coordinate, not the attacker's update. The negated loss inflates the
attacker's update norm, so the paper clips every update at the server (M = 4 i.i.d.,
M = 0.5 non-i.i.d.: ``defense.clip=4 defense.clip_at=server``) to keep the model from
diverging.

As in the RLR spec's decision 20, the whole local loss of the malicious clients is negated
(all their samples, poisoned or not); the benign recipe's gradient clipping, momentum and
client-side projections stay in force.
"""

from __future__ import annotations

import torch

from ..core.recipe import TrainRecipe, cross_entropy
from ..registry import ATTACKS
from .data_poisoning import Backdoor


def negated_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample ``-CE``: minimising it maximises the cross-entropy."""
    return -cross_entropy(logits, y)


@ATTACKS.register("backdoor-negated")
class NegatedLossBackdoor(Backdoor):
    """Trojan backdoor whose clients minimise the negated loss (RLR paper, Table 7); all
    ``backdoor`` options apply.

    >>> a = NegatedLossBackdoor(target=7, source=5, trigger="plus")
    >>> a.recipe(TrainRecipe(lr=0.1), 0).loss is negated_cross_entropy
    True
    """

    def recipe(self, base: TrainRecipe, client_id: int) -> TrainRecipe:
        # a module-level function: equal recipes are grouped and trained vectorized together
        return base.with_(loss=negated_cross_entropy)
