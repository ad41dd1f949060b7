"""The backdoor durability metric: rounds the backdoor outlives its attack (hand-computed)."""

from fedarena.config import load_config
from fedarena.core.metrics import backdoor_durability
from fedarena.run.simulation import Simulation


def test_rounds_until_below_threshold_after_the_last_attacking_round():
    # last attacking round L = 2; BA after rounds 2..5 = 0.9, 0.6, 0.4, 0.2: first < 0.3 at round 5 -> 5 - 2 = 3
    m = backdoor_durability([1, 0, 2, 0, 0, 0], [0.5, 0.5, 0.9, 0.6, 0.4, 0.2], 0.3)
    assert m == {"backdoor_durability": 3, "backdoor_durability_censored": False, "attack_last_round": 2}
    # threshold 0.5: first < 0.5 at round 4 -> 2
    assert backdoor_durability([1, 0, 2, 0, 0, 0], [0.5, 0.5, 0.9, 0.6, 0.4, 0.2], 0.5)["backdoor_durability"] == 2


def test_already_below_at_the_last_attack_round_is_zero():
    assert backdoor_durability([3, 3, 0], [0.9, 0.1, 0.0])["backdoor_durability"] == 0


def test_never_below_is_censored_at_the_rounds_left_plus_one():
    # L = 1, T = 4: rounds 1, 2, 3 observed -> censored at T - L = 3
    m = backdoor_durability([1, 1, 0, 0], [0.9, 0.9, 0.8, 0.7])
    assert m["backdoor_durability"] == 3 and m["backdoor_durability_censored"] is True


def test_unevaluated_rounds_are_skipped_and_no_attack_gives_none():
    # eval every 2 rounds: BA known after rounds 1, 3, 5; L = 1; first < 0.3 at round 5 -> 4
    assert backdoor_durability([1, 1, 0, 0, 0, 0], [None, 0.9, None, 0.5, None, 0.1])["backdoor_durability"] == 4
    assert backdoor_durability([0, 0], [0.1, 0.1]) == {
        "backdoor_durability": None,
        "backdoor_durability_censored": None,
        "attack_last_round": None,
    }


def test_run_summary_reports_durability():
    r = Simulation(
        load_config(
            None,
            [
                "fl.num_clients=10",
                "fl.rounds=6",
                "attack.name=backdoor",
                "attack.num_malicious=3",
                "attack.end_round=2",
            ],
        )
    ).run()
    bd = [m["backdoor_acc"] for m in r.metrics]
    expected = next((t - 2 for t in range(2, 6) if bd[t] < 0.3), 4)
    assert r.summary["attack_last_round"] == 2 and r.summary["backdoor_durability"] == expected
