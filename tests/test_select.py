"""Worst-case tuning (select: in a sweep spec) and the validation split it tunes on."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from fedarena.config import load_config
from fedarena.data.validation import validation_indices
from fedarena.errors import ConfigError
from fedarena.run.simulation import Simulation
from fedarena.studies.select import choose, run_selected, selection_of, tuning_spec
from fedarena.studies.spec import SweepSpec
from fedarena.studies.sweep import run_sweep

SPEC = {
    "name": "t",
    "base": {"fl": {"num_clients": 6, "rounds": 1}},
    "grid": {
        "attack": [{"name": "none"}, {"name": "ipm", "num_malicious": 1}],
        "defense": [{"name": "fedavg"}, {"name": "trimmed-mean"}],
        "seed": [0, 1, 2],
    },
    "select": {"params": {"trimmed-mean": {"trim": [0, 1]}}, "seeds": [0, 1]},
}


def test_validation_split_is_held_out_stratified_and_fixed():
    labels = np.repeat(np.arange(4), 25)  # 4 classes x 25
    tr, va = validation_indices(labels, 0.2)
    assert len(va) == 20 and len(tr) == 80 and not set(tr) & set(va)
    assert np.bincount(labels[va]).tolist() == [5, 5, 5, 5]  # stratified: 0.2 x 25 per class
    assert np.array_equal(va, validation_indices(labels, 0.2)[1])  # the same split every call (every seed)
    cfg = load_config(None, ["eval.split=validation", "fl.rounds=1", "seed=3"])
    sim, test_sim = Simulation(cfg), Simulation(load_config(None, ["fl.rounds=1"]))
    # digits: 1437 training samples; 20 % held out (stratified, rounded up by scikit-learn) = 288, 1149 left
    assert (len(sim.data.y_train), len(sim.data.y_test)) == (1149, 288)
    assert len(test_sim.data.y_test) == 360  # the test split is untouched without eval.split
    full = test_sim.data.x_train.reshape(len(test_sim.data.x_train), -1)
    val = sim.data.x_test.reshape(len(sim.data.x_test), -1)
    assert all((full == v).all(1).any() for v in val[:20])  # validation samples come from the training data


def test_tuning_spec_runs_every_candidate_on_validation():
    spec = SweepSpec.from_tree(SPEC)
    tspec = tuning_spec(spec, selection_of(spec))
    jobs = tspec.jobs()
    # 2 attacks x 2 candidates (fedavg has no parameters to tune: not played) x 2 tuning seeds
    assert len(jobs) == 8
    assert {j.labels["defense"] for j in jobs} == {"trimmed-mean(trim=0)", "trimmed-mean(trim=1)"}
    assert all(j.config["eval"]["split"] == "validation" for j in jobs)
    assert {j.labels["seed"] for j in jobs} == {0, 1}


def test_choose_by_worst_case_by_hand():
    spec = SweepSpec.from_tree(SPEC)
    sel = selection_of(spec)
    tjobs = tuning_spec(spec, sel).jobs()
    # validation MA per run: trim=0: none 0.9/0.8, ipm 0.3/0.5 -> per attack 0.85, 0.40 -> worst 0.40 (ipm)
    #                        trim=1: none 0.8/0.8, ipm 0.6/0.7 -> per attack 0.80, 0.65 -> worst 0.65 (ipm)
    ma = {
        ("none", "trimmed-mean(trim=0)"): [0.9, 0.8],
        ("ipm", "trimmed-mean(trim=0)"): [0.3, 0.5],
        ("none", "trimmed-mean(trim=1)"): [0.8, 0.8],
        ("ipm", "trimmed-mean(trim=1)"): [0.6, 0.7],
    }
    rows = [
        {
            "run": j.run_id,
            "final_main_acc": ma[(j.labels["attack"], j.labels["defense"])][j.labels["seed"]],
            "final_backdoor_acc": None,
            "status": "ok",
            "num_classes": 10,
        }
        for j in tjobs
    ]
    chosen = choose(spec, sel, tjobs, pd.DataFrame(rows))
    assert len(chosen) == 1 and chosen[0]["params"] == {"trim": 1}
    assert chosen[0]["score"] == pytest.approx(0.65) and chosen[0]["worst_attack"] == "ipm"
    assert [c["score"] for c in chosen[0]["candidates"]] == pytest.approx([0.40, 0.65])
    # a diverged run counts with chance accuracy: trim=1's ipm seed 1 -> mean(0.6, 0.1) = 0.35 < 0.40
    for r in rows:
        if r["run"] == "ipm,trimmed-mean(trim=1),seed=1":
            r["status"] = "diverged"
    assert choose(spec, sel, tjobs, pd.DataFrame(rows))[0]["params"] == {"trim": 0}


def test_selected_sweep_plays_the_chosen_value_on_test(tmp_path):
    spec = SweepSpec.from_tree(SPEC)
    jobs, chosen = run_selected(spec, spec.jobs(), tmp_path, lambda j, folder: run_sweep(j, folder).table)
    trim = chosen[0]["params"]["trim"]
    assert trim in (0, 1)
    doc = json.loads((tmp_path / "selection.json").read_text())
    assert doc["chosen"][0]["params"] == {"trim": trim} and doc["split"] == "validation"
    assert len(list((tmp_path / "tuning" / "runs").iterdir())) == 8
    tuned = [j for j in jobs if j.labels["defense"] == "trimmed-mean"]
    assert len(tuned) == 6 and all(j.config["defense"]["trim"] == trim for j in tuned)
    assert all(j.config.get("eval", {}).get("split", "test") == "test" for j in jobs)  # tested on test data
    run_sweep(jobs, tmp_path)
    cfg = yaml.safe_load((tmp_path / "runs" / "ipm,trimmed-mean,seed=2" / "config.yaml").read_text())
    assert cfg["defense"]["trim"] == trim and cfg["eval"]["split"] == "test"


@pytest.mark.parametrize(
    "select, field",
    [
        ({"params": {"median": {"x": [1]}}}, "spec.select.params.median"),
        ({"params": {"trimmed-mean": {"trim": []}}}, "spec.select.params.trimmed-mean.trim"),
        ({"params": {"trimmed-mean": {"trim": [1]}}, "objective": "loss"}, "spec.select.objective"),
        ({"params": {"trimmed-mean": {"trim": [1]}}, "validation_frac": 1.5}, "spec.select.validation_frac"),
        ({"params": {"trimmed-mean": {"trim": [1]}}, "typo": 1}, "spec.select.typo"),
    ],
)
def test_bad_select_is_one_config_error(select, field):
    with pytest.raises(ConfigError) as e:
        selection_of(SweepSpec.from_tree({**SPEC, "select": select}))
    assert e.value.field == field


def test_bad_select_stops_the_sweep_command_before_any_run(tmp_path):
    from typer.testing import CliRunner

    from fedarena.cli import app

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "select": {"params": {"trimmed-mean": {"trim": [1]}}, "objective": "x"}}))
    res = CliRunner().invoke(app, ["sweep", str(spec), "--quiet", "--out", str(tmp_path / "sw")])
    assert res.exit_code == 2 and "spec.select.objective" in res.output
    assert not (tmp_path / "sw" / "tuning").exists() and not (tmp_path / "sw" / "runs").exists()


def test_report_shows_the_chosen_values(tmp_path):
    from fedarena.studies.report import build_report

    spec = SweepSpec.from_tree(SPEC)
    jobs, chosen = run_selected(spec, spec.jobs(), tmp_path, lambda j, folder: run_sweep(j, folder).table)
    run_sweep(jobs, tmp_path)
    parts = build_report([tmp_path], tmp_path / "report")
    sel = parts["selection"].set_index("defense")
    assert sel.loc["trimmed-mean", "chosen"] == f"trim={chosen[0]['params']['trim']}"
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Worst-case tuning" in md and "validation split" in md
    assert len(parts["table"]) == 12  # the report reads the test runs only, not the tuning folder
