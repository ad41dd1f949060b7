"""Mimic (Karimireddy, He & Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets
via Bucketing", ICLR 2022, Sec. 5 and App. "mimic attack").

Under heterogeneous data the benign updates differ, and a robust rule that drops
outliers can be steered by over-representing one benign client: every attacker sends an
exact copy of a chosen benign client's update. Nothing looks malicious, yet the
aggregate leans towards that client's data.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import ConfigError
from ..registry import ATTACKS
from .base import Attack, RoundView
from .byzantine import OMNISCIENT, benign_rows, repeat_rows


@ATTACKS.register("mimic")
class Mimic(Attack):
    """Mimic (Karimireddy, He & Jaggi, ICLR 2022): every attacker copies one benign client.

    ``target=None`` (default): the paper's heuristic (the authors' ``MimicVariantAttacker``).
    The attackers estimate the direction ``z`` of largest variance of the benign updates
    by one step of online power iteration per round over the first ``warmup`` attacking
    rounds (``z_0 ~ N(0, I)`` from a generator seeded 0, as the authors' code;
    ``mu_t = (t mu_{t-1} + mean_t) / (t + 1)``; ``z_t ∝ t z_{t-1} / (t + 1) + c_t / ((t + 1) ||c_t||)``
    with ``c_t = sum_i <x_i - mu_t, z_{t-1}> (x_i - mu_t)``, normalised), and copy the benign
    row with the largest ``<x_i, z>``. From round ``warmup`` on they keep copying that
    client (by id); in a round where it is not sampled they copy the benign row with the
    largest ``<x_i, z>`` of that round (partial participation, which the paper does not have).

    ``target=j``: copy this round's ``j``-th benign row (ByzFL's ``Mimic(epsilon=j)``).

    Diagnostics: ``target`` (the copied client's global id, or -1 if unknown) and
    ``score`` (its ``<x, z>``; heuristic only).
    """

    threat = OMNISCIENT
    trains = False

    def __init__(self, *, target: Optional[int] = None, warmup: int = 1):
        if target is not None and target < 0:
            raise ConfigError("attack.target", f"must be >= 0 (got {target})", "a benign row index, or null")
        if warmup < 1:
            raise ConfigError("attack.warmup", f"must be >= 1 (got {warmup})", "1, 2, ...")
        self.target, self.warmup = target, int(warmup)
        self.reset()

    def reset(self) -> None:
        self.t = 0
        self.mu: Optional[torch.Tensor] = None
        self.z: Optional[torch.Tensor] = None
        self.chosen: Optional[int] = None
        self._diag: dict[str, float] = {}

    def _update_direction(self, B: torch.Tensor) -> None:
        avg = B.mean(0)
        if self.t == 0:
            self.mu = avg
            g = torch.Generator().manual_seed(0)
            z0 = torch.randn(B.shape[1], generator=g, dtype=B.dtype).to(B.device)
            c = ((B - self.mu) @ z0) @ (B - self.mu)
            self.z = c / torch.linalg.vector_norm(c).clamp_min(1e-30)
            return
        t = self.t
        self.mu = t / (1 + t) * self.mu + avg / (1 + t)
        c = ((B - self.mu) @ self.z) @ (B - self.mu)
        z = t / (1 + t) * self.z + c / torch.linalg.vector_norm(c).clamp_min(1e-30) / (1 + t)
        self.z = z / torch.linalg.vector_norm(z).clamp_min(1e-30)

    def craft(self, view: RoundView) -> Optional[torch.Tensor]:
        self._diag = {}
        B = benign_rows(view)
        if B is None:
            return None
        m = len(view.malicious_ids)
        ids = view.benign_ids.tolist() if view.benign_ids is not None else None
        if self.target is not None:
            j = min(self.target, len(B) - 1)
            self._diag = {"target": float(ids[j]) if ids else -1.0}
            return repeat_rows(B[j], m)
        if self.t < self.warmup:
            self._update_direction(B)
        scores = B @ self.z
        if self.t >= self.warmup and ids is not None and self.chosen in ids:
            j = ids.index(self.chosen)
        else:
            j = int(torch.argmax(scores))
            if self.t < self.warmup or self.chosen is None:
                self.chosen = ids[j] if ids is not None else None
        self.t += 1
        self._diag = {"target": float(ids[j]) if ids is not None else -1.0, "score": float(scores[j])}
        return repeat_rows(B[j], m)

    def diagnostics(self) -> dict[str, float]:
        return dict(self._diag)
