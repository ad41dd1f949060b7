"""The Fall-of-CC reproduction: its grid, its paper numbers, and the --quick run end to
end with the rounds cut further (CI time)."""

from __future__ import annotations

import json

import pytest

from fedarena.registry import PAPERS
from fedarena.reproduce import fall_of_cc as foc


def test_grid_matches_the_paper_setting():
    paper = PAPERS.get("fall-of-cc")()
    runs = paper.runs(quick="smoke")
    assert len(runs) == 4 * 3 * 6  # aggregators x beta x attacks, digits
    rop = runs["digits/cc1/b0.99/rop"]
    assert rop["fl"]["algorithm"] == "fedsgd" and rop["fl"]["client_momentum"] == 0.99
    assert rop["fl"]["num_clients"] == 25 and rop["attack"]["num_malicious"] == 5 and rop["fl"]["batch_size"] == 32
    assert rop["fl"]["lr"] == 0.1 and rop["fl"]["lr_decay_at"] == [int(0.75 * foc.ROUNDS_QUICK)]
    assert rop["defense"] == {"f": 5, "name": "cc", "tau": 1.0, "iterations": 1}
    full = paper.runs(quick=False)
    assert len(full) == 2 * 72
    assert full["mnist-noniid/tm/b0/alie"]["data"] == {"dataset": "mnist", "partition": "dirichlet", "alpha": 1.0}
    assert full["fmnist/rfa/b0.9/ipm"]["defense"]["name"] == "rfa"


def test_paper_tables_and_derived_orderings():
    # Table IV transcription spot checks and the derived "ROP lowest on CC with momentum" facts
    assert foc.TABLE_IV["fmnist"]["rop"][("cc1", 0.99)] == 83.8
    assert foc.TABLE_IV["mnist-noniid"]["alie"][("rfa", 0.0)] == 9.82
    assert all(
        foc.paper_rop_lowest(b, a, beta) for b in ("fmnist", "mnist-noniid") for a, beta in foc.MOMENTUM_CC_CELLS
    )
    assert not foc.paper_rop_lowest("fmnist", "rfa", 0.0)  # ALIE collapses RFA at beta 0
    assert (
        foc._nondecreasing("0.9 / 0.95 / 0.95")
        and not foc._nondecreasing("0.9 / 0.8 / 1")
        and not foc._nondecreasing("0.9 / - / 1")
    )
    # Table III's rows: half of ROP minus benign, per beta (tau 0.1: (0.94 - 0) / 2, (0.77 - 0.2) / 2, (0.75 - 0.3) / 2)
    assert foc.t3_min_gaps(0.1) == (0.47, 0.285, 0.225) and foc.t3_min_gaps(1.0) == (0.255, 0.185, 0.115)
    need = foc.t3_min_gaps(1.0)
    assert foc._rop_above("0.5 vs 0.1 / 0.4 vs 0.2 / 0.3 vs 0.185", need)  # gaps 0.4, 0.2, 0.115 (the last exactly)
    assert not foc._rop_above("0.5 vs 0.1 / 0.4 vs 0.3 / 0.3 vs 0.2", need)  # gap 0.1 < 0.185 at beta 0.9
    assert not foc._rop_above("0.5 vs 0.6 / 1 vs 0 / 1 vs 0", need) and not foc._rop_above(
        "- vs 0 / 1 vs 0 / 1 vs 0", need
    )


@pytest.mark.usefixtures("one_thread")
def test_quick_reproduction_runs_and_computes_claims(tmp_path):
    from fedarena.reproduce.framework import run_reproduction

    report = run_reproduction(
        "fall-of-cc",
        quick="smoke",
        out=tmp_path,
        overrides=["fl.rounds=6", "fl.lr_decay_at=[4]", "eval.every=3"],
        write_runs=False,
    )
    for f in ("claims.md", "claims.json", "results.csv"):
        assert (tmp_path / f).exists()
    claims = {c.id: c for c in report.claims}
    assert {"T4-digits", "T2-digits", "T3-digits-tau1", "T3-digits-tau0.1", "T4-drop-digits"} <= set(claims)
    assert all(c.verdict != "error" for c in report.claims), [
        (c.id, c.ours) for c in report.claims if c.verdict == "error"
    ]
    assert claims["T4-digits"].paper == "4/4"
    # ALIE's perturbation cosines (β 0 / 0.9 / 0.99) are cosines; T2 is a paper row judged pass or fail
    assert all(0.0 < float(x) <= 1.0 for x in claims["T2-digits"].ours.split(" / "))
    assert all(c.verdict in ("pass", "fail") for c in report.claims if c.source == "paper")
    md = (tmp_path / "claims.md").read_text()
    assert "Table IV, digits" in md and "Norms, digits" in md and "(83.8)" in md
    data = json.loads((tmp_path / "claims.json").read_text())
    assert data["name"] == "fall-of-cc" and data["quick"] == "smoke"
