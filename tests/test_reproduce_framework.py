"""The reproduction framework's claim kinds, counts line and unfinished-run rule (issue:
claims tables a reader can trust), plus checks over every registered reproduction."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fedarena.cli import app
from fedarena.registry import PAPERS
from fedarena.reproduce.framework import Claim, Paper, Results, counts_line, deep_update, evaluate_claims
from fedarena.run.simulation import RunResult

runner = CliRunner()


def _results(status: dict[str, str], acc: dict[str, float]) -> Results:
    """Hand-made results: one metric row per run, the given status (``error`` runs carry a message)."""
    r = Results()
    for rid, st in status.items():
        r.runs[rid] = RunResult(None, [{"round": 0, "main_acc": acc[rid]}], [], [], {"status": st})
        r.status[rid] = {"status": st, "error": "RuntimeError: boom" if st == "error" else None}
    return r


def test_claim_kinds_are_enforced():
    with pytest.raises(ValueError, match="pass rule"):
        Claim("P", "paper number, no rule", 1.0, lambda r: 1.0, source="paper", where="Table 1")
    with pytest.raises(ValueError, match="where"):
        Claim("P", "paper number, no place", 1.0, lambda r: 1.0, lambda v: True, source="paper")
    with pytest.raises(ValueError, match="measurement has no pass rule"):
        Claim("M", "m", None, lambda r: 1.0, lambda v: True, source="measurement")
    with pytest.raises(ValueError, match="source"):
        Claim("X", "x", None, lambda r: 1.0, lambda v: True, source="toy")
    assert Claim("I", "i", None, lambda r: 1.0).source == "measurement"
    assert Claim("D", "d", 1, lambda r: 1.0, lambda v: True).source == "derived"


def test_a_claim_reading_an_unfinished_run_is_error_naming_the_run():
    res = _results({"a": "ok", "b": "error", "c": "diverged"}, {"a": 0.9, "b": 0.1, "c": 0.1})
    claims = [
        Claim(
            "A",
            "reads a only",
            0.9,
            lambda r: r.final("a", "main_acc"),
            lambda v: v > 0.5,
            source="paper",
            where="Table 1",
        ),
        Claim(
            "B",
            "reads b, which crashed",
            0.1,
            lambda r: r.final("b", "main_acc"),
            lambda v: v < 0.5,
            source="paper",
            where="Table 1",
        ),
        Claim("C", "a diverged run is finished", 0.1, lambda r: r.final("c", "main_acc"), lambda v: v < 0.5),
        Claim("D", "iterates over every run", None, lambda r: len([x for x in r.runs.values() if x])),
    ]
    out = {c.id: c for c in evaluate_claims(claims, res)}
    assert out["A"].verdict == "pass" and out["C"].verdict == "pass"
    # b's value would pass its rule (0.1 < 0.5), but b did not finish: no verdict
    assert out["B"].verdict == "error" and "b" in out["B"].reason and "RuntimeError: boom" in out["B"].reason
    assert out["D"].verdict == "error"
    assert res.unfinished() == {"b": "error: RuntimeError: boom"}


def test_extras_from_an_unfinished_run_make_their_claims_error():
    res = _results({"a": "ok", "b": "error"}, {"a": 0.9, "b": 0.1})
    res.extras = {"table": 1.0, "unit": 2.0}
    claims = [
        Claim("T", "reads an extras table", 1.0, lambda r: r.extras["table"], lambda v: v == 1.0),
        Claim("U", "reads runs a only", 0.9, lambda r: r.final("a", "main_acc"), lambda v: v > 0.5, source="check"),
    ]
    out = {c.id: c for c in evaluate_claims(claims, res, extras_runs={"b"})}
    assert out["T"].verdict == "error" and out["U"].verdict == "pass"


def test_counts_line_puts_paper_claims_first():
    by_source = {
        "paper": {"pass": 2, "fail": 3},
        "derived": {"pass": 1},
        "check": {"pass": 4},
        "measurement": {"info": 2},
    }
    assert counts_line(by_source, 10, 1) == (
        "paper claims reproduced: 2 of 5 (3 fail); derived expectations met: "
        "1 of 1; implementation checks pass: 4 of 4; 2 measurements reported; "
        "runs failed: 1 of 10"
    )
    assert counts_line({"check": {"pass": 1}}).startswith("paper claims reproduced: 0 of 0")


@PAPERS.register("toy-crash")
class ToyCrash(Paper):
    """A toy reproduction with one run that crashes (tests only)."""

    def runs(self, quick):
        base = {"fl": {"rounds": 3, "num_clients": 4}, "attack": {"name": "none"}}
        return {"good": base, "bad": deep_update(base, {"attack": {"name": "ipm", "num_malicious": 1}})}

    def claims(self, quick):
        return [
            Claim(
                "G",
                "good run is a model",
                0.0,
                lambda r: r.final("good", "main_acc"),
                lambda v: v >= 0,
                ">= 0",
                source="paper",
                where="Table 1",
            ),
            Claim(
                "B",
                "bad run is a model",
                0.0,
                lambda r: r.final("bad", "main_acc"),
                lambda v: v >= 0,
                ">= 0",
                source="paper",
                where="Table 1",
            ),
            Claim("K", "an implementation check", 1, lambda r: 1, lambda v: v == 1, "= 1", source="check"),
        ]


def test_reproduce_with_a_crashed_run_says_so_and_exits_non_zero(tmp_path, monkeypatch):
    from fedarena.attacks.byzantine import IPM

    def crash(self, view):
        raise RuntimeError("crafted crash")

    monkeypatch.setattr(IPM, "craft", crash)
    res = runner.invoke(app, ["reproduce", "toy-crash", "--quick", "--out", str(tmp_path)])
    assert res.exit_code == 1, res.output
    assert "1 of 2 runs did not finish" in res.output and "crafted crash" in res.output
    data = json.loads((tmp_path / "claims.json").read_text())
    verdicts = {c["id"]: c["verdict"] for c in data["claims"]}
    assert verdicts == {"G": "pass", "B": "error", "K": "pass"}
    assert data["counts_by_source"] == {"paper": {"pass": 1, "error": 1}, "check": {"pass": 1}}
    assert list(data["runs_failed"]) == ["bad"] and data["runs_total"] == 2
    md = (tmp_path / "claims.md").read_text()
    assert "paper claims reproduced: 1 of 2 (1 error)" in md and "runs failed: 1 of 2" in md
    assert "### Implementation checks (not claims)" in md and md.index("### Paper claims") < md.index(
        "### Implementation"
    )


def test_reproduce_exits_zero_when_every_run_finished(tmp_path):
    res = runner.invoke(app, ["reproduce", "toy-crash", "--quick", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "paper claims reproduced: 2 of 2" in res.output


def test_no_paper_row_is_info_in_any_registered_reproduction():
    """Every paper row has a pass rule and a place in the paper; checks and derived rows too have a rule."""
    names = [n for n in PAPERS.names() if not n.startswith("toy")]
    assert {"fall-of-cc", "rlr", "invariant", "autoadapt", "leadfl", "poisonedfl", "dpfl"} <= set(names)
    for name in names:
        for quick in (False, True):
            claims = PAPERS.get(name)().claims(quick)
            paper_rows = [c for c in claims if c.source == "paper"]
            assert paper_rows, f"{name}: no paper claim"
            for c in claims:
                assert c.source in ("paper", "derived", "check", "measurement"), (name, c.id)
                if c.source == "paper":
                    assert c.check is not None and c.where, (name, c.id)
                if c.source == "measurement":
                    assert c.paper is None, (
                        f"{name} {c.id}: a measurement quotes a reference: make it a paper/derived row"
                    )
            ids = [c.id for c in claims]
            assert len(ids) == len(set(ids)), f"{name}: duplicate claim ids"
