"""The command line: run, list, reproduce (with a toy paper)."""

import json

from typer.testing import CliRunner

from fedarena.cli import app
from fedarena.reproduce.framework import Claim, Paper, deep_update, run_reproduction
from fedarena.registry import PAPERS

runner = CliRunner()


def test_run_writes_outputs(tmp_path):
    out = tmp_path / "r"
    res = runner.invoke(
        app,
        [
            "run",
            "--quiet",
            "--demo",
            "--set",
            "fl.rounds=2",
            "--set",
            "fl.num_clients=5",
            "--set",
            "attack.num_malicious=1",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["final_backdoor_acc"] is not None
    assert "final_main_acc" in res.output


def test_run_config_error_exit_code_2(tmp_path):
    res = runner.invoke(app, ["run", "--quiet", "--set", "defense.name=nosuch", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2
    assert not (tmp_path / "x").exists()


def test_list_shows_registries():
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0
    for word in ("digits", "dirichlet", "mlp", "backdoor", "fedavg", "attack.poison_frac"):
        assert word in res.output


@PAPERS.register("toy-paper")
class ToyPaper(Paper):
    """A toy reproduction used by the framework's tests."""

    notes = "Two tiny runs."

    def runs(self, quick):
        base = {"fl": {"rounds": 2, "num_clients": 4}, "attack": {"name": "backdoor", "num_malicious": 1}}
        return {"plain": base, "weighted": deep_update(base, {"defense": {"weighted": True}})}

    def claims(self, quick):
        return [
            Claim(
                "C1",
                "accuracy is a share",
                1.0,
                lambda r: r.final("plain", "main_acc"),
                lambda v: 0 <= v <= 1,
                "in [0, 1]",
            ),
            Claim("C2", "impossible", 2.0, lambda r: r.final("plain", "main_acc"), lambda v: v > 1, "> 1"),
            Claim("C3", "info only", None, lambda r: len(r.series("weighted", "loss"))),
            Claim("C4", "broken measure", 0, lambda r: r.final("missing", "main_acc"), lambda v: True),
        ]

    def extras(self, quick, results):
        return {"Extra table": "| a |\n|---|\n| 1 |"}


def test_reproduction_framework_writes_claims(tmp_path):
    report = run_reproduction("toy-paper", quick=True, out=tmp_path)
    verdicts = {c.id: c.verdict for c in report.claims}
    assert verdicts == {"C1": "pass", "C2": "fail", "C3": "info", "C4": "error"}
    data = json.loads((tmp_path / "claims.json").read_text())
    assert data["counts"] == {"pass": 1, "fail": 1, "info": 1, "error": 1}
    md = (tmp_path / "claims.md").read_text()
    assert "| C1 |" in md and "Extra table" in md and "Two tiny runs." in md
    csv_lines = (tmp_path / "results.csv").read_text().strip().splitlines()
    assert csv_lines[0].startswith("run,") and len(csv_lines) == 3
    assert (tmp_path / "runs" / "plain" / "metrics.jsonl").exists()


def test_reproduce_cli_unknown_name():
    res = runner.invoke(app, ["reproduce", "no-such-paper"])
    assert res.exit_code == 2


def test_reproduce_overrides_apply_where_declared():
    from fedarena.errors import ConfigError
    from fedarena.reproduce.framework import configs_with_overrides

    runs = {
        "bd": {"attack": {"name": "backdoor", "num_malicious": 1}},
        "lf": {"attack": {"name": "label-flip", "num_malicious": 1}},
    }
    cfgs = configs_with_overrides(runs, ["attack.poison_frac=0.25", "fl.rounds=3"])
    assert cfgs["bd"].attack.params()["poison_frac"] == 0.25 and "poison_frac" not in cfgs["lf"].attack.params()
    assert cfgs["lf"].fl.rounds == 3
    import pytest

    with pytest.raises(ConfigError, match="attack.nosuch"):
        configs_with_overrides(runs, ["attack.nosuch=1"])


def test_failed_claims_get_one_line_reason(tmp_path):
    report = run_reproduction("toy-paper", quick=True, out=tmp_path)
    lines = report.failure_lines()
    assert any(
        line.startswith("C2 fail: ours ") and "does not meet '> 1'" in line and "(paper: 2)" in line for line in lines
    )
    assert any(line.startswith("C4 error: ") for line in lines)
    assert "## Why claims failed" in (tmp_path / "claims.md").read_text()
    res = runner.invoke(app, ["reproduce", "toy-paper", "--quick", "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0 and "C2 fail: ours" in res.output
