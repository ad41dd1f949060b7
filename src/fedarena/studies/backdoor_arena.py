"""``fedarena arena --backdoor``: backdoor attacks x backdoor defenses on the bundled digits.

Attacks (4 of 20 clients malicious, attacking in rounds 0-14 of 20, so the last five
rounds measure how long each backdoor lasts: ``backdoor_durability`` in the report):

* ``backdoor``: the fixed square trigger (BadNets-style, ``poison_frac`` 0.5);
* ``blended``: the whole-image blended trigger (Chen et al. 2017), alpha 0.5;
* ``neurotoxin``: the square trigger trained off the top 30 % coordinates of the last
  global update (Zhang et al., ICML 2022);
* ``a3fl``: a 3x3 patch re-optimized every round against the global model and its
  unlearning (Zhang et al., NeurIPS 2023);
* ``replace``: the square trigger with model replacement (boost 5, Bagdasaryan et al. 2020);
* ``chameleon``: the square trigger with Chameleon's contrastive two-stage training (Dai & Li,
  ICML 2023);
* ``iba``: IBA's learned eps = 0.3 trigger generator (Nguyen et al., NeurIPS 2023);
* ``none``: no attack (clean accuracy).

Defenses: FedAvg, the median, Multi-Krum, FoolsGold, RLR (theta 8), FLAME, and the
detectors added with the recent attacks: DeepSight, CRFL, FLARE, AlignIns. Two seeds:
160 runs of 20 rounds; about ten CPU-minutes (Chameleon and IBA train their own loops).
"""

from __future__ import annotations

from typing import Any

from .spec import Job, SweepSpec, relabel

_COMMON = {"num_malicious": 4, "target": 0, "end_round": 14}

BACKDOOR_ARENA: dict[str, Any] = {
    "name": "backdoor-arena",
    "base": {
        "data": {"dataset": "digits", "partition": "iid"},
        "fl": {"num_clients": 20, "rounds": 20, "local_epochs": 1, "batch_size": 16, "lr": 0.1},
        "eval": {"every": 1},
    },
    "grid": {
        "attack": [
            {"name": "none"},
            {"name": "backdoor", **_COMMON, "poison_frac": 0.5},
            {"name": "backdoor", **_COMMON, "poison_frac": 0.5, "trigger": "blended", "trigger_value": 0.5},
            {"name": "neurotoxin", **_COMMON, "poison_frac": 0.5, "mask_ratio": 0.3},
            {"name": "a3fl", **_COMMON, "poison_frac": 0.5, "trigger_size": 3},
            {"name": "backdoor", **_COMMON, "poison_frac": 0.5, "boost": 5.0},
            {"name": "chameleon", **_COMMON, "poison_frac": 0.5},
            {"name": "iba", **_COMMON, "poison_frac": 0.5},
        ],
        "defense": [
            {"name": "fedavg"},
            {"name": "median"},
            {"name": "multi-krum"},
            {"name": "foolsgold"},
            {"name": "rlr", "theta": 8},
            {"name": "flame"},
            {"name": "deepsight"},
            {"name": "crfl"},
            {"name": "flare"},
            {"name": "alignins"},
        ],
        "seed": [0, 1],
    },
}


#: short names of the grid's attack blocks (the sweep's automatic labels list the keys that tell them apart)
LABELS = {
    "backdoor(boost=None,trigger=None,trigger_value=None)": "backdoor",
    "backdoor(boost=None,trigger=blended,trigger_value=0.5)": "blended",
    "backdoor(boost=5.0,trigger=None,trigger_value=None)": "replace",
}


def backdoor_arena_spec() -> SweepSpec:
    return SweepSpec.from_tree(BACKDOOR_ARENA)


def backdoor_arena_jobs() -> list[Job]:
    """The arena's runs, the attacks labelled by their short names."""
    return relabel(backdoor_arena_spec().jobs(), "attack", LABELS)
