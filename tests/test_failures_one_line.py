"""What a user sees when something goes wrong: one line, a status, never a traceback.

The cases are those a new user met: a DP run past its first checkpoint, a resume after a
kill in the middle of a record line, a report over a damaged run, an internal error,
huge values.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fedarena.cli import app
from fedarena.run.simulation import Simulation

runner = CliRunner()
SMALL = ["data.dataset=digits", "fl.num_clients=10", "fl.clients_per_round=5", "fl.local_steps=2"]


def _sets(over: list[str]) -> list[str]:
    return [a for o in over for a in ("--set", o)]


@pytest.mark.parametrize("dp", ["local", "central"])
def test_a_dp_run_passes_its_checkpoints(tmp_path, dp):
    over = SMALL + [
        "fl.rounds=11",
        f"defense.dp={dp}",
        "defense.dp_clip=1.0",
        "defense.dp_sigma=0.5",
        "attack.name=none",
        "defense.name=median",
    ]
    res = runner.invoke(app, ["run", "--quiet", "--out", str(tmp_path / "r")] + _sets(over))
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["rounds_completed"] == 11


def test_resume_after_a_kill_in_the_middle_of_a_line(tmp_path, interrupt_at):
    over = SMALL + ["fl.rounds=6", "run.checkpoint_every=2"]
    assert runner.invoke(app, ["run", "--quiet", "--out", str(tmp_path / "ref")] + _sets(over)).exit_code == 0
    interrupt_at(5)
    assert runner.invoke(app, ["run", "--quiet", "--out", str(tmp_path / "cut")] + _sets(over)).exit_code == 130
    interrupt_at(None)
    cut = tmp_path / "cut"
    with open(cut / "metrics.jsonl", "a") as fh:
        fh.write('{"round": 99, "main_acc": 0.1')  # the kill came in the middle of this write
    summary = json.loads((cut / "summary.json").read_text())
    (cut / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    res = runner.invoke(app, ["run", "--quiet", "--resume", str(cut)])
    assert res.exit_code == 0, res.output
    for f in ("metrics.jsonl", "clients.jsonl", "rounds.jsonl"):
        assert (cut / f).read_bytes() == (tmp_path / "ref" / f).read_bytes()


def test_report_skips_damaged_runs_names_them_and_counts_them(tmp_path):
    for i in range(3):
        over = SMALL + ["fl.rounds=2", f"seed={i}"]
        assert runner.invoke(app, ["run", "--quiet", "--out", str(tmp_path / f"r{i}")] + _sets(over)).exit_code == 0
    (tmp_path / "r1" / "metrics.jsonl").write_bytes(b"\x00\xff binary")
    (tmp_path / "r2" / "summary.json").write_text('{"status": "o')
    res = runner.invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output and "2 damaged run(s) skipped" in res.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "2 run(s) skipped" in md and "r1" in md and "r2" in md and md.count("\n- ") >= 2


def test_an_internal_error_is_one_line_with_the_traceback_in_the_run_folder(tmp_path, monkeypatch):
    def broken(self, plan):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(Simulation, "conclude_round", broken)
    res = runner.invoke(app, ["run", "--quiet", "--out", str(tmp_path / "r")] + _sets(SMALL + ["fl.rounds=2"]))
    assert res.exit_code == 1
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "error.log" in lines[0] and str(tmp_path / "r") in res.output.replace("\n", "")
    log = (tmp_path / "r" / "error.log").read_text()
    assert "Traceback" in log and "something inside broke" in log
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "error" and summary["error_log"] == "error.log"


@pytest.mark.parametrize(
    "over, code, needle",
    [
        (["fl.lr=1e300"], 2, "fl.lr: must be within"),
        (["fl.weight_decay=1e300"], 2, "fl.weight_decay: must be within"),
        (["fl.lr_decay_at=[0,0]", "fl.lr_decay=1e300"], 2, "fl.lr_decay"),
        (["fl.lr_decay_at=[0,0]", "fl.lr_decay=1e30"], 2, "fl.lr_decay: 2 decays"),
        (["defense.client=leadfl", "defense.pert_strength=1e300"], 2, "defense.pert_strength"),
        (["defense.dp=local", "defense.dp_sigma=1e300"], 2, "defense.dp_sigma"),
        (["fl.rounds=1000000000000000000"], 2, "fl.rounds"),
        (["defense.name=fltrust", "fl.lr=1e30"], 3, "root dataset is not finite"),
        (["fl.lr=3e38", "fl.weight_decay=3e38"], 3, "not finite"),
    ],
)
def test_huge_values_are_refused_or_diverge_in_one_line(tmp_path, over, code, needle):
    res = runner.invoke(app, ["run", "--quiet", "--out", str(tmp_path / "r")] + _sets(SMALL + ["fl.rounds=2"] + over))
    assert res.exit_code == code, res.output
    assert needle in res.output.replace("\n", "") and "Traceback" not in res.output
