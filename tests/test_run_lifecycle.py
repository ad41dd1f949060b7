"""A run never loses or mixes results: folders, records round by round, statuses, exit
codes, Ctrl-C, checkpoints and --resume (byte-identical records after kill -9)."""

import json
import multiprocessing
import os
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fedarena.cli import app
from fedarena.config import DEFAULT_RUN, load_config
from fedarena.core.state import _SKIP, Stateful, decode, encode
from fedarena.run.records import new_run_dir, read_jsonl
from fedarena.run.runner import execute
from fedarena.run.simulation import Simulation

runner = CliRunner()
SMALL = ["fl.num_clients=6", "attack.num_malicious=1", "fl.local_epochs=1"]


# ---------------------------------------------------------------- state protocol
class _Thing(Stateful):
    state_exclude = ("_scratch",)

    def __init__(self):
        self.center = torch.arange(3.0)
        self.history = {3: torch.ones(2), 7: torch.zeros(2)}
        self.mask = np.array([True, False])
        self.pair = (1, 2.5, None)
        self.gen = torch.Generator().manual_seed(5)
        self.rng = np.random.default_rng(3)
        self._scratch = torch.zeros(1000)
        self.layout = object()  # rebuilt from the config, not state


def test_stateful_default_captures_plain_state_and_loads_with_weights_only(tmp_path):
    a = _Thing()
    torch.rand(3, generator=a.gen), a.rng.random()  # advance both generators
    torch.save(a.state_dict(), tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    assert set(state) == {"center", "history", "mask", "pair", "gen", "rng"}
    b = _Thing()
    b.load_state_dict(state)
    assert torch.equal(b.center, a.center) and torch.equal(b.history[7], a.history[7])
    assert b.mask.tolist() == [True, False] and b.pair == (1, 2.5, None)
    assert torch.randint(0, 10**9, (1,), generator=b.gen) == torch.randint(0, 10**9, (1,), generator=a.gen)
    assert b.rng.random() == a.rng.random()
    assert decode(encode([np.float32(1.5), "x"])) == [1.5, "x"]


def test_aggregator_and_attack_state_is_in_the_checkpoint():
    from fedarena.run.checkpoint import simulation_state

    sim = Simulation(load_config(None, SMALL + ["fl.rounds=2", "defense.name=foolsgold"], base=DEFAULT_RUN))
    sim.run()
    state = simulation_state(sim)
    assert state["attrs"]["next_round"] == 2
    assert len(state["components"]["pipeline"]["stages"][0]["memory"]) == 6  # FoolsGold's history per client
    sim = Simulation(load_config(None, SMALL + ["fl.rounds=2", "defense.name=cc"], base=DEFAULT_RUN))
    sim.run()
    assert simulation_state(sim)["components"]["pipeline"]["stages"][0]["center"].shape == (sim.layout.dim,)


# ---------------------------------------------------------------- folders
def _concurrent_run(root: str, i: int) -> None:
    torch.set_num_threads(1)
    cfg = load_config(None, SMALL + ["fl.rounds=1", f"seed={i}"], base=DEFAULT_RUN)
    execute(new_run_dir(cfg.name, root, stamp="20260101-000000"), cfg, plot=False)


def test_concurrent_runs_with_default_folders_lose_nothing(tmp_path):
    """Six processes start runs with the same name in the same second: six folders."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_concurrent_run, args=(str(tmp_path), i)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    dirs = sorted(tmp_path.iterdir())
    assert len(dirs) == 6
    seeds = sorted(json.loads((d / "summary.json").read_text())["seed"] for d in dirs)
    assert seeds == list(range(6))
    assert all(json.loads((d / "summary.json").read_text())["status"] == "ok" for d in dirs)


def test_out_checks_come_before_round_0(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    cases = {
        str(tmp_path / "file"): "is a file",
        str(tmp_path / "full"): "is not empty",
        str(tmp_path / ("n" * 300)): "too long",
        str(tmp_path / "file" / "sub"): "cannot create",
    }
    for out, words in cases.items():
        start = time.perf_counter()
        res = runner.invoke(app, ["run", "--quiet", "--set", "fl.rounds=50", "--out", out])
        assert res.exit_code == 2 and words in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
        assert time.perf_counter() - start < 5  # no round was played
    res = runner.invoke(app, ["run", "--quiet", "--overwrite", "--set", "fl.rounds=1", "--out", str(tmp_path / "full")])
    assert res.exit_code == 0 and (tmp_path / "full" / "notes.txt").read_text() == "mine"
    assert json.loads((tmp_path / "full" / "summary.json").read_text())["status"] == "ok"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_out_not_writable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    res = runner.invoke(app, ["run", "--quiet", "--out", str(ro / "x")])
    assert res.exit_code == 2 and "cannot" in res.output


def test_default_folder_is_never_reused(tmp_path):
    a = new_run_dir("x", tmp_path, stamp="s")
    b = new_run_dir("x", tmp_path, stamp="s")
    assert a != b and b.name == "s-x-2"


# ---------------------------------------------------------------- statuses and exit codes
DIVERGE = [
    "fl.algorithm=fedsgd",
    "fl.client_momentum=0.9",
    "attack.name=gaussian",
    "attack.sigma=1e20",
    "attack.num_malicious=9",
    "fl.rounds=3",
]


@pytest.mark.parametrize("defense", ["fedavg", "foolsgold", "invariant", "rlr"])
def test_nan_loss_or_params_is_diverged_with_exit_code_3(tmp_path, defense):
    args = ["run", "--quiet", "--out", str(tmp_path / "r"), "--set", f"defense.name={defense}"]
    res = runner.invoke(app, args + [a for o in DIVERGE for a in ("--set", o)])
    assert res.exit_code == 3, res.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_at"] == 0 and "NaN/Inf" in summary["error"]


def test_ctrl_c_writes_what_it_has_exit_130_then_resume_matches(tmp_path, interrupt_at):
    over = SMALL + ["fl.rounds=6", "run.checkpoint_every=2"]
    sets = [a for o in over for a in ("--set", o)]
    assert runner.invoke(app, ["run", "--quiet", "--out", str(tmp_path / "ref")] + sets).exit_code == 0
    interrupt_at(4)
    res = runner.invoke(app, ["run", "--quiet", "--out", str(tmp_path / "cut")] + sets)
    assert res.exit_code == 130, res.output
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds_completed"] == 4
    assert len(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == 4
    interrupt_at(None)
    res = runner.invoke(app, ["run", "--quiet", "--resume", str(tmp_path / "cut")])
    assert res.exit_code == 0, res.output
    for f in ("metrics.jsonl", "clients.jsonl", "rounds.jsonl"):
        assert (tmp_path / "cut" / f).read_bytes() == (tmp_path / "ref" / f).read_bytes()
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert (
        summary["status"] == "ok" and summary["resumed_from"] == 4 and not (tmp_path / "cut" / "checkpoint.pt").exists()
    )


def test_kill_9_mid_run_then_resume_is_byte_identical(tmp_path, kill_slow_cli):
    over = SMALL + ["fl.rounds=24", "run.checkpoint_every=3", "defense.name=foolsgold", "fl.clients_per_round=4"]
    sets = [a for o in over for a in ("--set", o)]
    metrics = tmp_path / "cut" / "metrics.jsonl"
    kill_slow_cli(["run", "--quiet", "--out", str(tmp_path / "cut")] + sets, metrics, 8)
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["status"] == "running"
    done = len(metrics.read_text().splitlines())
    assert 8 <= done < 24 and (tmp_path / "cut" / "checkpoint.pt").exists()
    assert runner.invoke(app, ["run", "--quiet", "--resume", str(tmp_path / "cut")]).exit_code == 0
    assert runner.invoke(app, ["run", "--quiet", "--out", str(tmp_path / "ref")] + sets).exit_code == 0
    for f in ("metrics.jsonl", "clients.jsonl", "rounds.jsonl"):
        assert (tmp_path / "cut" / f).read_bytes() == (tmp_path / "ref" / f).read_bytes(), f
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["resumed_from"] > 0


def test_resume_refuses_other_options(tmp_path):
    assert runner.invoke(app, ["run", "--quiet", "--set", "fl.rounds=1", "--out", str(tmp_path / "r")]).exit_code == 0
    res = runner.invoke(app, ["run", "--resume", str(tmp_path / "r"), "--set", "fl.rounds=3"])
    assert res.exit_code == 2 and "--resume" in res.output
    res = runner.invoke(app, ["run", "--resume", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no run" in res.output
    res = runner.invoke(app, ["run", "--quiet", "--resume", str(tmp_path / "r")])  # finished: nothing to do
    assert res.exit_code == 0


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize(
    "over",
    [
        ["fl.client_state=persistent", "fl.optimizer=adam", "fl.lr=0.01", "fl.clients_per_round=3"],
        ["fl.algorithm=fedsgd", "fl.client_momentum=0.9", "defense.name=cc"],
    ],
)
def test_every_attribute_a_round_changes_is_saved_by_checkpoints(over):
    """Guard for new per-run state: whatever a round changes on the Simulation must be in
    Simulation.STATE_ATTRS (or live in a Stateful component), or --resume would drift."""
    sim = Simulation(load_config(None, SMALL + ["fl.rounds=2"] + over, base=DEFAULT_RUN))
    plain = {k: v for k, v in vars(sim).items() if not isinstance(v, Stateful)}
    before = {k: decode(encode(v)) for k, v in plain.items() if encode(v) is not _SKIP}
    sim.run()
    changed = {k for k, v in before.items() if not _same(v, getattr(sim, k))}
    assert changed and changed <= set(Simulation.STATE_ATTRS), changed - set(Simulation.STATE_ATTRS)
