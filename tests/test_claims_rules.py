"""Every reproduction's claim rules on HAND-MADE results: for each paper, results that agree
with the paper make its headline rows pass, and results that contradict them (often the
numbers our own runs measured) make the same rows fail. Nothing is stubbed: each test builds
the run records (metrics, per-round and per-client rows, summaries) and the extras tables
that the paper's ``claims()`` reads, and judges them with the framework's
``evaluate_claims``, as ``fedarena reproduce`` does.

The results start from one record per run of the paper's grid (``paper.runs(quick)``),
with neutral values; each section sets the values its claims read.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from fedarena.config import load_config
from fedarena.registry import PAPERS
from fedarena.reproduce.framework import Results, evaluate_claims
from fedarena.run.simulation import RunResult

REPRODUCTIONS = ("fall-of-cc", "rlr", "invariant", "leadfl", "autoadapt", "poisonedfl", "dpfl")


# ---------------------------------------------------------------------------- helpers
def _default_run(tree: dict) -> RunResult:
    """A finished run of this config: an evaluation every ``eval.every`` rounds and at the
    last round, a per-round row for every round, no client rows, neutral values."""
    cfg = load_config(None, base=tree)
    R, every = cfg.fl.rounds, cfg.eval.every
    evals = sorted({t for t in range(every - 1, R, every)} | {R - 1})
    metrics = [{"round": t, "main_acc": 0.8, "backdoor_acc": 0.1, "base_acc": 0.9} for t in evals]
    rounds = [{"round": t, "num_attacking": 0} for t in range(R)]
    summary = {"status": "ok", "final_main_acc": 0.8, "final_backdoor_acc": 0.1}
    return RunResult(cfg, metrics, [], rounds, summary)


def base_results(name: str, quick: Any) -> Results:
    runs = {rid: _default_run(tree) for rid, tree in PAPERS.get(name)().runs(quick).items()}
    return Results(runs=runs, status={rid: {"status": "ok", "error": None} for rid in runs})


def put(r: Results, rid: str, **values: Any) -> None:
    """Set metric values (fractions) in every evaluation of a run; a callable gets the round.
    The summary's ``final_<key>`` follows."""
    run = r.runs[rid]
    for m in run.metrics:
        for k, v in values.items():
            m[k] = v(m["round"]) if callable(v) else v
    run.summary.update({f"final_{k}": run.metrics[-1][k] for k in values})


def put_rounds(r: Results, rid: str, **values: Any) -> None:
    """Set per-round diagnostics in every round of a run; a callable gets the round."""
    for row in r.runs[rid].rounds:
        for k, v in values.items():
            row[k] = v(row["round"]) if callable(v) else v


def judge(name: str, quick: Any, r: Results) -> dict:
    """Claim id -> ClaimResult, as ``fedarena reproduce`` computes them."""
    return {c.id: c for c in evaluate_claims(PAPERS.get(name)().claims(quick), r)}


def assert_verdicts(out: dict, expected: dict[str, str]) -> None:
    got = {cid: out[cid].verdict for cid in expected}
    assert got == expected, {
        cid: (out[cid].verdict, out[cid].ours, out[cid].reason) for cid in expected if got[cid] != expected[cid]
    }


# ============================================================================ fall-of-cc
FOC_CELLS = [(a, b) for a in ("cc0.1", "cc1") for b in ("b0.9", "b0.99")]  # CC with client momentum


#: Table III: (CC key, β run key) -> (ROP, benign) mean cosine to CC's reference
FOC_TABLE_III = {
    ("cc0.1", "b0"): (0.94, 0.0),
    ("cc0.1", "b0.9"): (0.77, 0.2),
    ("cc0.1", "b0.99"): (0.75, 0.3),
    ("cc1", "b0"): (0.48, -0.03),
    ("cc1", "b0.9"): (0.44, 0.07),
    ("cc1", "b0.99"): (0.27, 0.04),
}


def foc_results(rop: dict | None = None, alie_cos=(0.94, 0.995, 0.999), rop_cos: Any = None) -> Results:
    """digits (the smoke scale). Final accuracy (%): no attack 90, ROP 80 unless ``rop`` gives
    its cell, every other attack 84. ALIE's perturbation cosine per β (0, 0.9, 0.99) on CC τ=1;
    ROP's and the benign clients' cosine to CC's reference: Table III's per cell, or ``rop_cos``
    ((ROP, benign) for every cell, or a dict (agg, β key) -> (ROP, benign) of changed cells)."""
    r = base_results("fall-of-cc", "smoke")
    betas = {"b0": 0, "b0.9": 1, "b0.99": 2}
    cos = dict(FOC_TABLE_III)
    if isinstance(rop_cos, tuple):
        cos = {cell: rop_cos for cell in cos}
    elif rop_cos:
        cos.update(rop_cos)
    for rid in r.runs:
        _, agg, b, att = rid.split("/")
        acc = 90.0 if att == "none" else (rop or {}).get((agg, b), 80.0) if att == "rop" else 84.0
        put(r, rid, main_acc=acc / 100)
        if att == "alie":
            put_rounds(r, rid, attack_pert_cos_prev=alie_cos[betas[b]])
        if att == "rop" and (agg, b) in cos:
            put_rounds(r, rid, attack_cos_ref_byz=cos[(agg, b)][0], attack_cos_ref_benign=cos[(agg, b)][1])
    return r


def test_fall_of_cc_rules_pass_when_rop_is_lowest_on_cc_with_momentum():
    out = judge("fall-of-cc", "smoke", foc_results())
    assert out["T4-digits"].ours == "4/4" and out["T4-drop-digits"].ours == 10.0
    assert_verdicts(
        out,
        {
            "T4-digits": "pass",
            "T4-all": "pass",
            "T4-speed-digits": "pass",
            "T4-drop-digits": "pass",
            "T2-digits": "pass",
            "T3-digits-tau0.1": "pass",
            "T3-digits-tau1": "pass",
        },
    )


def test_fall_of_cc_rules_fail_when_rop_is_not_lowest():
    # ROP 88 % (above the other attacks' 84) in 3 of the 4 momentum cells: lowest in 1 of 4 only, and the
    # drop vs no attack on CC τ=1, β=0.99 is 2 points (the rule: >= 3.5, half the paper's 7)
    out = judge("fall-of-cc", "smoke", foc_results(rop={c: 88.0 for c in FOC_CELLS[1:]}, rop_cos=(0.1, 0.1)))
    assert out["T4-digits"].ours == "1/4" and out["T4-drop-digits"].ours == 2.0
    assert_verdicts(
        out,
        {
            "T4-digits": "fail",
            "T4-all": "fail",
            "T4-speed-digits": "fail",
            "T4-drop-digits": "fail",
            "T3-digits-tau0.1": "fail",
            "T3-digits-tau1": "fail",
        },
    )  # ROP's cosine equals the benign one


def test_fall_of_cc_drop_reads_cc1_beta099_only():
    # only CC τ=1, β=0.99 has ROP above the others: T4 still 3 of 4 (pass), the drop there is 2 points (fail)
    out = judge("fall-of-cc", "smoke", foc_results(rop={("cc1", "b0.99"): 88.0}))
    assert_verdicts(out, {"T4-digits": "pass", "T4-drop-digits": "fail"})


def test_fall_of_cc_table_iii_needs_half_the_papers_gap_in_every_cell():
    # Table III's own cosines pass (gaps τ 0.1: 0.94 / 0.57 / 0.45; τ 1: 0.51 / 0.37 / 0.23)
    out = judge("fall-of-cc", "smoke", foc_results())
    assert out["T3-digits-tau0.1"].ours == "0.94 vs 0 / 0.77 vs 0.2 / 0.75 vs 0.3"
    assert_verdicts(out, {"T3-digits-tau0.1": "pass", "T3-digits-tau1": "pass"})
    # exactly half the paper's gap in every cell still passes (the rule is >=)
    half = {
        ("cc0.1", "b0"): (0.47, 0.0),
        ("cc0.1", "b0.9"): (0.485, 0.2),
        ("cc0.1", "b0.99"): (0.525, 0.3),
        ("cc1", "b0"): (0.255, 0.0),
        ("cc1", "b0.9"): (0.255, 0.07),
        ("cc1", "b0.99"): (0.155, 0.04),
    }
    assert_verdicts(
        judge("fall-of-cc", "smoke", foc_results(rop_cos=half)), {"T3-digits-tau0.1": "pass", "T3-digits-tau1": "pass"}
    )
    # ROP above the benign mean in every cell, but by 0.01 in one cell (β 0.99): below half the paper's gap
    # (0.225 for τ 0.1, 0.115 for τ 1), so both rows fail; the old rule "ROP > benign" passed them
    tiny = {("cc0.1", "b0.99"): (0.31, 0.3), ("cc1", "b0.99"): (0.05, 0.04)}
    out = judge("fall-of-cc", "smoke", foc_results(rop_cos=tiny))
    assert out["T3-digits-tau1"].ours == "0.48 vs -0.03 / 0.44 vs 0.07 / 0.05 vs 0.04"
    assert_verdicts(out, {"T3-digits-tau0.1": "fail", "T3-digits-tau1": "fail"})
    # the committed MNIST non-IID τ=0.1 cosines: gaps 0.49 / 0.317 / 0.129, the last below 0.225
    committed = {
        ("cc0.1", "b0"): (0.5349, 0.04456),
        ("cc0.1", "b0.9"): (0.6698, 0.3525),
        ("cc0.1", "b0.99"): (0.5358, 0.4069),
    }
    assert judge("fall-of-cc", "smoke", foc_results(rop_cos=committed))["T3-digits-tau0.1"].verdict == "fail"


@pytest.mark.parametrize("cos", [(0.6, 0.7, 0.8), (0.96, 0.95, 0.99)])
def test_fall_of_cc_table_ii_needs_growth_and_closeness(cos):
    # growing but far from Table II's 0.94 / 0.995 / 0.999; or within 0.05 of it but not growing
    assert judge("fall-of-cc", "smoke", foc_results(alie_cos=cos))["T2-digits"].verdict == "fail"


# ============================================================================ rlr
#: run -> (backdoor, validation, base-class accuracy), fractions: Table 1, 6, 7, 2 and Fig. 6 of the paper
RLR_PASS = {
    "t1/noattack": (0.01, 0.935, 0.985),
    "t1/fedavg": (1.0, 0.934, 0.985),
    "t1/fedavg-clipnoise": (1.0, 0.932, 0.991),
    "t1/foolsgold": (1.0, 0.931, 0.989),
    "t1/median": (1.0, 0.928, 0.99),
    "t1/sign": (1.0, 0.929, 0.987),
    "t1/rlr": (0.0, 0.929, 0.983),
    "t1/rlr-clipnoise": (0.005, 0.922, 0.974),
    "t7/negated-rlr": (0.007, 0.908, 0.984),
    "t2/regular/fedavg": (0.886, 0.794, 0.875),
    "t2/regular/rlr": (0.09, 0.775, 0.878),
    "t2/dba/fedavg": (0.617, 0.766, 0.782),
    "t2/dba/rlr": (0.085, 0.718, 0.833),
    "t6/20/fedavg": (0.996, 0.929, 0.981),
    "t6/20/rlr": (0.0, 0.896, 0.966),
    "t6/40/fedavg": (0.998, 0.927, 0.977),
    "t6/40/rlr": (0.0, 0.825, 0.942),
}


def rlr_results(quick: Any = "smoke", change: dict | None = None, attacker_norm: float = 10.0) -> Results:
    r = base_results("rlr", quick)
    for rid, (bd, val, base) in {**RLR_PASS, **(change or {})}.items():
        if rid in r.runs:
            put(r, rid, backdoor_acc=bd, main_acc=val, base_acc=base)
    # Fig. 6: FedAvg implants the backdoor, RLR (from round 40) removes it
    put(r, "f6/late-rlr", backdoor_acc=lambda t: 1.0 if t < 40 else 0.0, main_acc=0.928, base_acc=0.985)
    # Table 7: the negated-loss attacker's update norm (honest clients: 1.0)
    r.runs["t7/negated-rlr"].clients = [
        {"round": t, "client": i, "attacking": i == 0, "norm": attacker_norm if i == 0 else 1.0}
        for t in range(3)
        for i in range(10)
    ]
    return r


RLR_HEADLINE = ("T1.fedavg", "T1.rlr", "T1.rlr-val", "T1.rlr-base", "T1.noattack", "T1.attack-cost")


def test_rlr_rules_pass_on_the_papers_numbers():
    out = judge("rlr", "smoke", rlr_results())
    assert out["T1.rlr-val"].ours == -0.5 and out["T7.norm"].ours == 10.0
    assert_verdicts(
        out,
        {
            cid: "pass"
            for cid in RLR_HEADLINE
            + ("T7.negated", "T7.norm", "T7.val", "F6.before", "F6.reaches", "F6.final", "T2.dba-weaker", "T2.rlr")
        },
    )


def test_rlr_rules_fail_when_rlr_does_not_defend():
    change = {
        "t1/noattack": (0.2, 0.935, 0.985),  # the trigger alone flips the source class
        "t1/fedavg": (0.3, 0.90, 0.985),  # weak backdoor, and it costs 3.5 points
        "t1/rlr": (0.2, 0.85, 0.90),
    }  # RLR keeps it and costs 5 / 8.5 points vs FedAvg
    out = judge("rlr", "smoke", rlr_results(change=change, attacker_norm=2.0))
    assert out["T1.attack-cost"].ours == -3.5 and out["T1.rlr-val"].ours == -5.0
    assert_verdicts(out, {**{cid: "fail" for cid in RLR_HEADLINE}, "T7.norm": "fail"})


def test_rlr_table6_is_judged_in_the_full_version():
    out = judge("rlr", False, rlr_results(False))
    assert_verdicts(out, {"T6.fedavg": "pass", "T6.rlr": "pass", "T6.rlr-val": "pass"})
    # RLR's accuracy grows with corruption (the paper's falls) and RLR leaves 40 % corruption's backdoor in
    out = judge("rlr", False, rlr_results(False, change={"t6/40/rlr": (0.6, 0.91, 0.97)}))
    assert_verdicts(out, {"T6.fedavg": "pass", "T6.rlr": "fail", "T6.rlr-val": "fail"})


def test_rlr_t6_val_needs_half_the_papers_drop():
    # the paper's 82.5 - 89.6 = -7.1 passes; the rule is <= -3.55 (half the paper's drop)
    out = judge("rlr", False, rlr_results(False))
    assert out["T6.rlr-val"].ours == -7.1 and out["T6.rlr-val"].verdict == "pass"
    # 86.0 - 89.6 = -3.6: just past half the drop, passes
    out = judge("rlr", False, rlr_results(False, change={"t6/40/rlr": (0.0, 0.86, 0.942)}))
    assert out["T6.rlr-val"].ours == -3.6 and out["T6.rlr-val"].verdict == "pass"
    # 89.5 - 89.6 = -0.1: accuracy falls, but by a tenth of a point (the old rule "< 0" passed it)
    out = judge("rlr", False, rlr_results(False, change={"t6/40/rlr": (0.0, 0.895, 0.942)}))
    assert out["T6.rlr-val"].ours == -0.1 and out["T6.rlr-val"].verdict == "fail"


def test_rlr_t2_dba_weaker_needs_half_the_papers_gap():
    # the paper's 88.6 - 61.7 = 26.9 points passes; the rule is >= 13.45 (half the paper's gap)
    out = judge("rlr", "smoke", rlr_results())
    assert out["T2.dba-weaker"].ours == 26.9 and out["T2.dba-weaker"].verdict == "pass"
    # 88.6 - 75.0 = 13.6 passes
    out = judge("rlr", "smoke", rlr_results(change={"t2/dba/fedavg": (0.75, 0.766, 0.782)}))
    assert out["T2.dba-weaker"].ours == 13.6 and out["T2.dba-weaker"].verdict == "pass"
    # DBA 88.5 vs regular 88.6: weaker by 0.1 point (the old rule "DBA < regular" passed it)
    out = judge("rlr", "smoke", rlr_results(change={"t2/dba/fedavg": (0.885, 0.766, 0.782)}))
    assert out["T2.dba-weaker"].ours == 0.1 and out["T2.dba-weaker"].verdict == "fail"
    # in the full version the regular runs are Table 6's 20 % runs: 99.6 - 61.7 = 37.9
    out = judge("rlr", False, rlr_results(False))
    assert out["T2.dba-weaker"].ours == 37.9 and out["T2.dba-weaker"].verdict == "pass"


# ============================================================================ invariant
#: run prefix -> (Acc, ASR) equal to the paper's (Table 1 CIFAR-10 column, Tables 4-10)
INV_PASS = {
    "t1-fedavg": (0.679, 0.717),
    "t1-krum": (0.140, 0.275),
    "t1-multi-krum": (0.541, 0.923),
    "t1-multi-krum-cos": (0.681, 0.821),
    "t1-trimmed-mean": (0.687, 0.512),
    "t1-multi-krum-tm": (0.682, 0.607),
    "t1-sign": (0.301, 0.0),
    "t1-weak-dp": (0.454, 0.828),
    "t1-rlr": (0.659, 0.450),
    "t1-rfa": (0.685, 0.853),
    "t1-sparsefed": (0.662, 0.984),
    "t1-fltrust": (0.671, 0.574),
    "t1-no-attack": (0.718, 0.0),
    "t1-ours": (0.677, 0.001),
    "t4-and-mask": (0.6, 0.655),
    "t4-mean-var": (0.554, 0.0),
    "t5-no-attack": (0.685, 0.0),
    "t5-dba-ours": (0.68, 0.001),
    "t5-dba-fedavg": (0.68, 0.8),
    "t5-collude-ours": (0.67, 0.021),
    "t5-adaptive-ours": (0.67, 0.013),
    "t5-collude-adaptive-ours": (0.67, 0.049),
    "t5-collude-fltrust": (0.67, 0.58),
    "t5-collude-rfa": (0.67, 0.878),
    "t5-adaptive-fltrust": (0.67, 0.543),
    "t5-adaptive-rfa": (0.67, 0.837),
    "t8-ratio": (0.677, 0.001),
    "t9-size": (0.677, 0.003),
    "t10-alpha100-ours": (0.857, 0.001),
    "t10-alpha1-ours": (0.696, 0.001),
    "t10-alpha0.2-ours": (0.632, 0.001),
    "t10-alpha100-fedavg": (0.86, 0.7),
    "t10-alpha1-fedavg": (0.7, 0.7),
    "t10-alpha0.2-fedavg": (0.64, 0.7),
}


def inv_results(change: dict | None = None) -> Results:
    r = base_results("invariant", "smoke")
    table = {**INV_PASS, **(change or {})}
    for rid in r.runs:
        run = re.sub(r"-s[12]$", "", rid)  # the extra seeds of Table 1 runs
        key = run if run in table else next((k for k in ("t8-ratio", "t9-size") if run.startswith(k)), None)
        if key is not None:
            put(r, rid, main_acc=table[key][0], backdoor_acc=table[key][1])
    r.extras = {"theorem10_ok": True, "prop5_threshold_pi": 0.391827}
    return r


def test_invariant_rules_pass_on_the_papers_numbers():
    out = judge("invariant", "smoke", inv_results())
    assert out["T1-ours"].ours == (0.677, 0.001, 0.679, 0.717)
    assert_verdicts(
        out,
        {
            "T1-fedavg": "pass",
            "T1-no-attack": "pass",
            "T1-ours": "pass",
            "T1-krum": "pass",
            "T1-trimmed-mean": "pass",
            "T1-sign": "pass",
            "E1": "pass",
            "E2": "pass",
            "E3": "pass",
            "E4": "pass",
            "T5-dba": "pass",
            "E13": "pass",
            "T10": "pass",
            "E8-acc": "pass",
            "E12": "pass",
        },
    )


def test_invariant_rules_fail_when_ours_does_not_cut_the_backdoor():
    # our measured Table 1 row: Ours keeps FedAvg's backdoor (0.912); Krum without its accuracy cost
    # (the paper's row costs 0.54) and the trimmed mean cutting the ASR (the paper's does not)
    change = {
        "t1-ours": (0.78, 0.912),
        "t1-fedavg": (0.79, 0.93),
        "t1-krum": (0.78, 0.2),
        "t1-trimmed-mean": (0.78, 0.3),
        "t1-no-attack": (0.8, 0.2),
    }
    out = judge("invariant", "smoke", inv_results(change))
    assert_verdicts(
        out,
        {
            "T1-ours": "fail",
            "E2": "fail",
            "T1-krum": "fail",
            "T1-trimmed-mean": "fail",
            "T1-no-attack": "fail",
            "E4": "fail",
            "E12": "fail",
        },
    )
    assert out["T1-fedavg"].verdict == "pass"  # the attack still works against FedAvg


def test_invariant_table1_rows_use_the_mean_of_three_seeds():
    r = inv_results()
    put(r, "t1-ours-s1", backdoor_acc=0.9)  # seed 0 cuts the backdoor, seeds 1 and 2 keep it:
    put(r, "t1-ours-s2", backdoor_acc=0.9)  # mean ASR 0.6 > 0.5 x 0.717
    out = judge("invariant", "smoke", r)
    assert out["T1-ours"].ours[1] == pytest.approx(0.6, abs=1e-3) and out["T1-ours"].verdict == "fail"


# ============================================================================ leadfl
LEADFL_RANDOM_PASS = {  # client -> (final MTA, BA avg, BA final): the report's Table I
    "none": (0.893, 0.826, 0.932),
    "ldp": (0.870, 0.760, 0.796),
    "fl-wbc": (0.872, 0.775, 0.806),
    "leadfl": (0.879, 0.329, 0.0),
    "leadfl-nodouble": (0.88, 0.8, 0.9),
}
#: the earlier full run (the MLP, data poisoning, no forced rounds; means of 2 seeds) in Table I's selection
LEADFL_RANDOM_MEASURED = {
    "none": (0.83, 0.0886, 0.1299),
    "ldp": (0.797, 0.8936, 0.9633),
    "fl-wbc": (0.798, 0.8934, 0.9637),
    "leadfl": (0.828, 0.5608, 0.9175),
    "leadfl-nodouble": (0.83, 0.056, 0.1),
}


def leadfl_results(
    quick: Any = False, random: dict | None = None, r13: tuple = (0.85, 0.6), seeds: dict | None = None
) -> Results:
    """The grid (full: 2 seeds of the core runs). Periodic spikes: LeadFL lowers BA and recovers
    faster; every other schedule (random selection, its deviations): ``random`` (client ->
    final MTA, BA avg, BA final), by default the report's Table I; ``seeds``: run -> summary
    values of single seeds; ``r13``: r_13 of (None, LeadFL) after a single spike."""
    from fedarena.reproduce.leadfl_units import UNITS

    r = base_results("leadfl", quick)
    periodic = {"none": (0.83, 0.70), "ldp": (0.80, 0.65), "fl-wbc": (0.80, 0.65), "leadfl": (0.83, 0.55)}
    for rid, run in r.runs.items():
        sch, _, client, _ = rid.split("/")
        if sch == "periodic":
            mta, avg = periodic.get(client, (0.82, 0.6))
            run.summary.update(
                final_main_acc=mta,
                ba_mean=avg,
                ba_final=avg,
                ba_mean_spike=0.98,
                ba_mean_benign=avg - 0.1,
                recovery_rounds_mean=5.0 if client.startswith("leadfl") else 7.0,
            )
            put(r, rid, main_acc=mta)
        else:
            mta, avg, fin = (random or LEADFL_RANDOM_PASS).get(client, (0.85, 0.5, 0.5))
            run.summary.update(
                final_main_acc=mta,
                ba_mean=avg,
                ba_final=fin,
                ba_mean_spike=0.98,
                ba_mean_benign=avg,
                recovery_rounds_mean=7.0,
            )
            put(r, rid, main_acc=mta)
    for rid, vals in (seeds or {}).items():
        r.runs[rid].summary.update(vals)
    decay = [round(1 - (1 - x) * k / 13, 3) for x in r13 for k in range(1, 14)]
    r.extras = {
        "units": {uid: ("exact", True) for uid in UNITS},
        "effect": {
            "mk/none": decay[:13],
            "mk/leadfl": decay[13:],
            "fedavg/none": decay[:13],
            "fedavg/leadfl": decay[13:],
        },
    }
    return r


LEADFL_TABLE1 = ("L3", "L5", "L8", "L9", "L11", "L15", "T1.none", "T1.ldp", "T1.fl-wbc", "T1.leadfl")


def test_leadfl_rules_pass_on_the_reports_table_i():
    out = judge("leadfl", False, leadfl_results())
    assert out["L3"].ours == (82.6, 32.9, 0.0)
    assert_verdicts(out, {**{cid: "pass" for cid in LEADFL_TABLE1}, "L3-periodic": "pass", "L4": "pass"})


def test_leadfl_rules_fail_on_our_table_i_numbers():
    out = judge("leadfl", False, leadfl_results(random=LEADFL_RANDOM_MEASURED))
    # the committed verdicts: the MTA rows and L8 (LeadFL 56.1 < LDP 89.4 - 3) hold, the BA rows contradict the report
    holds = ("L5", "L8", "L9")
    assert_verdicts(out, {cid: "pass" if cid in holds else "fail" for cid in LEADFL_TABLE1})
    assert out["L3-periodic"].verdict == "pass"  # the periodic schedule is its own row


#: the full run at the reference setting (the CNN, the MGDA attacker, forced rounds {0, 10, 12}, 3 local
#: steps; means of 2 seeds): the None baseline matches Table I, every client defense raises BA
LEADFL_REFERENCE_MEASURED = {
    "none": (0.840, 0.805, 0.944),
    "ldp": (0.847, 0.866, 0.956),
    "fl-wbc": (0.841, 0.860, 0.953),
    "leadfl": (0.844, 0.852, 0.950),
}


def test_leadfl_rules_at_the_reference_setting():
    out = judge("leadfl", False, leadfl_results(random=LEADFL_REFERENCE_MEASURED))
    # only the main-task rows hold: LeadFL's MTA is within 3 points of None's (L5) and >= LDP's - 1 (L9);
    # T1.none fails on its MTA alone (84.0 vs 89.3; BA 80.5 / 94.4 are within 15 of 82.6 / 93.2)
    holds = ("L5", "L9")
    assert_verdicts(out, {cid: "pass" if cid in holds else "fail" for cid in LEADFL_TABLE1})
    assert out["T1.none"].ours == (84.0, 80.5, 94.4)


def test_leadfl_l13_compares_leadfl_with_none():
    out = judge("leadfl", True, leadfl_results(True, r13=(0.85, 0.6)))
    assert out["L13"].ours == (0.85, 0.6)
    assert_verdicts(out, {"L13": "pass", "L13-persist": "pass"})
    # our measured ratios: 0.849 and 0.850, the same decay: L13 fails although the effect persists (L13-persist)
    out = judge("leadfl", True, leadfl_results(True, r13=(0.849, 0.850)))
    assert_verdicts(out, {"L13": "fail", "L13-persist": "pass"})
    # a faster decay with LeadFL passes L13 even when None's effect does not persist
    out = judge("leadfl", True, leadfl_results(True, r13=(0.4, 0.2)))
    assert_verdicts(out, {"L13": "pass", "L13-persist": "fail"})


def test_leadfl_l3_needs_an_effect_above_twice_the_seed_spread():
    # means 70 -> 60 (10 points) but seeds 80 / 60 and 62 / 58: spread 20, the rule asks for 40
    seeds = {
        "random/mk/none/s0": {"ba_mean": 0.8},
        "random/mk/none/s1": {"ba_mean": 0.6},
        "random/mk/leadfl/s0": {"ba_mean": 0.62},
        "random/mk/leadfl/s1": {"ba_mean": 0.58},
    }
    out = judge("leadfl", False, leadfl_results(seeds=seeds))
    assert out["L3"].ours == (70.0, 60.0, 20.0) and out["L3"].verdict == "fail"


# ============================================================================ autoadapt
AA_R = 4  # the attacked round of the default scenario (after R benign rounds); Sect. V-C runs attack from round 0


def aa_rows(mal: dict | list, ben: dict | None = None, n_mal: int = 9, n_ben: int = 11, rnd: int = AA_R) -> list[dict]:
    """One attacked round's client rows: ``mal`` the malicious rows' fields (a dict for all, or
    one dict per client), ``ben`` the benign rows'."""
    mal = mal if isinstance(mal, list) else [dict(mal) for _ in range(n_mal)]
    rows = [{"round": rnd, "client": i, "malicious": True, **m} for i, m in enumerate(mal)]
    return rows + [{"round": rnd, "client": n_mal + i, "malicious": False, **(ben or {})} for i in range(n_ben)]


def aa_run(mal: dict | list, ben: dict | None = None, ba: float = 0.95, rnd: int = AA_R) -> RunResult:
    cfg = SimpleNamespace(attack=SimpleNamespace(start_round=rnd))
    return RunResult(
        cfg,
        [{"round": rnd, "main_acc": 0.9, "backdoor_acc": ba}],
        aa_rows(mal, ben, rnd=rnd),
        [],
        {"status": "ok", "final_backdoor_acc": ba, "final_main_acc": 0.9},
    )


def feasible(batches: range, **extra) -> list[dict]:
    return [
        {
            "violations": 0,
            "batches_to_feasible": b,
            "violations_at_activation": 1,
            "num_constraints": 2,
            "penalty_sum": 0.0,
            **extra,
        }
        for b in batches
    ]


def aa_main(r: Results) -> str:
    """The Sect. V-C main scenario: the one with Eq. 2 and defense runs."""
    return next(rid.split("/")[1] for rid in r.runs if rid.startswith("vc/") and "/eq2/" in rid)


def aa_results(change: dict | None = None) -> Results:
    """The full grid (quick=False). Paper-like: every AutoAdapt run feasible within one epoch,
    Eq. 2 fails layer-wise and works for the whole model, the adapted backdoor reaches 95 %,
    the defenses stop the unadapted attack and keep the adapted one. ``change``: run ->
    RunResult, ``{main}`` in a run id standing for the Sect. V-C main scenario."""
    r = base_results("autoadapt", False)
    main = aa_main(r)
    runs = {
        "unadapted": aa_run({"violations": 2, "violations_at_activation": 2, "num_constraints": 2}, ba=0.9),
        "unadapted/cos+l2-layers": aa_run({"violations": 5, "num_constraints": 8}),
        "feas/cos-whole": aa_run(
            feasible(range(1, 10), offtarget_outside=1, offtarget_total=7, train_backdoor_acc=1.0)
        ),
        "feas/l2-whole": aa_run(feasible(range(1, 10))),
        "feas/cos+l2-whole": aa_run(feasible(range(5, 14))),
        "feas/cos-last": aa_run(feasible(range(1, 5))),
        "feas/cos-layers": aa_run(feasible(range(1, 6))),
        "feas/cos+l2-layers": aa_run(feasible(range(20, 29), penalty_sum=1e-5)),
        "eq2/whole/0.1": aa_run({"violations": 1, "offtarget_outside": 5}),
        "eq2/whole/0.5": aa_run(feasible(range(1, 10), offtarget_outside=5)),
        "eq2/whole/0.9": aa_run({"violations": 1, "offtarget_outside": 5}),
        # FoolsGold weighs: unadapted poisoned ~0, adapted poisoned weighted like the benign
        "def/foolsgold/unadapted": aa_run({"weight": 0.0}, {"weight": 1.0}, ba=0.0),
        "def/foolsgold/adapted": aa_run({"weight": 0.9}, {"weight": 1.0}, ba=0.95),
    }
    for rid in r.runs:
        parts = rid.split("/")
        if parts[0] == "def" and parts[1] != "foolsgold":  # accept masks: unadapted poisoned removed, adapted kept
            runs[rid] = aa_run(
                {"accepted": parts[2] == "adapted"},
                {"accepted": parts[2] != "adapted"},
                ba=0.95 if parts[2] == "adapted" else 0.0,
            )
        if parts[0] != "vc":
            continue
        tail = "/".join(parts[2:])
        if tail == "adapted":  # all layers, Cos + Euclidean (20 constraints), feasible within one epoch, every round
            runs[rid] = aa_run(feasible(range(1, 10), num_constraints=20, train_backdoor_acc=1.0), ba=0.95, rnd=0)
        elif tail == "unadapted":
            runs[rid] = aa_run({"violations": 3, "violations_at_activation": 3, "num_constraints": 20}, ba=0.3, rnd=0)
        elif tail.startswith("eq2/"):
            runs[rid] = aa_run({"violations": 1, "num_constraints": 20}, rnd=0)
        else:  # Sect. V-F defenses
            ad = tail.endswith("/adapted")
            runs[rid] = aa_run({"accepted": ad}, {"accepted": not ad}, ba=0.95 if ad else 0.0, rnd=0)
    change = {rid.format(main=main): run for rid, run in (change or {}).items()}
    assert set(change) <= set(r.runs), set(change) - set(r.runs)
    r.runs.update({rid: run for rid, run in {**runs, **change}.items() if rid in r.runs})
    eq2 = {a: 1 + 2 * a for a in (0.1, 0.3, 0.5, 0.7, 0.9)}
    r.extras = {
        "toys": {
            "slack": 1e-12,
            "slack_grid": 1e-9,
            "grad": 1e-15,
            "eq24": {"penalty_minus_f": 0.0, "alpha_capped": 10.0, "alpha_zero_denominator": 10.0},
            "reset": {"reset_at_feasible": True, "penalty_zero": True, "reactivates": True},
            "plain_al": {0.01: 0.0},
            "box7": {0.01: {"memory_x": 0.999, "min": 0.99, "max": 1.1, "memory_violations": 0, "memory_gap": 0.001}},
            "eq2": eq2,
            "multiscale_aa": {"violations": 0, "h_small": 0.0},
            "multiscale_aa_box6": {"violations": 1},
            "multiscale_eq2": {a: {"violations": 1, "h_small": 0.02} for a in (0.1, 0.5, 0.9)},
            "memory": [0, 1, 2, 3, 4, 6],
        },
        "runtime": {"speedup_aa1": 15.67, "ordering": True},
    }
    return r


AA_HEADLINE = ("C7", "C9", "C11", "C12", "C13", "C13b", "C15", "C21", "C22", "C23", "C23b", "C24")


def test_autoadapt_rules_pass_on_the_papers_results():
    out = judge("autoadapt", False, aa_results())
    assert out["C24"].ours["un"]["poisoned_weight"] == 0.0 and out["C24"].ours["ad"][
        "poisoned_weight"
    ] == pytest.approx(0.9)
    assert_verdicts(out, {cid: "pass" for cid in AA_HEADLINE + ("C8", "C9b", "C10", "C14", "C21b", "P0")})


def test_autoadapt_c24_fails_without_its_precondition():
    # our run: FoolsGold weighs every client 1.0, adapted or not: nothing to bypass
    out = judge(
        "autoadapt",
        False,
        aa_results(
            {
                "def/foolsgold/unadapted": aa_run({"weight": 1.0}, {"weight": 1.0}),
                "def/foolsgold/adapted": aa_run({"weight": 1.0}, {"weight": 1.0}),
            }
        ),
    )
    assert out["C24"].verdict == "fail"
    # the precondition holds but the adapted updates are weighed ~0 too: not bypassed
    out = judge("autoadapt", False, aa_results({"def/foolsgold/adapted": aa_run({"weight": 0.05}, {"weight": 1.0})}))
    assert out["C24"].verdict == "fail"


def test_autoadapt_rules_fail_on_our_measured_results():
    change = {
        # cos-HDBSCAN keeps 8 of 9 unadapted poisoned updates (our run): no separation to begin with
        "vc/{main}/cos-hdbscan/unadapted": aa_run(
            [{"accepted": i > 0} for i in range(9)], {"accepted": True}, ba=0.06, rnd=0
        ),
        # Krum picks one benign model in both runs
        "vc/{main}/krum/adapted": aa_run({"accepted": False}, {"accepted": True}, ba=0.06, rnd=0),
        # Multi-Krum keeps 5 adapted poisoned and 6 benign
        "vc/{main}/multi-krum/adapted": aa_run([{"accepted": i < 5} for i in range(9)], {"accepted": True}, rnd=0),
        # the global backdoor is not implanted (C15: 0.059); 5 of 9 clients feasible, 4 left with 3 violations (C13)
        "vc/{main}/adapted": aa_run(
            feasible(range(1, 6), num_constraints=20, train_backdoor_acc=1.0)
            + [{"violations": 3, "num_constraints": 20, "penalty_sum": 1e-2}] * 4,
            ba=0.059,
            rnd=0,
        ),
        # default scenario: 5 of 9 clients feasible (C7, C11)
        "feas/cos-whole": aa_run(
            feasible(range(1, 6), offtarget_outside=1, offtarget_total=7, train_backdoor_acc=1.0)
            + [{"violations": 1, "batches_to_feasible": None}] * 4
        ),
        "feas/cos-layers": aa_run(feasible(range(6, 11)) + [{"violations": 1}] * 4),
    }
    out = judge("autoadapt", False, aa_results(change))
    assert_verdicts(out, {cid: "fail" for cid in ("C7", "C11", "C13", "C15", "C22", "C23", "C23b")})


def test_autoadapt_c23_needs_krum_to_stop_the_unadapted_attack_first():
    # Krum and Multi-Krum already keep unadapted poisoned models: nothing to bypass
    change = {
        "vc/{main}/krum/unadapted": aa_run({"accepted": True}, {"accepted": False}, ba=0.9, rnd=0),
        "vc/{main}/multi-krum/unadapted": aa_run({"accepted": True}, {"accepted": False}, ba=0.9, rnd=0),
    }
    out = judge("autoadapt", False, aa_results(change))
    assert out["C23"].ours["ad"]["poisoned_kept"] >= 1  # the adapted models are still kept
    assert_verdicts(out, {"C23": "fail", "C23b": "fail"})


def test_autoadapt_c13_fails_when_eq2_meets_the_layer_wise_constraints():
    # Eq. 2 meets every layer-wise constraint at some alpha: nothing for AutoAdapt to win
    r = aa_results()
    alpha = next(rid for rid in r.runs if rid.startswith(f"vc/{aa_main(r)}/eq2/"))
    r.runs[alpha] = aa_run(feasible(range(1, 10), num_constraints=20), rnd=0)
    assert judge("autoadapt", False, r)["C13"].verdict == "fail"


# ============================================================================ poisonedfl
def pfl_results(
    gap: float = 4.0,
    filter_recall: bool = True,
    variants: dict | None = None,
    fakes_gap: tuple = (1.0, 3.0),
    decay_gap: float = 1.0,
) -> Results:
    """The full grid. No attack and the random-sign baseline at 95 %; PoisonedFL's damage grows
    linearly by ``gap`` points per 400 rounds (MNIST's base horizon; longer runs go on growing)
    under every aggregator but FedAvg, which it breaks (10 %); ``fakes_gap``: the growth at 4.8 /
    9.1 % fakes; ``decay_gap``: with lr decay."""
    r = base_results("poisonedfl", False)
    v = {"noise0.5": 85.0, "flip0.05": 90.0, **(variants or {})}

    def growing(g):
        return lambda t: (95.0 - g * (t + 1) / 400) / 100

    for rid, run in r.runs.items():
        ds, agg, kind = rid.split("/")
        if agg == "fedavg" and kind != "none":
            put(r, rid, main_acc=0.10)
        elif kind in ("none", "random", "none-decay"):
            put(r, rid, main_acc=0.95)
        elif kind in v:
            put(r, rid, main_acc=v[kind] / 100)
        elif kind == "pfl-f5":
            put(r, rid, main_acc=growing(fakes_gap[0]))
        elif kind == "pfl-f10":
            put(r, rid, main_acc=growing(fakes_gap[1]))
        elif kind == "pfl-decay":
            put(r, rid, main_acc=growing(decay_gap))
        elif agg == "filter" and kind == "pfl":
            put(r, rid, main_acc=0.95)
        else:  # pfl, partition
            put(r, rid, main_acc=growing(gap))
        if kind.startswith("pfl") or agg == "fedavg":
            put_rounds(r, rid, attack_c=8.0)
        if agg == "filter":
            k = run.config.cohort_size
            n_fake = k - 20 if kind != "none" else 0  # 20 genuine clients per round
            run.clients = [
                {
                    "round": t,
                    "client": i,
                    "attacking": i < n_fake,
                    "accepted": not (i < n_fake and (filter_recall or i > 0)),
                }
                for t in range(3)
                for i in range(k)
            ]
    r.extras = {"U11": "holds", "U12": 0.6588}
    return r


def test_poisonedfl_rules_pass_on_the_reports_statements():
    out = judge("poisonedfl", False, pfl_results())
    assert out["P6"].ours[0] == 95.0 and out["P6"].ours[0] - out["P6"].ours[3] >= 3.8
    assert_verdicts(
        out,
        {
            "P1.mnist.median": "pass",
            "P1.mnist.trimmed-mean": "pass",
            "P2.mnist": "pass",
            "P4.mnist": "pass",
            "P5": "pass",
            "P6": "pass",
            "P7": "pass",
            "P3.mnist": "pass",
            "P8.mnist": "pass",
        },
    )


def test_poisonedfl_rules_fail_on_a_tiny_gap():
    # the damage is ~0.2 points at 16.7 % fakes and ~0.16 at 9.1 % (P6's committed gap), in the right order:
    # no degradation to speak of
    out = judge("poisonedfl", False, pfl_results(gap=0.2, fakes_gap=(0.05, 0.16), decay_gap=1.0))
    v = out["P6"].ours
    assert v[1] >= v[2] >= v[3] and v[0] - v[2] < 0.2 and v[0] - v[3] < 0.25
    assert_verdicts(out, {"P1.mnist.median": "fail", "P1.mnist.trimmed-mean": "fail", "P6": "fail", "P7": "fail"})


def test_poisonedfl_p2_and_p7_need_the_minimum_effect():
    # the damage grows by under 1.5 points from T/6 to T, and lr decay removes under 1.5 points of it
    out = judge("poisonedfl", False, pfl_results(gap=0.25, decay_gap=0.1))
    grow = out["P2.mnist"].ours
    assert 0 < grow[-1] - grow[0] < 1.5
    assert_verdicts(out, {"P2.mnist": "fail", "P7": "fail"})
    # growth of 4 points per 400 rounds and a decay that halves it: both effects are large enough
    assert_verdicts(judge("poisonedfl", False, pfl_results(gap=4.0, decay_gap=1.0)), {"P2.mnist": "pass", "P7": "pass"})


def test_poisonedfl_p5_and_p4_need_accuracy_and_recall():
    # our runs: the filter breaks under both variants (16 % / 30 %): P5's "above 80 %" fails
    out = judge("poisonedfl", False, pfl_results(variants={"noise0.5": 16.3, "flip0.05": 30.0}))
    assert out["P5"].verdict == "fail"
    # noise does less damage than flipping: the other half of P5
    assert (
        judge("poisonedfl", False, pfl_results(variants={"noise0.5": 92.0, "flip0.05": 85.0}))["P5"].verdict == "fail"
    )
    # the filter lets one fake upload per round through: recall < 100 %
    assert judge("poisonedfl", False, pfl_results(filter_recall=False))["P4.mnist"].verdict == "fail"


# ============================================================================ dpfl
def dpfl_results(
    mta: dict | None = None, asr: dict | None = None, false_drops: tuple = (0, 0, 5, 10), centred_score: float = 0.0
) -> Results:
    """The full grid, sigmas in increasing order. MTA 90 % without attack, 85 % under attack;
    ASR 100 % under FedAvg, median and Krum, 10 % under Robust-DPFL (every robust-dpfl* and
    factor-* run; ``asr`` and ``mta`` by run name); the Eq. 12 score of the attackers' uploads
    10x the honest ones (the mean-centred attacker's: ``centred_score``); Robust-DPFL drops
    the 40 attacking uploads of each run (unless they score at most the honest 1.0) and
    ``false_drops`` honest ones per sigma (precision 40 / (40 + false drops))."""
    r = base_results("dpfl", False)
    mta = {"noattack": 0.90, **(mta or {})}
    asr = {
        "fedavg": 1.0,
        "median": 1.0,
        "krum": 1.0,
        "robust-dpfl": 0.1,
        "robust-dpfl-centred": 0.5,
        "noattack": 0.0,
        **(asr or {}),
    }
    sigmas = sorted({rid.split("/")[0] for rid in r.runs}, key=lambda s: float(s[1:]))
    for rid in r.runs:
        sig, name = rid.split("/")
        robust = name.startswith(("robust-dpfl", "factor-"))
        centred = name.endswith("centred")
        default_asr = asr["robust-dpfl-centred"] if centred else asr["robust-dpfl"] if robust else 1.0
        put(r, rid, main_acc=mta.get(name, 0.85), backdoor_acc=asr.get(name, default_asr))
        if robust:
            # 10 rounds, 4 attacking of 20 per round
            n_false = false_drops[sigmas.index(sig) % len(false_drops)]
            rows = []
            for t in range(10):
                score = centred_score if centred else 10.0
                # K-means drops the high-score cluster: the attackers when they score above the honest 1.0
                rows += [
                    {"round": t, "client": i, "attacking": True, "accepted": score <= 1.0, "score": score}
                    for i in range(4)
                ]
                rows += [
                    {
                        "round": t,
                        "client": i,
                        "attacking": False,
                        "score": 1.0,
                        "accepted": not (t * 16 + i - 4 < n_false),
                    }
                    for i in range(4, 20)
                ]
            r.runs[rid].clients = rows
    r.extras = {"U13": "holds"}
    return r


def test_dpfl_rules_pass_when_robust_dpfl_defends_and_the_model_works():
    out = judge("dpfl", False, dpfl_results())
    precision = out["D4"].ours  # one per sigma: 40 / (40 + false drops)
    assert out["D1"].ours == (100.0, 100.0, 85.0, 85.0, 90.0) and precision == [1.0, 1.0, 0.889, 0.8][: len(precision)]
    assert_verdicts(
        out,
        {"D1": "pass", "D2": "pass", "D3.asr": "pass", "D3.mta": "pass", "D3.best": "pass", "D4": "pass", "D5": "pass"},
    )


def test_dpfl_d1_fails_when_krum_collapsed_even_with_asr_100():
    # our run: Krum's main accuracy 10.9 %: a model that answers the target everywhere scores 100 % ASR
    out = judge("dpfl", False, dpfl_results(mta={"krum": 0.109}))
    assert out["D1"].ours[0] == 100.0 and out["D1"].verdict == "fail"


def test_dpfl_rules_fail_when_robust_dpfl_does_not_defend():
    # robust 82.7 vs median 59.0 ASR at sigma = 1 (our smoke run); precision growing with sigma (0.67 .. 1.0)
    out = judge(
        "dpfl",
        False,
        dpfl_results(
            asr={"robust-dpfl": 0.827, "median": 0.59},
            mta={"robust-dpfl": 0.5},
            false_drops=(20, 10, 5, 0),
            centred_score=10.0,
        ),
    )
    assert_verdicts(
        out, {"D1": "fail", "D3.asr": "fail", "D3.mta": "fail", "D3.best": "fail", "D4": "fail", "D5": "fail"}
    )


# ============================================================================ every reproduction
#: paper -> [(quick, results that agree with the paper)]
PAPER_LIKE: dict[str, list[tuple[Any, Callable[[], Results]]]] = {
    "fall-of-cc": [("smoke", foc_results)],
    "rlr": [(False, lambda: rlr_results(False))],
    "invariant": [("smoke", inv_results)],
    "leadfl": [(False, leadfl_results), (True, lambda: leadfl_results(True))],
    "autoadapt": [(False, aa_results)],
    "poisonedfl": [(False, pfl_results)],
    "dpfl": [(False, dpfl_results)],
}


@pytest.mark.parametrize("name", sorted(n for n in PAPERS.names() if not n.startswith("toy")))
def test_every_paper_row_is_judged_and_quotes_where(name):
    """On results that agree with the paper, every ``paper`` row of every registered
    reproduction is judged (pass or fail, never ``info`` or ``error``) and says where in the
    paper its statement is."""
    assert name in PAPER_LIKE, f"{name}: no hand-made results in tests/test_claims_rules.py"
    for quick, build in PAPER_LIKE[name]:
        out = judge(name, quick, build())
        rows = [c for c in out.values() if c.source == "paper"]
        assert rows
        for c in rows:
            assert c.where.strip(), f"{name} {c.id}: a paper row without where"
            assert c.verdict in ("pass", "fail"), (name, quick, c.id, c.verdict, c.ours, c.reason)


@pytest.mark.parametrize("name", sorted(PAPER_LIKE))
def test_results_that_agree_with_the_paper_pass_every_paper_row(name):
    """A rule that fails on numbers agreeing with the paper tests something else than its label."""
    for quick, build in PAPER_LIKE[name]:
        out = judge(name, quick, build())
        failing = {c.id: (c.ours, c.reason) for c in out.values() if c.source == "paper" and c.verdict != "pass"}
        assert not failing, (name, quick, failing)


def test_every_reproduction_has_hand_made_results():
    assert set(REPRODUCTIONS) <= set(PAPER_LIKE) and set(REPRODUCTIONS) <= set(PAPERS.names())


def xfail_problems(source: str, name: str) -> list[str]:
    """The xfails of a test module that cannot fail: not strict, no ``raises=``, a bare
    ``@pytest.mark.xfail`` or ``pytest.xfail(...)`` inside a test."""
    import ast

    tree = ast.parse(source)
    called = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr == "xfail"):
            continue
        where = f"{name}:{node.lineno}"
        if not (isinstance(node.value, ast.Attribute) and node.value.attr == "mark"):
            out.append(f"{where}: pytest.xfail() inside a test")
        elif id(node) not in called:
            out.append(f"{where}: a bare xfail mark")
        else:
            kw = {k.arg: k.value for k in called[id(node)].keywords}
            if "raises" not in kw:
                out.append(f"{where}: xfail without raises=")
            if not (isinstance(kw.get("strict"), ast.Constant) and kw["strict"].value is True):
                out.append(f"{where}: xfail not strict")
    return out


def test_xfail_problems_are_found():
    good = "@pytest.mark.xfail(reason='r', strict=True, raises=AssertionError)\ndef test_a(): pass\n"
    assert xfail_problems(good, "t.py") == []
    bad = (
        "@pytest.mark.xfail(reason='r')\ndef test_a(): pass\n@pytest.mark.xfail\ndef test_b(): pass\n"
        "def test_c():\n    pytest.xfail('later')\n"
    )
    assert sorted(xfail_problems(bad, "t.py")) == [
        "t.py:1: xfail not strict",
        "t.py:1: xfail without raises=",
        "t.py:3: a bare xfail mark",
        "t.py:6: pytest.xfail() inside a test",
    ]


def test_every_xfail_in_the_suite_is_strict_and_names_its_exception():
    """An xfail that is not strict passes when the test starts to pass, and one without
    ``raises=`` counts a crash as the expected failure: neither can fail."""
    from pathlib import Path

    problems = [
        p
        for path in sorted(Path(__file__).parent.glob("*.py"))
        if path.name != Path(__file__).name
        for p in xfail_problems(path.read_text(), path.name)
    ]
    assert not problems, problems
