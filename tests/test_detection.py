"""One definition of a flagged client, used by the report and the reproductions."""

import math

from fedarena.core.metrics import detection, flagged


def test_flagged_is_a_rejection_or_a_zero_weight():
    assert [
        flagged(r)
        for r in (
            {"accepted": False},
            {"accepted": True},
            {"weight": 0.0},
            {"weight": -1.0},
            {"weight": 1e-9},
            {},
            {"weight": None},
        )
    ] == [True, False, True, True, False, None, None]


def test_detection_counts_by_hand():
    rows = [  # round 0 has an attacker, round 1 none
        {"round": 0, "attacking": True, "accepted": False},  # tp
        {"round": 0, "attacking": True, "accepted": True},  # fn
        {"round": 0, "attacking": False, "accepted": False},  # fp
        {"round": 0, "attacking": False, "accepted": True},  # tn
        {"round": 1, "attacking": False, "weight": 0.0},  # fp, in a round without attackers
        {"round": 1, "attacking": False, "weight": 0.5},  # tn, in a round without attackers
        {"round": 1, "attacking": False},  # no decision: skipped
    ]
    d = detection(rows)
    assert (d["tp"], d["fn"], d["fp"], d["tn"], d["decisions"]) == (1, 1, 2, 2, 6)
    assert d["precision"] == 1 / 3 and d["recall"] == 1 / 2 and d["fpr"] == 2 / 4
    assert d["f1"] == 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2)
    assert d["fpr_no_attack_rounds"] == 1 / 2


def test_no_decisions_give_nan_rates():
    d = detection([{"round": 0, "attacking": True}])
    assert d["decisions"] == 0 and math.isnan(d["precision"]) and math.isnan(d["fpr"])
