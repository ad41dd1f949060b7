"""Spike metrics (run/recovery.py): hand values, and the summary of a periodic run."""

import pytest

from fedarena.config import load_config
from fedarena.run.recovery import spike_metrics
from fedarena.run.simulation import Simulation


def test_hand_values_periodic():
    att = [6, 6, 0, 0, 0, 6, 6, 0, 0, 0]
    ba = [0.5, 0.9, 0.6, 0.25, 0.1, 0.8, 0.9, 0.5, 0.4, 0.35]
    m = spike_metrics(att, ba, cohort=10, threshold=0.3)
    assert m["spikes"] == 2
    assert m["recovery_rounds"] == [2, 4]  # rounds 1 -> 3; round 6 -> never (censored at 10 - 6)
    assert m["recovery_censored"] == 1
    assert m["ba_mean_spike"] == pytest.approx((0.5 + 0.9 + 0.8 + 0.9) / 4)
    assert m["ba_mean_benign"] == pytest.approx((0.6 + 0.25 + 0.1 + 0.5 + 0.4 + 0.35) / 6)
    assert m["ba_mean"] == pytest.approx(sum(ba) / 10)
    assert m["ba_final"] == 0.35


def test_minority_rounds_are_neither_spike_nor_benign_and_missing_evals_are_skipped():
    m = spike_metrics([2, 0, 5, 0], [0.4, None, 0.2, 0.1], cohort=10)
    assert m["spikes"] == 0 and m["recovery_rounds"] == [] and m["recovery_rounds_mean"] is None
    assert m["ba_mean_spike"] is None and m["ba_mean_benign"] == 0.1 and m["ba_final"] == 0.1


def test_a_recovered_spike_counts_zero():
    assert spike_metrics([7, 0], [0.1, 0.0], cohort=10)["recovery_rounds"] == [0]


def test_summary_of_a_periodic_backdoor_run():
    cfg = load_config(
        None,
        [
            "fl.num_clients=20",
            "fl.clients_per_round=10",
            "fl.sampling=periodic",
            "fl.period=5",
            "fl.rounds=10",
            "attack.name=backdoor",
            "attack.num_malicious=6",
        ],
    )
    s = Simulation(cfg).run().summary
    assert s["spikes"] == 2 and len(s["recovery_rounds"]) == 2
    for k in ("ba_mean", "ba_mean_spike", "ba_mean_benign", "ba_final"):
        assert 0.0 <= s[k] <= 1.0
    assert s["ba_final"] == s["final_backdoor_acc"]
