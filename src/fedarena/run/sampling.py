"""Participation schedules: which clients take part in round ``t`` (``fl.sampling``).

The LeadFL paper's premise (Zhu, Roos, Chen, ICML 2023; the LeadFL report Sec. I, III)
is that with partial participation the number of attackers per round, ``X_t``, varies,
and malicious-majority rounds ("spikes") pass every server-side robust rule. The
schedules:

* ``uniform`` -- ``k`` of ``n`` clients uniformly without replacement; then
  ``X_t ~ Hypergeometric(n, M, k)`` (the paper's main tables, schedule S1).
* ``fixed-malicious`` -- exactly ``round(k M / n)`` attackers every round.
* ``periodic`` -- the report's schedule S2: in each period of ``fl.period`` rounds the first
  ``fl.spike_rounds`` rounds hold ``fl.spike_malicious`` attackers, the others none
  (report: "cycles of ten rounds, where the first two rounds contain six malicious
  clients out of ten"). Defaults 10 / 2 / 6.
* ``counts`` -- an explicit per-round list of attacker counts, ``fl.malicious_counts``
  (repeated cyclically when shorter than the run).

``fl.forced_rounds`` (any schedule): the LeadFL reference code forces rounds {0, 10, 12}
to hold ``fl.forced_malicious`` (5) attackers and the rest benign, whatever the selection
method (spec reference-code quirk, decision A7). Empty by default.

Given a count ``m``, the attackers are drawn uniformly from the malicious set and the
others uniformly from the benign set. All draws come from the ``sampling`` seed stream
keyed by the round, so every run with the same seed sees the same cohorts whatever its
defense (paired comparisons, spec decision A24).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

SCHEDULES = ("uniform", "fixed-malicious", "periodic", "counts")


def attacker_count(
    t: int,
    schedule: str,
    k: int,
    n: int,
    num_malicious: int,
    *,
    period: int = 10,
    spike_rounds: int = 2,
    spike_malicious: int = 6,
    counts: Sequence[int] = (),
    forced_rounds: Sequence[int] = (),
    forced_malicious: int = 5,
) -> Optional[int]:
    """The number of attackers in round ``t``'s cohort, or ``None`` for ``uniform`` (then
    the count is whatever the uniform draw holds). Clipped to what the populations allow."""
    if t in forced_rounds:
        m = forced_malicious
    elif schedule == "uniform":
        return None
    elif schedule == "fixed-malicious":
        m = round(k * num_malicious / n)
    elif schedule == "periodic":
        m = spike_malicious if t % period < spike_rounds else 0
    elif schedule == "counts":
        m = int(counts[t % len(counts)]) if len(counts) else 0
    else:  # validated by the config; kept as a guard
        raise ValueError(f"unknown schedule {schedule!r}")
    return max(min(m, num_malicious, k), k - (n - num_malicious), 0)


def draw_cohort(
    rng: np.random.Generator, k: int, n: int, malicious: np.ndarray, is_malicious: np.ndarray, m: Optional[int]
) -> np.ndarray:
    """Sorted client ids of one cohort: uniform over all clients (``m is None``), or ``m``
    uniform attackers plus ``k - m`` uniform benign clients."""
    if k == n:
        return np.arange(k)
    if m is None:
        return np.sort(rng.choice(n, k, replace=False))
    benign = np.flatnonzero(~is_malicious)
    return np.sort(
        np.concatenate([rng.choice(malicious, m, replace=False), rng.choice(benign, k - m, replace=False)]).astype(
            np.int64
        )
    )


__all__ = ["SCHEDULES", "attacker_count", "draw_cohort"]
