"""The PoisonedFL and DP-FL reproductions: their grids follow the spec, and small
end-to-end runs show the qualitative results (PoisonedFL beats a random-sign attack
under the median; Robust-DPFL's score singles out Attack-DPFL's uploads)."""

from __future__ import annotations

import statistics

import pytest

from fedarena.config import load_config
from fedarena.registry import PAPERS
from fedarena.run.simulation import Simulation


def test_poisonedfl_grid_follows_the_spec():
    paper = PAPERS.get("poisonedfl")()
    full = paper.runs(quick=False)
    pfl = full["mnist/median/pfl"]
    assert pfl["fl"]["num_clients"] == 120 and pfl["fl"]["clients_per_round"] == 24
    assert pfl["fl"]["sampling"] == "fixed-malicious" and pfl["attack"] == {"name": "poisonedfl", "num_malicious": 20}
    assert full["mnist/median/random"]["attack"]["consistent"] is False
    assert full["mnist/trimmed-mean/pfl"]["defense"] == {"name": "trimmed-mean", "trim": 4}  # b = fakes per round
    assert full["mnist/filter/pfl"]["defense"]["name"] == "uniformity-filter"
    assert full["mnist/median/none"]["attack"] == {"name": "none"}
    assert full["mnist/median/pfl-f5"]["fl"]["clients_per_round"] == 21  # 1 fake of 21 (4.8 %)
    for tree in list(full.values()) + list(paper.runs(quick=True).values()):
        load_config(None, base=tree)
    ids = {c.id for c in paper.claims(quick=False)}
    assert {"U11", "U12", "P1.mnist.median", "P2.mnist", "P3.mnist", "P4.mnist", "P5", "P6", "P7", "P8.mnist"} <= ids


def test_dpfl_grid_follows_the_spec():
    paper = PAPERS.get("dpfl")()
    full = paper.runs(quick=False)
    r = full["s1/robust-dpfl"]
    assert r["defense"]["dp"] == "local" and r["defense"]["dp_clip"] == 1.0 and r["defense"]["dp_sigma"] == 1.0
    assert r["attack"]["name"] == "attack-dpfl" and r["attack"]["target"] == 0
    assert full["s1/robust-dpfl-centred"]["attack"]["centered"] is True
    assert full["s0.05/krum"]["defense"]["name"] == "krum" and full["s0.05/krum"]["defense"]["f"] == 4
    for tree in list(full.values()) + list(paper.runs(quick=True).values()):
        load_config(None, base=tree)
    assert {c.id for c in paper.claims(quick=False)} >= {"U13", "D1", "D2", "D3.asr", "D3.mta", "D4", "D5"}


def _acc_tail(res, n=3):
    return statistics.fmean(m["main_acc"] for m in res.metrics[-n:])


@pytest.mark.usefixtures("one_thread")
def test_poisonedfl_hurts_median_more_than_a_random_sign_attack():
    """60 fake of 160 clients (12 of 32 per round): the fixed sign vector accumulates,
    a fresh one each round cancels (seed 0: ~65 % vs ~85 % after 80 rounds)."""
    base = {"seed": 0, "data": {"dataset": "digits"}, "model": {"name": "mlp", "hidden": [32]},
            "fl": {"num_clients": 160, "clients_per_round": 32, "sampling": "fixed-malicious", "rounds": 80,
                   "local_epochs": 1, "batch_size": 8, "lr": 0.05},
            "attack": {"name": "poisonedfl", "num_malicious": 60}, "defense": {"name": "median"}, "eval": {"every": 10}}
    pfl = Simulation(load_config(None, base=base)).run()
    rnd = Simulation(load_config(None, ["attack.consistent=false"], base=base)).run()
    assert _acc_tail(pfl) < _acc_tail(rnd) - 0.05, (_acc_tail(pfl), _acc_tail(rnd))
    assert all(r.get("attack_c") == 8.0 for r in pfl.rounds if "attack_c" in r)  # unfiltered: c never decays


def _dpfl(defense: str, rounds: int = 20, sigma: float = 1.0):
    tree = {"seed": 0, "data": {"dataset": "digits"}, "model": {"name": "mlp", "hidden": [32]},
            "fl": {"num_clients": 100, "clients_per_round": 20, "sampling": "fixed-malicious", "rounds": rounds,
                   "local_epochs": 2, "batch_size": 8, "lr": 0.1},
            "attack": {"name": "attack-dpfl", "num_malicious": 20, "target": 0, "poison_frac": 0.5},
            "defense": {"name": defense, "dp": "local", "dp_clip": 1.0, "dp_sigma": sigma}, "eval": {"every": 5}}
    return Simulation(load_config(None, base=tree)).run()


@pytest.mark.usefixtures("one_thread")
def test_robust_dpfl_score_singles_out_attack_dpfl_uploads():
    res = _dpfl("robust-dpfl")
    mal = [c for c in res.clients if c["attacking"]]
    ben = [c for c in res.clients if not c["attacking"]]
    # Eq. 12: the amplified poison keeps a mean component, the DP noise averages out
    assert statistics.fmean(c["score"] for c in mal) > 3 * statistics.fmean(c["score"] for c in ben)
    dropped_mal = statistics.fmean(not c["accepted"] for c in mal)
    dropped_ben = statistics.fmean(not c["accepted"] for c in ben)
    assert dropped_mal > 0.5 and dropped_ben < 0.15, (dropped_mal, dropped_ben)


@pytest.mark.xfail(reason="does not reproduce at this scale: 1-D K-means lets ~20-40 % of the amplified "
                          "uploads through, and each one carries a noise-sized backdoor push (see "
                          "reproductions/dpfl/claims.md, D3)", strict=True, raises=AssertionError)
@pytest.mark.usefixtures("one_thread")
def test_robust_dpfl_cuts_attack_dpfl_asr_relative_to_median():
    # sigma = 0.1: the model learns (MTA ~90 %); at sigma = 1 it barely does and ASR means little
    robust, median = _dpfl("robust-dpfl", 30, 0.1), _dpfl("median", 30, 0.1)
    assert robust.metrics[-1]["backdoor_acc"] <= median.metrics[-1]["backdoor_acc"] - 0.3
