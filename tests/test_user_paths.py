"""User-facing paths that no other test runs: every shipped config and example loads and
plays one round, the arena's grid (and its tuning grid) validates, and the CLI's
`reproduce --workers` and `sweep --backend ray` work end to end (Ray: skipped without it)."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fedarena.cli import app
from fedarena.config import load_config
from fedarena.errors import DataNotFoundError
from fedarena.run.simulation import Simulation
from fedarena.studies.spec import SweepSpec

import test_reproduce_framework  # noqa: F401  (registers the toy-crash reproduction)

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
runner = CliRunner()


def test_there_are_shipped_configs_and_examples():
    assert {p.name for p in CONFIGS} >= {"demo.yaml", "digits-alie-cc-fedsgd.yaml", "fmnist-cnn-fedavg.yaml"}
    assert [p.name for p in EXAMPLES] == ["sweep.yaml", "tuned-sweep.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_each_shipped_config_loads_and_plays_one_round(path):
    # one round, never a download: a config that needs Fashion-MNIST reads the offline copy
    # ($FEDARENA_DATA or ../shared/data) and skips when there is none
    from conftest import find_shared_data

    over = ["fl.rounds=1", "data.download=false", "run.checkpoint_every=0"]
    if yaml.safe_load(path.read_text()).get("data", {}).get("dataset") not in (None, "digits", "synthetic"):
        root = find_shared_data()
        if root is None:
            pytest.skip(f"{path.name}: no offline data")
        over += [f"data.root={root}", "eval.test_samples=500"]
    cfg = load_config(path, over)
    try:
        sim = Simulation(cfg)
    except DataNotFoundError as e:
        pytest.skip(f"{path.name}: {str(e).splitlines()[0]}")
    result = sim.run()
    assert result.summary["status"] == "ok" and result.summary["rounds_completed"] == 1
    assert 0.0 <= result.summary["final_main_acc"] <= 1.0


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_spec_validates_and_its_first_run_plays_a_round(path):
    spec = SweepSpec.load(path)
    jobs = spec.jobs()
    assert len(jobs) == spec.size > 1
    if spec.select:  # its tuning runs validate too, on the validation split
        from fedarena.studies.select import selection_of, tuning_spec

        assert all(j.validated().eval.split == "validation" for j in tuning_spec(spec, selection_of(spec)).jobs())
    tree = yaml.safe_load(yaml.safe_dump(jobs[0].config))
    tree["fl"]["rounds"] = 1
    result = Simulation(load_config(None, ["run.checkpoint_every=0"], base=tree)).run()
    assert result.summary["status"] == "ok"


def test_the_arena_grid_and_its_tuning_grid_validate():
    from fedarena.studies.arena import arena_spec
    from fedarena.studies.select import selection_of, tuning_spec

    spec = arena_spec()
    jobs = spec.jobs()  # every run validated
    assert len(jobs) == 5 * 6 * 5
    assert {j.labels["seed"] for j in jobs} == {0, 1, 2, 3, 4}
    sel = selection_of(spec)
    tjobs = tuning_spec(spec, sel).jobs()
    # trimmed-mean 3 + multi-krum 3 + foolsgold 2 + rlr 2 candidates, x 5 attacks x 1 tuning seed
    assert len(tjobs) == 10 * 5
    assert all(j.validated().eval.split == "validation" for j in tjobs)


def test_reproduce_with_workers_from_the_cli(tmp_path):
    res = runner.invoke(app, ["reproduce", "toy-crash", "--quick", "--workers", "2", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "claims.json").read_text())
    assert {c["id"]: c["verdict"] for c in data["claims"]} == {"G": "pass", "B": "pass", "K": "pass"}
    assert data["runs_total"] == 2 and not data["runs_failed"]


def test_sweep_on_ray_from_the_cli(tmp_path):
    pytest.importorskip("ray")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: ray-cli\nbase: {fl: {num_clients: 4, rounds: 1}}\ngrid: {defense: [{name: fedavg}, {name: median}]}\n"
    )
    res = runner.invoke(
        app, ["sweep", str(spec), "--backend", "ray", "--workers", "2", "--quiet", "--out", str(tmp_path / "sw")]
    )
    assert res.exit_code == 0, res.output
    index = [json.loads(line) for line in (tmp_path / "sw" / "index.jsonl").read_text().splitlines()]
    assert sorted(e["run"] for e in index) == ["fedavg", "median"] and all(e["status"] == "ok" for e in index)
