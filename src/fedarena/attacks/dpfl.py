"""Attack-DPFL: a backdoor hidden in the magnitude of DP noise (Qi, Wang, Huang, AAAI 2024).

"Towards the Robustness of Differentially Private Federated Learning", as summarised in
the LeadFL report, Sec. VI. Under local DP (``defense.dp=local``) every honest upload is
``S = clip_C(G) + N(0, sigma^2 C^2 I)``, of norm ``~ sigma C sqrt(d)``. The malicious
clients train on backdoored data (the :class:`~fedarena.attacks.data_poisoning.Backdoor`
poisoning) and upload their *un-noised* poisoned update ``G_u`` amplified to that norm
(Eq. 11)::

    A_u = A * G_u,   A = ||S_benign|| / ||G_u||

``||S_benign||`` is the norm of the attacker's own upload had it followed the protocol
(its clipped + noised update, ``RoundView.uploads``); without client-side DP it is its
own update's norm (A = 1). ``centered=True`` is the "smarter attacker" the report names
as future work: ``G_u - mean(G_u)`` before amplification, so that the Robust-DPFL score
``|mean(S)|`` of its upload is 0.

The authors' code applies the rescale to the full weight vector instead (spec §5c):
``scope="weights"`` uploads ``A (w + G_u) - w`` with ``A = ||w + S|| / ||w + G_u||``
(``w`` the global model), so the amplified model carries an amplified copy of ``w``'s
mean, which is what the Robust-DPFL score then sees (``defense.scope=weights``).
``scope="update"`` (default) follows Eq. 11 as written.

Poisoning: by default the :class:`~fedarena.attacks.data_poisoning.Backdoor` poisoning
(``poison_frac`` of the attacker's non-target samples triggered and relabelled in place).
``copies=True`` is the authors' code's (``poison.py``, spec §5c): a triggered copy of
*every* sample of the attacker (target class included), labelled ``target``, is added to
its clean data, so half of its training set is poisoned; ``poison_frac`` is then unused.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from ..errors import ConfigError
from ..registry import ATTACKS
from .base import RoundView, ThreatModel
from .data_poisoning import Backdoor


@ATTACKS.register("attack-dpfl")
class AttackDPFL(Backdoor):
    """Attack-DPFL: un-noised backdoor update amplified to the DP-noise norm (Qi et al., AAAI 2024, Eq. 11).

    Backdoor poisoning (``target``, ``source``, ``trigger``, ``poison_frac`` as for
    ``backdoor``), then ``A_u = (||S_benign|| / ||G_u||) G_u``. ``centered``: subtract the
    mean coordinate first (the "smarter attacker" that evades the Eq. 12 score).
    ``scope``: ``"update"`` (Eq. 11) or ``"weights"`` (the authors' code: the whole model
    ``w + G_u`` is rescaled to the norm of ``w + S``). ``copies``: the authors' poisoning
    (a triggered copy of every sample added).
    """

    threat = ThreatModel(knowledge="own", collude=False)

    def __init__(
        self,
        *,
        centered: bool = False,
        scope: str = "update",
        copies: bool = False,
        target: int = 0,
        source: Optional[int] = None,
        trigger: str = "square",
        poison_frac: float = 0.5,
        trigger_size: Optional[int] = None,
        trigger_position: Optional[Union[str, tuple[int, int]]] = None,
        trigger_value: Optional[float] = None,
    ):
        super().__init__(
            target=target,
            source=source,
            trigger=trigger,
            poison_frac=poison_frac,
            trigger_size=trigger_size,
            trigger_position=trigger_position,
            trigger_value=trigger_value,
        )
        if scope not in ("update", "weights"):
            raise ConfigError("attack.scope", f"unknown value {scope!r}", "update, weights")
        self.centered, self.scope, self.copies = centered, scope, bool(copies)
        self._diag: dict[str, float] = {}

    def poison(self, x, y, client_id, generator):
        """``copies``: the clean samples plus a triggered copy of each, labelled ``target``
        (the authors' code); else the backdoor's in-place poisoning."""
        if not self.copies:
            return super().poison(x, y, client_id, generator)
        tx = self.client_trigger(client_id).apply(x.clone())
        self.poisoned_counts[int(client_id)] = len(y)
        return torch.cat([x, tx]), torch.cat([y, torch.full_like(y, self.target)])

    def craft(self, view: RoundView) -> torch.Tensor:
        G = view.own_updates
        if self.centered:
            G = G - G.mean(dim=1, keepdim=True)
        S = view.uploads if view.uploads is not None else view.own_updates
        if self.scope == "weights":  # the authors' code: rescale the whole model w + G_u to ||w + S||
            w = view.global_params.to(G.dtype).unsqueeze(0)
            target = torch.linalg.vector_norm(w + S, dim=1, keepdim=True)
            A = target / torch.linalg.vector_norm(w + G, dim=1, keepdim=True).clamp_min(1e-12)
            self._diag = {"amplification": float(A.mean())}
            return A * (w + G) - w
        target = torch.linalg.vector_norm(S, dim=1, keepdim=True)
        A = target / torch.linalg.vector_norm(G, dim=1, keepdim=True).clamp_min(1e-12)
        self._diag = {"amplification": float(A.mean())}
        return A * G

    def diagnostics(self) -> dict[str, float]:
        return dict(self._diag)
