"""The Invariant Aggregator reproduction: every config validates, and a cut-down quick
reproduction (4 of its runs) gives the qualitative results it reports."""

import pytest

from fedarena.config import from_tree
from fedarena.reproduce.framework import run_reproduction
from fedarena.reproduce.invariant import InvariantAggregatorPaper
from fedarena.reproduce.quick import HEADLINE, scale


@pytest.mark.parametrize("quick", ["smoke", False])
def test_every_config_validates(quick):
    paper = InvariantAggregatorPaper()
    runs = paper.runs(quick)
    assert {"t1-fedavg", "t1-ours", "t1-no-attack"} <= set(runs)
    if scale(quick, paper.data_root) != HEADLINE:  # --quick with Fashion-MNIST found: the headline runs only
        assert {
            "t4-and-mask",
            "t5-collude-ours",
            "t5-adaptive-ours",
            "t8-ratio5",
            "t9-size4",
            "t10-alpha0.2-ours",
            "fixed-ours",
        } <= set(runs)
    for rid, tree in runs.items():
        cfg = from_tree(tree)
        assert cfg.fl.rounds >= 30, rid
    # paired comparisons: Table 1 runs differ only in the defense (and Sign-SGD's server lr)
    a, b = runs["t1-fedavg"], runs["t1-ours"]
    assert a["data"] == b["data"] and a["attack"] == b["attack"] and a["seed"] == b["seed"]


def test_cut_down_quick_reproduction(tmp_path, monkeypatch):
    keep = ("t1-fedavg", "t1-ours", "t1-no-attack", "t1-trimmed-mean")
    full = InvariantAggregatorPaper.runs
    monkeypatch.setattr(
        InvariantAggregatorPaper, "runs", lambda self, quick: {k: v for k, v in full(self, quick).items() if k in keep}
    )
    report = run_reproduction("invariant", quick="smoke", out=tmp_path, write_runs=False)
    by_id = {c.id: c for c in report.claims}
    # claims whose runs exist are computed; the attack works against FedAvg on this scale
    for cid in ("E1", "E2", "E4", "E4-nonInf", "Thm10", "Prop5", "T1-ours"):
        assert by_id[cid].verdict in ("pass", "fail", "info"), (cid, by_id[cid].ours)
    assert by_id["E1"].verdict == "pass"
    assert by_id["Thm10"].verdict == "pass" and by_id["Prop5"].verdict == "pass"
    asr_ours, asr_fedavg = by_id["E2"].ours[0], by_id["E2"].ours[1]
    assert asr_ours < asr_fedavg  # the defense lowers the backdoor accuracy
    text = (tmp_path / "claims.md").read_text()
    assert "Theorem 10 Monte Carlo" in text and "Table 1 (scaled)" in text


def test_attacker_influence_hand_example():
    """4 benign rows + 1 attacker, tau = 0.1 (strict), alpha = 0.25 (b = 1 of 4 rows, 2 of 5).

    c0 benign [1,2,3,4] + 10: kept both ways, trimmed mean 2.5 -> median 3 (same sign, +0.5);
    c1 benign [1,1,-1,0] + -1: |S| 1 > 0.4 kept (mean(0,1) = 0.5), with the attacker S = 0, masked (-0.5);
    c2 benign [1,-1,1,-1] + 5: S = 0 masked, with the attacker S = 1 > 0.5 kept, median 1 (+1)."""
    import torch

    from fedarena.reproduce.invariant import attacker_influence

    U = torch.tensor([[1.0, 1.0, 1.0], [2.0, 1.0, -1.0], [3.0, -1.0, 1.0], [4.0, 0.0, -1.0], [10.0, -1.0, 5.0]])
    out = attacker_influence(U, [False] * 4 + [True], torch.ones(3), tau=0.1, trim_frac=0.25)
    assert out["total"] == pytest.approx(1.0)
    assert (out["same_sign"], out["flipped"], out["newly_kept"], out["newly_masked"]) == pytest.approx(
        (0.5, 0.0, 1.0, -0.5)
    )
    assert (
        out["frac_same_sign"],
        out["frac_flipped"],
        out["frac_newly_kept"],
        out["frac_newly_masked"],
    ) == pytest.approx((1 / 3, 0.0, 1 / 3, 1 / 3))


def test_diagnose_quick_rounds_add_up():
    from fedarena.reproduce.invariant import INFLUENCE_KINDS, diagnose

    rows = diagnose(["fl.rounds=3"], quick="smoke")
    assert len(rows) == 3 and all(0.0 <= r["mask_keeps"] <= 1.0 and 0.0 <= r["asr"] <= 1.0 for r in rows)
    for r in rows:
        if "infl_total" in r:
            assert sum(r[f"infl_{k}"] for k in INFLUENCE_KINDS) == pytest.approx(r["infl_total"], abs=1e-4)
            assert r["fo_ours"] - r["fo_ours_benign_only"] == pytest.approx(r["infl_total"], abs=1e-4)
