"""``fedarena arena --robust``: Byzantine attacks x the robust rules peers ship, on the
bundled digits.

The rules ByzFL, Blades, FLPoison and BackFed users look for, next to the classic ones:
FedAvg, the median, Multi-Krum, DnC (Shejwalkar & Houmansadr, NDSS 2021), SignGuard (Xu
et al., ICDCS 2022), ClippedClustering (Li et al. 2023), FLDetector (Zhang et al., KDD
2022), MoNNA, Meamed and CAF (ByzFL), LASA (WACV 2025), and ARC's adaptive clipping
(Allouah et al. 2024) in front of the median. Attacks (4 of 20 clients, every round):
none, ALIE, IPM, Min-Max, SignFlip, and Blades' adaptive attacks against
ClippedClustering (``cc-chain``) and SignGuard (``signguard-mimic``). Label-skewed data
(Dirichlet 0.3) and client momentum 0.9 (FedSGD), where the rules differ; five seeds
(the seeds pair the defenses: same partition and cohorts): 420 runs of 20 rounds, a few
CPU-minutes.
"""

from __future__ import annotations

from typing import Any

from .spec import Job, SweepSpec, relabel

_M = {"num_malicious": 4}

ROBUST_ARENA: dict[str, Any] = {
    "name": "robust-arena",
    "base": {
        "data": {"dataset": "digits", "partition": "dirichlet", "alpha": 0.3},
        "fl": {
            "num_clients": 20,
            "rounds": 20,
            "algorithm": "fedsgd",
            "client_momentum": 0.9,
            "lr": 0.5,
            "batch_size": 32,
        },
        "defense": {"f": 4},
        "eval": {"every": 5},
    },
    "grid": {
        "attack": [
            {"name": "none"},
            {"name": "alie", **_M},
            {"name": "ipm", **_M},
            {"name": "minmax", **_M},
            {"name": "signflip", **_M},
            {"name": "cc-chain", **_M},
            {"name": "signguard-mimic", **_M},
        ],
        "defense": [
            {"name": "fedavg"},
            {"name": "median"},
            {"name": "multi-krum"},
            {"name": "dnc"},
            {"name": "signguard"},
            {"name": "clipped-clustering"},
            {"name": "fldetector"},
            {"name": "monna"},
            {"name": "meamed"},
            {"name": "caf"},
            {"name": "lasa"},
            {"name": "median", "arc": True},
        ],
        "seed": [0, 1, 2, 3, 4],
    },
}


def robust_arena_spec() -> SweepSpec:
    return SweepSpec.from_tree(ROBUST_ARENA)


#: short names of the defense blocks the sweep's automatic labels tell apart by their keys
LABELS = {"median(arc=None)": "median", "median(arc=True)": "arc+median"}


def robust_arena_jobs() -> list[Job]:
    """The arena's runs, the two medians labelled ``median`` and ``arc+median``."""
    return relabel(robust_arena_spec().jobs(), "defense", LABELS)


__all__ = ["ROBUST_ARENA", "robust_arena_jobs", "robust_arena_spec"]
