"""The backdoor arena's grid (``fedarena arena --backdoor``) and the durability column of the report."""

import pandas as pd

from fedarena.config import load_config
from fedarena.run.records import write_run
from fedarena.run.simulation import Simulation
from fedarena.studies.backdoor_arena import backdoor_arena_jobs
from fedarena.studies.report import build_report


def test_grid_runs_have_short_distinct_attack_labels_and_valid_configs():
    jobs = backdoor_arena_jobs()
    assert len(jobs) == 8 * 10 * 2 and len({j.run_id for j in jobs}) == len(jobs)
    assert {j.labels["attack"] for j in jobs} == {
        "none",
        "backdoor",
        "blended",
        "neurotoxin",
        "a3fl",
        "replace",
        "chameleon",
        "iba",
    }
    assert {"deepsight", "crfl", "flare", "alignins"} <= {j.labels["defense"] for j in jobs}
    for j in jobs:
        j.validated()
        assert j.config["name"] == j.run_id.replace(" ", "-")


def test_report_shows_durability_per_attack_and_defense(tmp_path):
    for seed in (0, 1):
        r = Simulation(
            load_config(
                None,
                [
                    "fl.num_clients=8",
                    "fl.rounds=5",
                    "attack.name=backdoor",
                    "attack.num_malicious=2",
                    "attack.end_round=2",
                    f"seed={seed}",
                    f"name=bd-{seed}",
                ],
            )
        ).run()
        write_run(r, tmp_path / f"bd-{seed}", plot=False)
    build_report([tmp_path], tmp_path / "report")
    cells = pd.read_csv(tmp_path / "report" / "cells.csv")
    runs = [pd.read_json(tmp_path / f"bd-{s}" / "summary.json", typ="series")["backdoor_durability"] for s in (0, 1)]
    assert cells["durability"].iloc[0] == sum(runs) / 2
    assert "durability" in (tmp_path / "report" / "report.md").read_text()
