"""What a user reads: the resolved config.yaml, the summary's names, the run name following --set,
curves.png, the progress ETA, `fedarena list [SECTION]` at 80 columns, `fedarena --version`."""

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from fedarena import __version__
from fedarena.cli import app
from fedarena.config import DEFAULT_RUN, from_tree, load_config
from fedarena.run.plots import main_diagnostic, plot_curves
from fedarena.resolve import resolved_config

runner = CliRunner()


def test_run_records_resolved_config_and_named_summary(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["run", "--quiet", "--demo", "--set", "fl.rounds=1", "--set", "defense.name=median"])
    assert res.exit_code == 0, res.output
    (out,) = (tmp_path / "runs").iterdir()
    assert out.name.endswith("-digits-backdoor-median")  # the name follows --set defense.name
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["name"] == "digits-backdoor-median"
    assert cfg["model"] == {"hidden": [64], "name": "mlp"}  # resolved from "auto", with its defaults
    assert cfg["fl"]["clients_per_round"] == 20 and cfg["defense"]["f"] == 4
    assert cfg["defense"]["even"] == "mean"  # the aggregator's default
    assert cfg["attack"]["trigger"] == "square" and cfg["attack"]["dba"] is False  # the attack's defaults
    again = from_tree(cfg)  # loading it gives the same run
    assert resolved_config(again) == cfg
    s = json.loads((out / "summary.json").read_text())
    assert (s["dataset"], s["model"], s["attack"]["name"], s["defense"]["name"]) == (
        "digits",
        "mlp",
        "backdoor",
        "median",
    )
    assert s["attack"]["poison_frac"] == 0.5 and s["defense"]["even"] == "mean"
    assert (out / "curves.png").stat().st_size > 0


def test_name_follows_overrides_unless_chosen(tmp_path):
    assert load_config(None, ["defense.name=median"], base=DEFAULT_RUN).name == "digits-backdoor-median"
    assert (
        load_config(None, ["attack.name=none", "attack.num_malicious=0"], base=DEFAULT_RUN).name == "digits-none-fedavg"
    )
    assert load_config(None, ["defense.name=median", "name=mine"], base=DEFAULT_RUN).name == "mine"
    p = tmp_path / "c.yaml"
    p.write_text("name: my-study\nattack: {name: alie, num_malicious: 2}\n")
    assert load_config(p, ["fl.rounds=3"]).name == "my-study"
    assert load_config(p, ["defense.name=krum"]).name == "my-study-krum"
    p.write_text("attack: {name: alie, num_malicious: 2}\n")
    assert load_config(p, ["defense.name=krum"]).name == "digits-alie-krum"


def test_curves_single_round_and_stopped_run(tmp_path):
    rows = [{"round": 4, "main_acc": 0.5, "loss": 1.2, "backdoor_acc": None, "defense_clipped": 3}]
    assert main_diagnostic(rows) == "defense_clipped"
    plot_curves(rows, tmp_path / "one.png", "one round")
    plot_curves([], tmp_path / "none.png", "stopped", summary={"status": "stopped", "rounds_completed": 0})
    plot_curves(rows, tmp_path / "stop.png", "stopped", summary={"status": "stopped", "rounds_completed": 5})
    assert all((tmp_path / f).stat().st_size > 0 for f in ("one.png", "none.png", "stop.png"))


def test_list_section_never_cut_at_80_columns(monkeypatch):
    from rich.console import Console

    from fedarena import cli
    from fedarena.registry import ATTACKS, CLIENT_DEFENSES, DEFENSES

    monkeypatch.setattr(cli, "out_console", Console(width=80))  # an 80-column terminal
    out = runner.invoke(app, ["list"]).output

    for reg in (ATTACKS, DEFENSES, CLIENT_DEFENSES):
        for name in reg.names():
            for p in reg.params(name).values():
                if not p.required:
                    assert f"{reg.prefix}.{p.name}={cli.shown_default(p.default)}" in out, (name, p.name)
    assert max(len(line) for line in out.splitlines()) <= 80
    res = runner.invoke(app, ["list", "attacks"])
    assert res.exit_code == 0 and "alie" in res.output and "fedavg" not in res.output
    res = runner.invoke(app, ["list", "nosuch"])
    assert res.exit_code == 2 and "valid: datasets, partitions" in res.output


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"fedarena {__version__}"


def test_progress_shows_eta():
    from fedarena import cli

    assert "TimeRemainingColumn()" in Path(cli.__file__).read_text()
