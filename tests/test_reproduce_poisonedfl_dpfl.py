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
    # the scale curve: the median runs play 2,400 rounds, also at 400 genuine + 80 fake clients (same cohort 20 + 4)
    assert pfl["fl"]["rounds"] == 2400 and full["mnist/trimmed-mean/pfl"]["fl"]["rounds"] == 400
    big = full["mnist/median-n400/pfl"]
    assert big["fl"]["num_clients"] == 480 and big["fl"]["clients_per_round"] == 24 and big["fl"]["rounds"] == 2400
    assert big["attack"]["num_malicious"] == 80 and full["mnist/median-n400/random"]["attack"]["consistent"] is False
    assert full["fashion-mnist/median/pfl"]["fl"]["rounds"] == 1000
    assert full["mnist/median/noise0.5"]["defense"]["name"] == "median"  # P5 under a proximity-type rule
    for tree in list(full.values()) + list(paper.runs(quick=True).values()):
        load_config(None, base=tree)
    ids = {c.id for c in paper.claims(quick=False)}
    assert {
        "U11",
        "U12",
        "P1.mnist.median",
        "P1.mnist-n400.median",
        "P1-curve.mnist",
        "P2.mnist",
        "P3.mnist",
        "P4.mnist",
        "P5",
        "P5-median",
        "P6",
        "P7",
        "P8.mnist",
    } <= ids
    kinds = {c.id: c.source for c in paper.claims(quick=False)}
    assert kinds["P1.mnist-n400.median"] == "paper" and kinds["P1-curve.mnist"] == "measurement"


def test_dpfl_grid_follows_the_spec():
    paper = PAPERS.get("dpfl")()
    full = paper.runs(quick=False)
    # the authors' code's regime: every client every round, 10 % attackers, C = 3, noise std 0.1887, 50 rounds,
    # triggered copies of all samples, K-means without a separation guard
    r = full["s0.0629/robust-dpfl"]
    assert r["fl"]["num_clients"] == r["fl"]["clients_per_round"] == 150 and r["fl"]["rounds"] == 50
    assert r["defense"]["dp"] == "local" and r["defense"]["dp_clip"] == 3.0 and r["defense"]["dp_sigma"] == 0.0629
    assert r["defense"]["dp_delta"] == 1e-8 and r["defense"]["separation"] == 1.0 and r["defense"]["scope"] == "update"
    assert r["attack"]["name"] == "attack-dpfl" and r["attack"]["target"] == 0 and r["attack"]["num_malicious"] == 15
    assert r["attack"]["copies"] is True and r["attack"]["trigger_size"] == 3
    w = full["s0.0629/robust-dpfl-w"]
    assert w["attack"]["scope"] == "weights" and w["defense"]["scope"] == "weights"
    assert full["s0.0629/robust-dpfl-centred"]["attack"]["centered"] is True
    assert full["s0.0629/krum"]["defense"]["name"] == "krum" and full["s0.0629/krum"]["defense"]["f"] == 15
    assert full["s0.0629/factor-share20"]["attack"]["num_malicious"] == 30
    assert full["s0.0629/factor-half"]["attack"]["copies"] is False and full["s0.0629/noattack"]["attack"] == {
        "name": "none"
    }
    assert "s0.0629/factor-half-w" in paper.runs(quick=True) and "s0.0629/factor-half-w" not in full  # CPU time
    for tree in list(full.values()) + list(paper.runs(quick=True).values()):
        load_config(None, base=tree)
    claims = {c.id: c.source for c in paper.claims(quick=False)}
    assert {
        "U13",
        "D1",
        "D2",
        "D2.weights",
        "D3.asr",
        "D3.asr.weights",
        "D3.mta",
        "D3.best",
        "D4",
        "D5",
        "D-factors",
    } <= set(claims)
    assert claims["D2"] == claims["D5"] == claims["D2.weights"] == "paper" and claims["D-factors"] == "measurement"


def _acc_tail(res, n=3):
    return statistics.fmean(m["main_acc"] for m in res.metrics[-n:])


@pytest.mark.usefixtures("one_thread")
def test_poisonedfl_hurts_median_more_than_a_random_sign_attack():
    """60 fake of 160 clients (12 of 32 per round): the fixed sign vector accumulates,
    a fresh one each round cancels (seed 0: ~65 % vs ~85 % after 80 rounds)."""
    base = {
        "seed": 0,
        "data": {"dataset": "digits"},
        "model": {"name": "mlp", "hidden": [32]},
        "fl": {
            "num_clients": 160,
            "clients_per_round": 32,
            "sampling": "fixed-malicious",
            "rounds": 80,
            "local_epochs": 1,
            "batch_size": 8,
            "lr": 0.05,
        },
        "attack": {"name": "poisonedfl", "num_malicious": 60},
        "defense": {"name": "median"},
        "eval": {"every": 10},
    }
    pfl = Simulation(load_config(None, base=base)).run()
    rnd = Simulation(load_config(None, ["attack.consistent=false"], base=base)).run()
    assert _acc_tail(pfl) < _acc_tail(rnd) - 0.05, (_acc_tail(pfl), _acc_tail(rnd))
    assert all(r.get("attack_c") == 8.0 for r in pfl.rounds if "attack_c" in r)  # unfiltered: c never decays


def _dpfl(defense: str, rounds: int = 20, sigma: float = 1.0):
    tree = {
        "seed": 0,
        "data": {"dataset": "digits"},
        "model": {"name": "mlp", "hidden": [32]},
        "fl": {
            "num_clients": 100,
            "clients_per_round": 20,
            "sampling": "fixed-malicious",
            "rounds": rounds,
            "local_epochs": 2,
            "batch_size": 8,
            "lr": 0.1,
        },
        "attack": {"name": "attack-dpfl", "num_malicious": 20, "target": 0, "poison_frac": 0.5},
        "defense": {"name": defense, "dp": "local", "dp_clip": 1.0, "dp_sigma": sigma},
        "eval": {"every": 5},
    }
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


@pytest.mark.xfail(
    reason="does not reproduce at this scale: 1-D K-means lets ~20-40 % of the amplified "
    "uploads through, and each one carries a noise-sized backdoor push (see "
    "reproductions/dpfl/claims.md, D3)",
    strict=True,
    raises=AssertionError,
)
@pytest.mark.usefixtures("one_thread")
def test_robust_dpfl_cuts_attack_dpfl_asr_relative_to_median():
    # sigma = 0.1: the model learns (MTA ~90 %); at sigma = 1 it barely does and ASR means little
    robust, median = _dpfl("robust-dpfl", 30, 0.1), _dpfl("median", 30, 0.1)
    assert robust.metrics[-1]["backdoor_acc"] <= median.metrics[-1]["backdoor_acc"] - 0.3


def test_dpfl_d2_rule_is_the_reports_statement():
    from fedarena.reproduce.dpfl import _identified

    # "identified as malicious and filtered out": attackers score higher and the dropped cluster is mostly them
    assert _identified({"auc": 0.9, "precision": 0.8, "recall": 0.7})
    assert not _identified({"auc": 0.83, "precision": 0.27, "recall": 0.78})  # drops more honest rows than attackers
    assert not _identified({"auc": 0.1, "precision": 0.0, "recall": 0.0})  # inverted score (weights scope)
    assert not _identified({"auc": None, "precision": None, "recall": None})


def test_poisonedfl_scale_curve_reads_the_gap_before_each_round():
    from fedarena.reproduce import poisonedfl as mod
    from fedarena.reproduce.framework import Results
    from fedarena.run.simulation import RunResult

    def run(accs):  # evaluations every 5 rounds, accuracy per evaluation
        return RunResult(None, [{"round": 5 * i, "main_acc": a} for i, a in enumerate(accs)], [], [], {})

    s = {"datasets": ["x"], "sizes": [100], "long_rounds": {"x": 40}, "rounds": {"x": 40}, "curve": {"x": [20, 40]}}
    # PFL 0.9 until round 20, then 0.8; random sign 0.9 throughout: gap 0 at round 20 (rounds 5..20), at 40 the
    # mean of rounds 25..40 = 0.8 vs 0.9 -> -10 points
    r = Results(runs={"x/median/pfl": run([0.9] * 5 + [0.8] * 4), "x/median/random": run([0.9] * 9)})
    assert mod.scale_curve(r, s, "x") == {"n100": [(20, 0.0), (40, -10.0)]}
