"""The RLR reproduction: its grid follows the paper's settings, and the --quick version
(digits) runs end to end with the headline claims holding."""

from __future__ import annotations

import json

import pytest

from fedarena.config import load_config
from fedarena.registry import PAPERS
from fedarena.reproduce import rlr as rlr_mod
from fedarena.reproduce.framework import run_reproduction


def test_grid_follows_the_paper():
    paper = PAPERS.get("rlr")()
    full = paper.runs(quick=False)
    fed = full["t1/fedavg"]
    assert fed["data"]["dataset"] == "fashion-mnist" and fed["fl"]["num_clients"] == 10
    assert fed["attack"] == {
        "name": "backdoor",
        "num_malicious": 1,
        "source": 5,
        "target": 7,
        "trigger": "plus",
        "poison_frac": 0.5,
    }
    assert fed["fl"]["lr"] == 0.1 and fed["fl"]["momentum"] == 0.9 and fed["fl"]["grad_clip"] == 10.0
    assert full["t1/rlr"]["defense"] == {"name": "rlr", "theta": 4, "base": "fedavg", "weighted": True}
    assert full["t1/sign"]["fl"]["server_lr"] == 1e-3
    cn = full["t1/rlr-clipnoise"]["defense"]
    assert cn["clip_at"] == "client" and cn["noise"] * (44_426**0.5) == pytest.approx(1.1, rel=1e-3)
    assert full["t7/negated-rlr"]["attack"]["name"] == "backdoor-negated"
    assert full["t7/negated-rlr"]["defense"]["clip_at"] == "server"
    # Table 6 scaled to 20 clients: 4 / 8 attackers, thresholds attackers + 4 (the paper: 12 / 20 for 8 / 16 of 40)
    assert full["t6/40/rlr"]["attack"]["num_malicious"] == 8 and full["t6/40/rlr"]["defense"]["theta"] == 12
    assert full["t6/20/rlr"]["defense"]["theta"] == 8 and full["t6/20/rlr"]["fl"]["num_clients"] == 20
    assert "t2/regular/fedavg" not in full  # the same configuration as t6/20/fedavg, reused
    dba = dict(full["t2/dba/fedavg"]["attack"])
    assert dba.pop("dba") is True and dba == full["t6/20/fedavg"]["attack"]
    assert full["t2/dba/rlr"]["attack"]["dba"] is True and full["t2/dba/rlr"]["defense"]["theta"] == 8
    assert full["f6/late-rlr"]["defense"]["start_round"] > 0
    assert full["t1/noattack"]["attack"]["poison_frac"] == 0.0
    for tree in list(full.values()) + list(paper.runs(quick="smoke").values()):
        load_config(None, base=tree)  # every run is a valid config
    assert rlr_mod.TABLE1["rlr"] == (0, 92.9, 98.3) and rlr_mod.TABLE6[40][1] == (0, 82.5, 94.2)


@pytest.mark.usefixtures("one_thread")
def test_quick_reproduction_headline(tmp_path):
    report = run_reproduction("rlr", quick="smoke", out=tmp_path, write_runs=False)
    verdicts = {c.id: c for c in report.claims}
    assert not [c.id for c in report.claims if c.verdict == "error"]
    assert not any(c.id.startswith("T6.") for c in report.claims)  # Table 6: full version only
    # the headline: FedAvg backdoored, RLR removes it, at a small accuracy cost
    for cid in ("T1.fedavg", "T1.rlr", "T1.rlr-val", "T1.rlr-clipnoise", "T7.negated", "T2.rlr"):
        assert verdicts[cid].verdict == "pass", (cid, verdicts[cid].ours)
    assert verdicts["T1.fedavg"].ours >= 50 and verdicts["T1.rlr"].ours <= 5
    saved = json.loads((tmp_path / "claims.json").read_text())
    assert saved["name"] == "rlr" and len(saved["claims"]) == len(report.claims)
    md = (tmp_path / "claims.md").read_text()
    assert "t1/rlr" in md and "(92.9)" in md


def test_quick_scale_headline_with_fashion_mnist_else_digits(tmp_path, monkeypatch, shared_data):
    """--quick: the headline runs on Fashion-MNIST when found (data.root, $FEDARENA_DATA, ../shared/data),
    else the digits version; the tests' smoke scale is always digits."""
    from fedarena.reproduce import quick as q

    monkeypatch.delenv("FEDARENA_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/data next to it
    monkeypatch.setenv("HOME", str(tmp_path))
    assert q.scale(True) == q.DIGITS and q.scale("smoke", str(shared_data)) == q.DIGITS and q.scale(False) == q.FULL
    assert q.scale(True, str(shared_data)) == q.HEADLINE
    monkeypatch.setenv("FEDARENA_DATA", str(shared_data))
    paper = PAPERS.get("rlr")()
    runs = paper.runs(quick=True)
    assert set(runs) == set(rlr_mod.HEADLINE_RUNS)
    assert runs["t1/rlr"]["data"] == {"dataset": "fashion-mnist", "root": str(shared_data), "download": False}
    assert runs["t1/rlr"]["fl"] == paper.runs(quick=False)["t1/rlr"]["fl"]  # the full settings
    assert [c.id for c in paper.claims(quick=True)] == list(rlr_mod.HEADLINE_CLAIMS)
    for name in ("fall-of-cc", "invariant"):
        p = PAPERS.get(name)()
        assert 0 < len(p.runs(quick=True)) < len(p.runs(quick=False)) and p.claims(quick=True)
        for tree in p.runs(quick=True).values():
            assert tree["data"]["dataset"] == "fashion-mnist"
            load_config(None, base=tree)
