"""--track mlflow / tensorboard: per-round metrics, the resolved config as parameters, the
report as artifacts; offline (a local file store / log folder); skipped without the extra."""

import sys

import pytest
from typer.testing import CliRunner

from fedarena.cli import app
from fedarena.tracking import flatten, numbers

runner = CliRunner()
SMALL = [
    "--set",
    "fl.rounds=2",
    "--set",
    "fl.num_clients=5",
    "--set",
    "attack.name=backdoor",
    "--set",
    "attack.num_malicious=1",
]


def test_flatten_and_numbers():
    assert flatten({"fl": {"lr": 0.1, "lr_decay_at": [1, 2]}, "name": "x", "f": None}) == {
        "fl.lr": 0.1,
        "fl.lr_decay_at": "[1, 2]",
        "name": "x",
        "f": "null",
    }
    assert numbers({"round": 3, "main_acc": 0.5, "ok": True, "bad": float("nan"), "s": "x", "n": 2}) == {
        "main_acc": 0.5,
        "n": 2.0,
    }


def test_mlflow_run_is_in_the_file_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    res = runner.invoke(
        app, ["run", "--quiet", "--track", "mlflow", "--track-uri", uri, "--out", str(tmp_path / "r")] + SMALL
    )
    assert res.exit_code == 0, res.output
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("fedarena")
    (run,) = client.search_runs([exp.experiment_id])
    history = client.get_metric_history(run.info.run_id, "main_acc")
    assert [m.step for m in history] == [0, 1]  # one value per evaluated round
    assert len(client.get_metric_history(run.info.run_id, "backdoor_acc")) == 2
    assert run.data.params["fl.rounds"] == "2" and run.data.params["attack.name"] == "backdoor"
    assert run.data.params["fl.local_epochs"] == "1"  # the resolved config: defaults filled in
    assert run.data.tags["fedarena.status"] == "ok" and run.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"summary.json", "config.yaml", "curves.png"}
    assert run.data.metrics["final_main_acc"] == pytest.approx(history[-1].value)


def test_mlflow_study_nests_its_runs(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: tiny\nbase: {fl: {num_clients: 5, rounds: 1}}\ngrid: {defense: [{name: fedavg}, {name: median}]}\n"
    )
    uri = (tmp_path / "mlruns").as_uri()
    res = runner.invoke(
        app, ["sweep", str(spec), "--quiet", "--out", str(tmp_path / "sw"), "--track", "mlflow", "--track-uri", uri]
    )
    assert res.exit_code == 0, res.output
    client = mlflow.tracking.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("fedarena").experiment_id])
    parent = [r for r in runs if r.data.tags.get("fedarena.kind") == "study"]
    assert len(parent) == 1 and len(runs) == 3
    assert all(r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id for r in runs if r not in parent)
    assert [a.path for a in client.list_artifacts(parent[0].info.run_id)] == ["results.csv"]


def test_tensorboard_run_logs_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = runner.invoke(
        app,
        ["run", "--quiet", "--track", "tensorboard", "--track-uri", str(tmp_path / "tb"), "--out", str(tmp_path / "r")]
        + SMALL,
    )
    assert res.exit_code == 0, res.output
    (logdir,) = (tmp_path / "tb").iterdir()
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    assert [e.step for e in acc.Scalars("main_acc")] == [0, 1]
    assert "config/text_summary" in acc.Tags()["tensors"]


def test_missing_extra_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    res = runner.invoke(app, ["run", "--quiet", "--track", "mlflow", "--out", str(tmp_path / "r")] + SMALL)
    assert res.exit_code == 2 and 'pip install "fedarena[mlflow]"' in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    res = runner.invoke(app, ["run", "--quiet", "--track", "wandb", "--out", str(tmp_path / "w")] + SMALL)
    assert res.exit_code == 2 and "mlflow, tensorboard" in res.output


def test_an_interrupted_tracked_run_ends_killed(tmp_path, monkeypatch, interrupt_at):
    mlflow = pytest.importorskip("mlflow")

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    interrupt_at(1)
    uri = (tmp_path / "mlruns").as_uri()
    res = runner.invoke(
        app, ["run", "--quiet", "--track", "mlflow", "--track-uri", uri, "--out", str(tmp_path / "r")] + SMALL
    )
    assert res.exit_code == 130, res.output
    client = mlflow.tracking.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("fedarena").experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["fedarena.status"] == "interrupted"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "main_acc")] == [0]  # the round it finished
