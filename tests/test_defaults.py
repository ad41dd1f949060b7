"""One set of defaults: a config file, --set without a config, a sweep and the API start
from the library's defaults; the demo is a named config (configs/demo.yaml, --demo)."""

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from fedarena.cli import app
from fedarena.config import DEMO_RUN, ExperimentConfig, load_config, load_yaml
from fedarena.studies.spec import SweepSpec

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_demo_yaml_is_the_demo():
    assert load_yaml(ROOT / "configs" / "demo.yaml") == DEMO_RUN


def test_set_without_config_starts_from_library_defaults(tmp_path):
    res = runner.invoke(
        app, ["run", "--quiet", "--set", "fl.rounds=1", "--set", "attack.name=none", "--out", str(tmp_path / "r")]
    )
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    lib = ExperimentConfig()
    # no invisible demo underneath: no attackers declared, the library's epochs and batch size
    assert cfg["attack"]["num_malicious"] == 0 and cfg["defense"]["f"] == 0
    assert cfg["fl"]["local_epochs"] == lib.fl.local_epochs == 1 and cfg["fl"]["batch_size"] == lib.fl.batch_size
    # the same keys give the same experiment from the API and from a sweep
    api = load_config(None, ["fl.rounds=1", "attack.name=none"])
    job = SweepSpec.from_tree({"base": {"fl": {"rounds": 1}, "attack": {"name": "none"}}}).jobs()[0]
    for c in (api, job.validated()):
        assert c.fl.local_epochs == 1 and c.attack.num_malicious == 0 and c.fl.batch_size == 32


def test_run_alone_is_the_demo_and_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = {}
    import fedarena.config as config

    def fake_load(path=None, overrides=None, base=None):
        seen["base"] = base
        raise config.ConfigError("x", "stop here")

    monkeypatch.setattr(config, "load_config", fake_load)
    res = runner.invoke(app, ["run"])
    assert res.exit_code == 2 and seen["base"] == DEMO_RUN
    assert "running the demo" in res.output and "configs/demo.yaml" in res.output
    res = runner.invoke(app, ["run", "--demo", "--set", "fl.rounds=1"])
    assert seen["base"] == DEMO_RUN
    res = runner.invoke(app, ["run", "--set", "fl.rounds=1"])
    assert seen["base"] is None and "running the demo" not in res.output


def test_demo_with_a_config_is_a_user_error(tmp_path):
    res = runner.invoke(app, ["run", "--demo", str(ROOT / "configs" / "demo.yaml")])
    assert res.exit_code == 2 and "--demo" in res.output


def test_demo_flag_runs_the_demo(tmp_path):
    res = runner.invoke(app, ["run", "--quiet", "--demo", "--set", "fl.rounds=1", "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert s["attack"]["name"] == "backdoor" and s["final_backdoor_acc"] is not None


def test_the_readme_defaults_table_is_the_library_defaults():
    import re

    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Defaults") : text.index("## ", text.index("## Defaults") + 3)]
    lib = ExperimentConfig().model_dump()
    rows = re.findall(r"^\| (`[^|]+) \| ([^|]+) \|$", table, flags=re.M)
    assert len(rows) == 8
    for keys, values in rows:
        keys = re.findall(r"`([^`]+)`", keys)
        # the value of each key is the first backquoted word of its cell ("all (`null`)" -> null)
        values = [v.strip() for v in values.split(",")]
        assert len(keys) == len(values), (keys, values)
        for key, value in zip(keys, values):
            node = lib
            for part in key.split("."):
                node = node[part]
            shown = re.findall(r"`([^`]+)`", value)[0]
            assert shown == ("null" if node is None else str(node)), (key, shown, node)
