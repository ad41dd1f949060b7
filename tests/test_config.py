"""Config loading, overrides and one-line errors."""

import subprocess
import sys

import pytest

from fedarena.config import DEFAULT_RUN, apply_override, load_config, parse_value
from fedarena.errors import ConfigError


def test_defaults_and_overrides():
    cfg = load_config(
        None,
        ["fl.rounds=7", "defense.weighted=true", "attack.name=backdoor", "attack.num_malicious=2", "attack.target=3"],
    )
    assert cfg.fl.rounds == 7 and cfg.defense.weighted is True
    assert cfg.attack.params() == {"target": 3}
    assert cfg.model_name == "mlp"  # auto for digits
    assert load_config(None, ["data.dataset=fashion-mnist"]).model_name == "cnn"


def test_parse_value_types():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("null") is None and parse_value("abc") == "abc"


def test_yaml_file_and_override(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nfl:\n  rounds: 4\n  lr: 0.05\n")
    cfg = load_config(p, ["fl.rounds=5"])
    assert (cfg.name, cfg.fl.rounds, cfg.fl.lr) == ("x", 5, 0.05)


@pytest.mark.parametrize(
    "overrides, field, words",
    [
        (["fl.bogus=1"], "fl.bogus", "unknown key"),
        (["fl.lr=-1"], "fl.lr", "greater than 0"),
        (
            ["fl.num_clients=5", "attack.name=backdoor", "attack.num_malicious=6"],
            "attack.num_malicious",
            "<= fl.num_clients",
        ),
        (["fl.num_clients=5", "fl.clients_per_round=6"], "fl.clients_per_round", "<= fl.num_clients"),
        (["attack.name=backdoor"], "attack.num_malicious", ">= 1"),
        (["attack.name=nosuch", "attack.num_malicious=1"], "attack.name", "unknown attack"),
        (["defense.name=nosuch"], "defense.name", "unknown defense"),
        (["data.dataset=nosuch"], "data.dataset", "unknown dataset"),
        (["data.partition=nosuch"], "data.partition", "unknown partition"),
        (["model.name=nosuch"], "model.name", "unknown model"),
        (["attack.name=backdoor", "attack.num_malicious=1", "attack.poison_frac=abc"], "attack.poison_frac", "number"),
        (["attack.name=backdoor", "attack.num_malicious=1", "attack.nme=3"], "attack.nme", "unknown parameter"),
        (["fl.algorithm=fedprox"], "fl.algorithm", "fedavg"),
    ],
)
def test_config_errors_name_the_field(overrides, field, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    msg = str(e.value)
    assert msg.startswith(field + ":"), msg
    assert words in msg, msg
    assert "\n" not in msg


def test_override_syntax_error():
    with pytest.raises(ConfigError, match="--set"):
        apply_override({}, "fl.rounds")


def test_default_run_is_valid():
    cfg = load_config(None, None, base=DEFAULT_RUN)
    assert cfg.attack.num_malicious == 4 and cfg.fl.num_clients == 20 and cfg.fl.rounds == 30


def test_declared_f_default_and_explicit():
    cfg = load_config(
        None, ["fl.num_clients=20", "fl.clients_per_round=10", "attack.name=backdoor", "attack.num_malicious=4"]
    )
    assert cfg.declared_f == 2  # expected attackers in a cohort, fixed
    assert load_config(None, ["defense.f=3"]).declared_f == 3


def test_cli_user_error_is_one_line_exit_2():
    r = subprocess.run(
        [sys.executable, "-m", "fedarena.cli", "run", "--quiet", "--set", "fl.lr=-1"], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "fl.lr" in lines[0]


def test_switching_attack_drops_the_old_attacks_parameters():
    cfg = load_config(None, ["attack.name=label-flip"], base=DEFAULT_RUN)
    assert cfg.attack.name == "label-flip" and cfg.attack.params() == {} and cfg.attack.num_malicious == 4
    cfg = load_config(None, ["attack.name=backdoor", "attack.target=2"], base=DEFAULT_RUN)
    assert cfg.attack.params()["target"] == 2 and cfg.attack.params()["poison_frac"] == 0.5


def test_bucketing_error_names_the_rows():
    with pytest.raises(ConfigError, match="after bucketing: 20 clients -> 7 rows"):
        from fedarena.run.simulation import Simulation

        Simulation(load_config(None, ["defense.name=bulyan", "defense.bucketing=3", "defense.f=2"]))


def test_stage_option_without_its_stage_is_an_error():
    with pytest.raises(ConfigError, match="defense.clip_at: only applies when defense.clip is set"):
        load_config(None, ["defense.clip_at=client"])
    assert load_config(None, ["defense.clip=1.0", "defense.clip_at=client"]).defense.params()["clip_at"] == "client"


def test_plugin_parameters_set_before_the_plugin_name_are_kept():
    """``--set defense.tau=0.5 --set defense.name=cc`` means what it says, in either order;
    only the replaced plugin's own parameters (from the file or the base) are dropped."""
    for order in (["defense.tau=0.5", "defense.name=cc"], ["defense.name=cc", "defense.tau=0.5"]):
        assert load_config(None, order).defense.params() == {"tau": 0.5}
    assert (
        load_config(None, ["defense.name=median"], base={"defense": {"name": "cc", "tau": 2.0}}).defense.params() == {}
    )
    with pytest.raises(ConfigError, match="defense.tau: unknown parameter for defense 'median'"):
        load_config(None, ["defense.tau=0.5", "defense.name=median"])
