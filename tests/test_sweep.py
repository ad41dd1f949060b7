"""Sweeps: spec expansion, worker processes, the index, resume after kill -9, divergence
as a result, and the Ray backend."""

import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from fedarena.cli import app
from fedarena.errors import ConfigError
from fedarena.studies.spec import SweepSpec, run_name
from fedarena.studies.sweep import index_entries, run_sweep

runner = CliRunner()
BASE = {"fl": {"num_clients": 5, "rounds": 2, "local_epochs": 1}}


def test_spec_grid_blocks_dotted_keys_and_variants():
    spec = SweepSpec.from_tree(
        {
            "name": "s",
            "base": BASE,
            "grid": {
                "attack": [
                    {"name": "none"},
                    {"name": "backdoor", "num_malicious": 1},
                    {"name": "backdoor", "num_malicious": 2},
                ],
                "defense": [{"name": "median"}],
                "fl.lr": [0.1, 0.05],
            },
            "variants": {"iid": {}, "dir": {"data": {"partition": "dirichlet", "alpha": 0.5}}},
        }
    )
    jobs = spec.jobs()
    assert len(jobs) == 2 * 3 * 2
    ids = [j.run_id for j in jobs]
    assert ids[0] == "iid,none,median,lr=0.1" and "dir,backdoor(num_malicious=2),median,lr=0.05" in ids
    j = next(j for j in jobs if j.run_id == "dir,backdoor(num_malicious=1),median,lr=0.05")
    cfg = j.validated()
    assert cfg.data.partition == "dirichlet" and cfg.attack.num_malicious == 1 and cfg.fl.lr == 0.05
    assert cfg.fl.rounds == 2 and cfg.name == run_name(j.run_id)
    assert j.labels == {"variant": "dir", "attack": "backdoor(num_malicious=1)", "defense": "median", "fl.lr": 0.05}


def test_spec_errors_name_the_key():
    with pytest.raises(ConfigError, match="spec.gird"):
        SweepSpec.from_tree({"gird": {}})
    with pytest.raises(ConfigError, match="spec.grid.seed"):
        SweepSpec.from_tree({"grid": {"seed": 3}})
    with pytest.raises(ConfigError, match=r"defense.name \(run nosuch,seed=0\): unknown defense"):
        SweepSpec.from_tree({"grid": {"defense": [{"name": "nosuch"}], "seed": [0]}}).jobs()


def _spec(tmp_path, grid, rounds=2, extra=None):
    path = tmp_path / "spec.yaml"
    base = {"fl": {"num_clients": 5, "rounds": rounds}, **(extra or {})}
    path.write_text(yaml.safe_dump({"name": "t", "base": base, "grid": grid}))
    return path


def test_sweep_cli_workers_table_and_rerun_skips(tmp_path):
    spec = _spec(tmp_path, {"defense": [{"name": "fedavg"}, {"name": "median"}], "seed": [0]})
    out = tmp_path / "sw"
    res = runner.invoke(app, ["sweep", str(spec), "--workers", "2", "--quiet", "--out", str(out)])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(out / "results.parquet")
    assert list(table["run"]) == ["fedavg,seed=0", "median,seed=0"]
    assert set(table["status"]) == {"ok"} and table["final_main_acc"].notna().all()
    assert {"defense", "seed", "dataset", "mean_main_acc", "wall_time_s"} <= set(table.columns)
    assert len(pd.read_csv(out / "results.csv")) == 2
    res = runner.invoke(app, ["sweep", str(spec), "--quiet", "--out", str(out)])
    assert res.exit_code == 0 and "0 runs played" in res.output and "2 already finished" in res.output
    assert len(index_entries(out)) == 2


def test_finished_runs_written_by_an_earlier_version_are_not_replayed(tmp_path):
    # a study folder from before the client-side defenses were registered: every config.yaml
    # held the four LeadFL keys at their defaults, and the index holds the sha of that text
    spec = _spec(tmp_path, {"defense": [{"name": "fedavg"}, {"name": "median"}], "seed": [0]})
    out = tmp_path / "sw"
    assert runner.invoke(app, ["sweep", str(spec), "--quiet", "--out", str(out)]).exit_code == 0
    for cfg_file in (out / "runs").glob("*/config.yaml"):
        tree = yaml.safe_load(cfg_file.read_text())
        tree["defense"].update(client_variant="ref", regular_weight=0.4, pert_strength=0.2, double_task_step=True)
        cfg_file.write_text(yaml.safe_dump(tree, sort_keys=False))
    index = out / "index.jsonl"
    index.write_text("".join(json.dumps({**e, "config_sha": "0" * 16}) + "\n" for e in index_entries(out)))
    res = runner.invoke(app, ["sweep", str(spec), "--quiet", "--out", str(out)])
    assert res.exit_code == 0 and "0 runs played" in res.output and "2 already finished" in res.output, res.output
    # a stored run of another config is still replayed
    cfg_file = next((out / "runs").glob("median*/config.yaml"))
    tree = yaml.safe_load(cfg_file.read_text())
    tree["fl"]["rounds"] = 1
    cfg_file.write_text(yaml.safe_dump(tree, sort_keys=False))
    index.write_text("".join(json.dumps({**e, "config_sha": "0" * 16}) + "\n" for e in index_entries(out)))
    res = runner.invoke(app, ["sweep", str(spec), "--quiet", "--out", str(out)])
    assert res.exit_code == 0 and "1 runs played" in res.output and "1 already finished" in res.output, res.output


def test_sweep_records_divergence_as_a_result(tmp_path):
    grid = {"defense": [{"name": "fedavg"}, {"name": "median"}]}
    extra = {
        "fl": {"num_clients": 10, "rounds": 2, "algorithm": "fedsgd", "client_momentum": 0.9},
        "attack": {"name": "gaussian", "sigma": 1e20, "num_malicious": 4},
    }
    jobs = SweepSpec.from_tree({"base": extra, "grid": grid}).jobs()
    outcome = run_sweep(jobs, tmp_path)
    status = dict(zip(outcome.table["run"], outcome.table["status"]))
    assert status == {"fedavg": "diverged", "median": "ok"}
    assert outcome.table.set_index("run").loc["fedavg", "diverged_at"] == 0
    again = run_sweep(jobs, tmp_path)
    assert again.ran == [] and sorted(again.skipped) == ["fedavg", "median"]


def test_sweep_killed_midway_loses_nothing_and_reruns_no_finished_run(tmp_path, kill_slow_cli):
    """The first run has its own model, so it plays first and finishes; the other two
    share one and play in lockstep, killed in the middle; the rerun resumes those two
    from their checkpoints and does not play the finished one again."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "base": {"fl": {"num_clients": 5, "rounds": 8}, "run": {"checkpoint_every": 2}},
                "variants": {"a": {"model": {"name": "mlp", "hidden": [16]}}, "b": {}},
                "grid": {"defense": [{"name": "median"}, {"name": "cc"}]},
            }
        )
    )
    out = tmp_path / "sw"
    second = out / "runs" / "b,median" / "metrics.jsonl"
    kill_slow_cli(["sweep", str(spec), "--quiet", "--out", str(out)], second, 5)
    assert [e["run"] for e in index_entries(out)] == ["a,median", "a,cc"]
    first_metrics = (out / "runs" / "a,median" / "metrics.jsonl").read_bytes()
    outcome = run_sweep(SweepSpec.load(spec).jobs(), out)
    assert outcome.skipped == ["a,median", "a,cc"] and outcome.resumed == ["b,median", "b,cc"]
    assert outcome.ran == ["b,median", "b,cc"]
    assert [e["run"] for e in index_entries(out)] == ["a,median", "a,cc", "b,median", "b,cc"]  # nothing indexed twice
    assert (out / "runs" / "a,median" / "metrics.jsonl").read_bytes() == first_metrics
    summaries = {d: json.loads((out / "runs" / d / "summary.json").read_text()) for d in ("b,median", "b,cc")}
    assert all(s["status"] == "ok" and s["rounds_completed"] == 8 for s in summaries.values())
    assert all(s["resumed_from"] >= 4 for s in summaries.values())
    assert len(outcome.table) == 4 and (outcome.table["rounds_completed"] == 8).all()


def test_ray_backend_four_runs(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # workers inherit PYTHONPATH
    try:
        jobs = SweepSpec.from_tree(
            {"base": BASE, "grid": {"defense": [{"name": "fedavg"}, {"name": "median"}], "seed": [0, 1]}}
        ).jobs()
        outcome = run_sweep(jobs, tmp_path / "ray", backend="ray")
        local = run_sweep(jobs, tmp_path / "local")
    finally:
        ray.shutdown()
    assert sorted(outcome.ran) == sorted(j.run_id for j in jobs)
    cols = ["run", "status", "final_main_acc", "final_loss"]
    assert outcome.table[cols].equals(local.table[cols])


def test_killed_reproduction_continues_where_it_stopped(tmp_path, monkeypatch):
    from fedarena.registry import PAPERS
    from fedarena.reproduce.framework import Claim, Paper, run_reproduction
    from fedarena.run.simulation import Simulation

    if "toy-resume" not in PAPERS:

        @PAPERS.register("toy-resume")
        class _Toy(Paper):
            """Two tiny runs."""

            def runs(self, quick):  # different models: two lockstep groups, played one after the other
                return {"a": {**BASE, "seed": 0}, "b": {**BASE, "seed": 1, "model": {"name": "mlp", "hidden": [32]}}}

            def claims(self, quick):
                return [
                    Claim("C1", "accuracy is a share", 1.0, lambda r: r.final("b", "main_acc"), lambda v: 0 <= v <= 1)
                ]

    real = Simulation.plan_round

    def stop_in_b(self, t):
        if self.cfg.seed == 1 and t == 1:
            raise KeyboardInterrupt
        return real(self, t)

    monkeypatch.setattr(Simulation, "plan_round", stop_in_b)
    with pytest.raises(KeyboardInterrupt):
        run_reproduction("toy-resume", quick=True, out=tmp_path)
    assert [e["run"] for e in index_entries(tmp_path)] == ["a"]
    monkeypatch.setattr(Simulation, "plan_round", real)
    report = run_reproduction("toy-resume", quick=True, out=tmp_path)
    assert [e["run"] for e in index_entries(tmp_path)] == ["a", "b"] and report.claims[0].verdict == "pass"
