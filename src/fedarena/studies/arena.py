"""``fedarena arena``: a small attack x defense matrix on the bundled digits.

Five attacks (none, a square-trigger backdoor, label flipping, the Byzantine inner
product manipulation IPM with epsilon = 10, Xie et al. 2020, and ALIE with its z searched
against each defense every round by ``attack.optimize``, label ``alie+opt``) against six
defenses, five seeds: 150 runs of 20 rounds with 20 clients, 4 of them malicious. Trimmed
mean's ``trim``, Multi-Krum's ``f``, FoolsGold's ``layers`` and RLR's ``theta`` are chosen
first by their worst case over the attacks on a validation split (50 tuning runs, seed 0,
:mod:`fedarena.studies.select`). A few minutes on a 2-core laptop; the result is a
leaderboard and a report (see :mod:`fedarena.studies.report`).
"""

from __future__ import annotations

from typing import Any

from .spec import SweepSpec

ARENA: dict[str, Any] = {
    "name": "arena",
    "base": {
        "data": {"dataset": "digits", "partition": "iid"},
        "fl": {"num_clients": 20, "rounds": 20, "local_epochs": 1, "batch_size": 16, "lr": 0.1},
        "eval": {"every": 2},
    },
    "grid": {
        "attack": [
            {"name": "none"},
            {"name": "backdoor", "num_malicious": 4, "target": 0, "poison_frac": 0.5},
            {"name": "label-flip", "num_malicious": 4},
            {"name": "ipm", "num_malicious": 4, "epsilon": 10.0},
            {"name": "alie", "num_malicious": 4, "optimize": {"evals": 10}},
        ],
        "defense": [
            {"name": "fedavg"},
            {"name": "median"},
            {"name": "trimmed-mean"},
            {"name": "multi-krum"},
            {"name": "foolsgold"},
            {"name": "rlr"},
        ],
        "seed": [0, 1, 2, 3, 4],
    },
    # worst-case tuning (studies/select.py): each parameterised rule at the value whose lowest MA over the
    # attacks above is highest on a validation split of the training data (seed 0), then tested
    "select": {
        "params": {
            "trimmed-mean": {"trim": [2, 4, 6]},
            "multi-krum": {"f": [2, 4, 6]},
            "foolsgold": {"layers": ["last", "all"]},
            "rlr": {"theta": [4, 12]},
        },
        "seeds": [0],
    },
}


def arena_spec() -> SweepSpec:
    return SweepSpec.from_tree(ARENA)
