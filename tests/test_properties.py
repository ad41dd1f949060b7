"""Property-based checks (Hypothesis): whatever a user types or a disk holds, fedarena
answers with a clean one-line error, a ``diverged`` run or an ``ok`` run, in bounded time.

- config keys: random values (huge finite numbers, wrong types, lists, nesting) for every
  declared key and every parameter of the chosen attack, defense and client-side defense;
- runs: huge and tiny values of the numeric keys that the arithmetic carries;
- file readers: records, summaries, checkpoints, configs and sweep indexes, damaged at
  random (cut, flipped bytes, random bytes);
- sweep specs: random trees.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from fedarena.config import ExperimentConfig, _model_of, load_config
from fedarena.errors import ConfigError, DamagedFileError
from fedarena.registry import ATTACKS, CLIENT_DEFENSES, DEFENSES
from fedarena.run.checkpoint import load_checkpoint, save_checkpoint
from fedarena.run.records import read_json, read_jsonl
from fedarena.run.runner import execute
from fedarena.studies.results import readable_runs
from fedarena.studies.spec import SweepSpec
from fedarena.studies.sweep import read_index

FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        sub = _model_of(field.annotation)
        out += _keys(sub, f"{prefix}{name}.") if sub is not None else [f"{prefix}{name}"]
    return out


CONFIG_KEYS = _keys(ExperimentConfig)
PLUGIN_KEYS = sorted(
    {f"attack.{p}" for a in ATTACKS.names() for p in ATTACKS.params(a)}
    | {f"defense.{p}" for d in DEFENSES.names() for p in DEFENSES.params(d)}
    | {f"defense.{p}" for c in CLIENT_DEFENSES.names() for p in CLIENT_DEFENSES.params(c)}
)

huge = st.sampled_from([1e300, -1e300, 3.5e38, -3.5e38, 1e38, 1e-300, 5e-324, 2**63, 10**18, -(10**18)])
scalars = st.one_of(
    huge,
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars, max_size=2))


def _yaml(v) -> str:
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def _one_line(e: BaseException) -> None:
    text = str(e)
    assert text and "\n" not in text and len(text) < 600, text


@FAST
@given(
    st.lists(st.tuples(st.sampled_from(CONFIG_KEYS + PLUGIN_KEYS), values), min_size=1, max_size=4),
    st.sampled_from(ATTACKS.names()),
    st.sampled_from(DEFENSES.names()),
    st.sampled_from(CLIENT_DEFENSES.names()),
)
def test_any_config_value_is_accepted_or_refused_in_one_line(pairs, attack, defense, client):
    over = [
        "data.dataset=digits",
        f"attack.name={attack}",
        f"defense.name={defense}",
        f"defense.client={client}",
        "attack.num_malicious=2",
    ]
    over += [f"{k}={_yaml(v)}" for k, v in pairs]
    try:
        cfg = load_config(None, over)
    except ConfigError as e:
        _one_line(e)
        assert "(valid: " in str(e), str(e)  # every refusal says what is valid
        return
    for f in (cfg.fl.lr, cfg.fl.weight_decay, cfg.fl.server_lr, cfg.fl.lr_decay):
        assert math.isfinite(f) and abs(f) <= 3.4028234663852886e38
    assert 1 <= cfg.fl.rounds <= 1_000_000


RUN_KEYS = [
    "fl.lr",
    "fl.weight_decay",
    "fl.server_lr",
    "fl.momentum",
    "fl.client_momentum",
    "fl.grad_clip",
    "fl.lr_decay",
    "attack.boost",
    "attack.scale",
    "attack.z",
    "attack.epsilon",
    "attack.sigma",
    "defense.pert_strength",
    "defense.clip",
    "defense.noise",
    "defense.dp_sigma",
    "defense.dp_clip",
    "defense.tau",
    "defense.theta",
]
RUN_ATTACKS = ["backdoor", "alie", "ipm", "gaussian", "train-and-scale", "minmax", "nan"]
RUN_DEFENSES = ["fedavg", "median", "trimmed-mean", "krum", "cc", "rlr", "fltrust", "foolsgold", "rfa"]


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(st.tuples(st.sampled_from(RUN_KEYS), st.one_of(huge, st.floats(-1e6, 1e6))), min_size=1, max_size=3),
    st.sampled_from(RUN_ATTACKS),
    st.sampled_from(RUN_DEFENSES),
    st.sampled_from(["none", "leadfl", "ldp"]),
    st.sampled_from([None, "local", "central"]),
)
def test_huge_values_end_ok_diverged_or_refused(tmp_path_factory, pairs, attack, defense, client, dp):
    over = [
        "data.dataset=digits",
        "fl.num_clients=8",
        "fl.rounds=2",
        "attack.num_malicious=2",
        f"attack.name={attack}",
        f"defense.name={defense}",
        f"defense.client={client}",
        "run.checkpoint_every=1",
    ]
    over += [f"defense.dp={dp}"] if dp else []
    over += ["fl.lr_decay_at=[1]"] + [f"{k}={v!r}" for k, v in pairs]
    try:
        cfg = load_config(None, over)
    except ConfigError as e:
        _one_line(e)
        return
    out = tmp_path_factory.mktemp("run")
    try:
        result = execute(out, cfg, plot=False)  # ok or diverged, or a one-line error of the set-up
    except ConfigError as e:
        _one_line(e)
        return
    assert result.summary["status"] in ("ok", "diverged"), result.summary
    if result.summary["status"] == "diverged":
        assert "round" in result.summary["error"]


# ------------------------------------------------------------------ damaged files
def _damage(data: bytes, how: str, pos: float, junk: bytes) -> bytes:
    i = int(pos * len(data))
    if how == "cut":
        return data[:i]
    if how == "flip" and data:
        j = min(i, len(data) - 1)
        return data[:j] + bytes([data[j] ^ 0xFF]) + data[j + 1 :]
    if how == "insert":
        return data[:i] + junk + data[i:]
    return junk


damage = st.tuples(st.sampled_from(["cut", "flip", "insert", "replace"]), st.floats(0, 1), st.binary(max_size=40))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    cfg = load_config(
        None,
        [
            "data.dataset=digits",
            "fl.num_clients=6",
            "fl.rounds=3",
            "fl.local_steps=1",
            "attack.name=backdoor",
            "attack.num_malicious=1",
        ],
    )
    execute(out, cfg, plot=False)
    return out


@FAST
@given(damage)
def test_records_and_summaries_read_or_name_the_file(tmp_path_factory, finished_run, how):
    tmp = tmp_path_factory.mktemp("damaged")
    for name in ("metrics.jsonl", "clients.jsonl", "summary.json"):
        path = tmp / name
        path.write_bytes(_damage((finished_run / name).read_bytes(), *how))
        try:
            (read_jsonl if name.endswith("l") else read_json)(path)
        except DamagedFileError as e:
            _one_line(e)
            assert str(path) in str(e)


@FAST
@given(damage)
def test_report_skips_a_damaged_run_and_names_it(tmp_path_factory, finished_run, how):
    import shutil

    tmp = tmp_path_factory.mktemp("report")
    run = tmp / "run"
    shutil.copytree(finished_run, run)
    name = ["config.yaml", "summary.json", "metrics.jsonl", "clients.jsonl", "rounds.jsonl"][int(how[1] * 4.99)]
    (run / name).write_bytes(_damage((run / name).read_bytes(), *how))
    good, bad = readable_runs([run])
    assert len(good) + len(bad) == 1
    if bad:
        assert "\n" not in bad[0][1]


@FAST
@given(damage)
def test_checkpoints_load_or_name_the_file(tmp_path_factory, how):
    tmp = tmp_path_factory.mktemp("ckpt")
    path = tmp / "checkpoint.pt"
    save_checkpoint(
        path, {"simulation": {"attrs": {"x": torch.arange(8.0)}}, "files": {"metrics": 10}, "wall_time_s": 1.0}
    )
    path.write_bytes(_damage(path.read_bytes(), *how))
    try:
        state = load_checkpoint(path, ("simulation", "files", "wall_time_s"))
    except DamagedFileError as e:
        _one_line(e)
        assert str(path) in str(e)
    else:
        assert isinstance(state, dict)


@FAST
@given(st.binary(max_size=300), st.lists(st.text(max_size=30), max_size=5))
def test_sweep_index_never_raises(tmp_path_factory, junk, lines):
    path = tmp_path_factory.mktemp("index") / "index.jsonl"
    path.write_bytes(junk + "\n".join(lines).encode() + b'\n{"run": "a", "status": "ok"}\n')
    assert read_index(path)["a"]["status"] == "ok"


@FAST
@given(
    st.one_of(
        values,
        st.dictionaries(st.sampled_from(["name", "base", "grid", "variants", "config", "x"]), values, max_size=4),
    )
)
def test_any_sweep_spec_is_accepted_or_refused_in_one_line(tree):
    try:
        spec = SweepSpec.from_tree(tree if isinstance(tree, dict) else {"grid": tree}, root=Path("."))
        spec.jobs(max_runs=50)
    except ConfigError as e:
        _one_line(e)


def test_cli_resume_of_a_damaged_checkpoint_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from fedarena.cli import app

    runner = CliRunner()
    sets = [
        "--set",
        "data.dataset=digits",
        "--set",
        "fl.num_clients=6",
        "--set",
        "fl.rounds=3",
        "--set",
        "fl.local_steps=1",
    ]
    assert runner.invoke(app, ["run", "--quiet", "--out", str(tmp_path / "r")] + sets).exit_code == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    (tmp_path / "r" / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    for junk in (b"", b"\x00\x01garbage", b"[1, 2, 3]"):
        (tmp_path / "r" / "checkpoint.pt").write_bytes(junk)
        res = runner.invoke(app, ["run", "--quiet", "--resume", str(tmp_path / "r")])
        assert res.exit_code == 2, res.output
        assert "checkpoint.pt" in res.output and "Traceback" not in res.output
    torch.save([1, 2], tmp_path / "r" / "checkpoint.pt")  # a valid file of the wrong shape
    res = runner.invoke(app, ["run", "--quiet", "--resume", str(tmp_path / "r")])
    assert res.exit_code == 2 and "not a fedarena checkpoint" in res.output
