"""Backdoor accuracy around attack spikes (the LeadFL paper's bursty setting).

A *spike round* holds a malicious majority (more than half of the cohort attacks); a
*benign round* holds no attacker. A *spike* is a maximal run of consecutive spike rounds.
Its *recovery time* is the number of rounds after the spike's last round until the
backdoor accuracy first falls below ``eval.recovery_threshold`` (default 0.3; the LeadFL
spec's Sec. 3.4 / decision A13; the report only says recovery is "significantly faster").
0 means it is already below the threshold at the spike's last round. When it never falls
below before the next spike starts (or the run ends) the recovery is *censored* at the
number of rounds observed plus one (S2 with period 10: 9, the spec's convention).
"""

from __future__ import annotations

from typing import Optional, Sequence


def spike_rounds(attackers: Sequence[int], cohort: int) -> list[int]:
    return [t for t, a in enumerate(attackers) if a > cohort / 2]


def spike_metrics(
    attackers: Sequence[int], backdoor: Sequence[Optional[float]], cohort: int, threshold: float = 0.3
) -> dict:
    """Summary of a run's backdoor accuracy by round type, and each spike's recovery time.

    ``attackers[t]``: attackers in round ``t``'s cohort; ``backdoor[t]``: backdoor accuracy
    after round ``t`` (``None`` when not evaluated).

    >>> m = spike_metrics([6, 0, 0, 0, 6, 0], [0.9, 0.8, 0.2, 0.1, 0.9, 0.9], cohort=10)
    >>> m["recovery_rounds"], m["recovery_censored"], m["ba_mean_spike"]
    ([2, 2], 1, 0.9)
    """
    T = len(attackers)
    ba = list(backdoor) + [None] * (T - len(backdoor))
    spikes = set(spike_rounds(attackers, cohort))
    benign = [t for t in range(T) if attackers[t] == 0]

    def mean(rounds) -> Optional[float]:
        vals = [ba[t] for t in rounds if ba[t] is not None]
        return sum(vals) / len(vals) if vals else None

    ends = [t for t in sorted(spikes) if t + 1 not in spikes]
    starts = [t for t in sorted(spikes) if t - 1 not in spikes]
    recovery, censored = [], 0
    for end in ends:
        nxt = min([s for s in starts if s > end], default=T)
        k = next((t - end for t in range(end, nxt) if ba[t] is not None and ba[t] < threshold), None)
        if k is None:
            k, censored = nxt - end, censored + 1
        recovery.append(k)
    evaluated = [t for t in range(T) if ba[t] is not None]
    return {
        "spikes": len(ends),
        "ba_mean": mean(range(T)),
        "ba_mean_spike": mean(sorted(spikes)),
        "ba_mean_benign": mean(benign),
        "ba_final": ba[evaluated[-1]] if evaluated else None,
        "recovery_rounds": recovery,
        "recovery_rounds_mean": sum(recovery) / len(recovery) if recovery else None,
        "recovery_censored": censored,
    }


__all__ = ["spike_metrics", "spike_rounds"]
