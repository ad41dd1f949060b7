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


def test_pooled_detection_finds_each_runs_clean_rounds_in_that_run(tmp_path):
    # run A is attacked in round 0; run B never is, and flags one benign client in round 0
    # and accepts another: B's round 0 is a round without attacker (fp0 = 1, tn0 = 1), even
    # though round 0 of A was attacked; pooled over the records as one list it would vanish
    import json

    import pandas as pd

    from fedarena.core.metrics import pooled_detection
    from fedarena.studies.report import detection as report_detection

    a = [
        {"round": 0, "attacking": True, "accepted": False},  # tp
        {"round": 0, "attacking": False, "accepted": True},  # tn, an attacked round
    ]
    b = [
        {"round": 0, "attacking": False, "accepted": False},  # fp, a round without attacker
        {"round": 0, "attacking": False, "accepted": True},  # tn, a round without attacker
    ]
    d = pooled_detection([a, b])
    assert (d["tp"], d["fp"], d["fn"], d["tn"]) == (1, 1, 0, 2)
    assert d["precision"] == 0.5 and d["fpr"] == 1 / 3 and d["fpr_no_attack_rounds"] == 0.5
    assert math.isnan(detection(a + b)["fpr_no_attack_rounds"])  # the mixed-up pooling it replaces
    # the report pools a defense's runs the same way
    paths = []
    for name, recs in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "clients.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        paths.append(str(tmp_path / name))
    row = report_detection(pd.DataFrame({"defense": ["krum", "krum"], "path": paths})).iloc[0]
    assert row["decisions"] == 4 and row["fpr_no_attack_rounds"] == 0.5
