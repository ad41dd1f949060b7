"""Small end-to-end runs on the bundled digits: qualitative results, determinism, faults."""

import json
import os

import numpy as np
import pytest
import torch

from fedarena.attacks.base import Attack, ThreatModel
from fedarena.config import DEFAULT_RUN, load_config
from fedarena.run.simulation import Simulation
from fedarena.run.records import read_jsonl, write_run


#: ``FEDARENA_TEST_DEVICE=cuda`` runs these end-to-end checks on a GPU (``benchmarks/gpu.sh``)
DEVICE = os.environ.get("FEDARENA_TEST_DEVICE", "cpu")


def run(overrides, base=None):
    return Simulation(load_config(None, [f"fl.device={DEVICE}", *overrides], base=base)).run()


def test_fedavg_without_attack_learns_digits():
    r = run(["fl.num_clients=20", "fl.rounds=20", "fl.local_epochs=2", "fl.batch_size=16"])
    assert r.summary["final_main_acc"] >= 0.90
    assert r.summary["final_backdoor_acc"] is None and r.summary["status"] == "ok"


def test_backdoor_with_20_percent_attackers_succeeds_under_fedavg():
    r = run([], base=DEFAULT_RUN)  # 20 clients, 4 malicious, 30 rounds
    assert r.summary["final_backdoor_acc"] >= 0.5
    assert r.summary["final_main_acc"] >= 0.85


def test_same_config_and_seed_give_identical_metrics():
    over = ["fl.rounds=4", "fl.clients_per_round=5", "attack.name=backdoor", "attack.num_malicious=3"]
    a, b = run(over), run(over)
    assert a.metrics == b.metrics
    assert [c["norm"] for c in a.clients] == [c["norm"] for c in b.clients]
    c = run(over + ["seed=1"])
    assert c.metrics != a.metrics


def test_defense_change_keeps_partition_and_sampling():
    over = ["fl.rounds=2", "fl.clients_per_round=5", "attack.name=label-flip", "attack.num_malicious=4"]
    s1 = Simulation(load_config(None, over))
    s2 = Simulation(load_config(None, over + ["defense.weighted=true"]))
    assert all(np.array_equal(a, b) for a, b in zip(s1.client_index, s2.client_index))
    assert np.array_equal(s1.malicious, s2.malicious)
    assert all(np.array_equal(s1.sample_clients(t), s2.sample_clients(t)) for t in range(5))


def test_vectorized_and_sequential_runs_agree():
    over = ["fl.rounds=3", "fl.num_clients=6", "fl.momentum=0.9", "attack.name=backdoor", "attack.num_malicious=2"]
    a, b = run(over), run(over + ["fl.vectorize=false"])
    for ma, mb in zip(a.metrics, b.metrics):
        assert ma["main_acc"] == pytest.approx(mb["main_acc"], abs=0.02)
        assert ma["loss"] == pytest.approx(mb["loss"], rel=1e-3)


def test_fedsgd_runs_and_keeps_client_momentum():
    r = run(["fl.algorithm=fedsgd", "fl.client_momentum=0.9", "fl.rounds=30", "fl.num_clients=10", "fl.lr=0.5"])
    assert r.summary["final_main_acc"] > 0.5


class _NaNAttack(Attack):
    threat = ThreatModel("own")

    def craft(self, view):
        return torch.full((len(view.malicious_ids), view.layout.dim), float("nan"))


def test_nan_update_under_fedavg_stops_with_a_message_not_a_traceback(tmp_path):
    sim = Simulation(
        load_config(None, ["fl.rounds=5", "fl.num_clients=5", "attack.name=label-flip", "attack.num_malicious=1"])
    )
    sim.attack = _NaNAttack()
    r = sim.run()
    assert r.summary["status"] == "diverged"
    assert "not finite" in r.summary["error"] and r.summary["rounds_completed"] == 0
    out = write_run(r, tmp_path / "run", plot=False)
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"
    rows = read_jsonl(out / "clients.jsonl")
    assert [r["norm"] is None for r in rows] == [r["malicious"] for r in rows]


def test_outputs_written(tmp_path):
    r = run(["fl.rounds=2", "fl.num_clients=4", "attack.name=backdoor", "attack.num_malicious=1", "eval.every=1"])
    out = write_run(r, tmp_path / "run")
    for f in ("config.yaml", "metrics.jsonl", "clients.jsonl", "rounds.jsonl", "summary.json", "curves.png"):
        assert (out / f).exists(), f
    m = read_jsonl(out / "metrics.jsonl")
    assert [row["round"] for row in m] == [0, 1]
    assert {"main_acc", "loss", "backdoor_acc", "base_acc"} <= set(m[0])
    c = read_jsonl(out / "clients.jsonl")
    assert len(c) == 8 and sum(row["malicious"] for row in c) == 2
    assert {"client", "malicious", "norm", "cos_to_aggregate", "weight"} <= set(c[0])
    s = json.loads((out / "summary.json").read_text())
    assert {"final_main_acc", "final_backdoor_acc", "max_backdoor_acc", "rounds", "wall_time_s", "seed"} <= set(s)


def test_attack_window_keeps_attackers_honest_outside():
    over = [
        "fl.rounds=3",
        "fl.num_clients=4",
        "attack.name=backdoor",
        "attack.num_malicious=2",
        "attack.start_round=1",
        "attack.end_round=1",
    ]
    r = run(over)
    attacking = {(c["round"], c["client"]): c["attacking"] for c in r.clients}
    assert not any(v for (t, _), v in attacking.items() if t != 1)
    assert sum(v for (t, _), v in attacking.items() if t == 1) == 2


def test_fixed_malicious_sampling_puts_the_same_number_of_attackers_in_every_round():
    sim = Simulation(
        load_config(
            None,
            [
                "fl.num_clients=20",
                "fl.clients_per_round=10",
                "fl.sampling=fixed-malicious",
                "attack.name=label-flip",
                "attack.num_malicious=4",
            ],
        )
    )
    counts = {int(sim.is_malicious[sim.sample_clients(t)].sum()) for t in range(20)}
    assert counts == {2}
    assert len(set(sim.sample_clients(0).tolist())) == 10


NOT_ROBUST = {"fedavg", "rlr"}  # rlr's default base is fedavg: a NaN row poisons the mean it rescales


def _defense_names():
    from fedarena.registry import DEFENSES

    return DEFENSES.names()


@pytest.mark.parametrize("defense", _defense_names())
def test_every_defense_survives_nan_inf_and_huge_rows(defense):
    """A NaN/Inf/1e30 row never crashes a run; every robust rule keeps the model finite."""
    over = [
        "fl.num_clients=11",
        "fl.rounds=2",
        "attack.name=nan",
        "attack.value=mixed",
        "attack.num_malicious=2",
        f"defense.name={defense}",
        "fl.algorithm=fedsgd",
    ]
    r = run(over + (["defense.root_size=30"] if defense == "fltrust" else []))
    if defense in NOT_ROBUST:
        assert r.summary["status"] == "diverged" and "not finite" in r.summary["error"]
    else:
        assert r.summary["status"] == "ok", r.summary["error"]
        assert all(np.isfinite(m["loss"]) for m in r.metrics)


def _attack_names():
    from fedarena.registry import ATTACKS

    return [a for a in ATTACKS.names() if a != "none"]


@pytest.mark.parametrize("algorithm", ["fedavg", "fedsgd"])
@pytest.mark.parametrize("attack", _attack_names())
def test_every_attack_runs_end_to_end(attack, algorithm):
    from fedarena.attacks.base import Attack
    from fedarena.errors import ConfigError
    from fedarena.registry import ATTACKS

    if algorithm == "fedsgd" and ATTACKS.get(attack).local_train is not Attack.local_train:
        # attacks that run their own local loop need local steps: one clear error
        with pytest.raises(ConfigError, match="fl.algorithm=fedavg"):
            run(
                [
                    "fl.num_clients=8",
                    "fl.rounds=2",
                    f"attack.name={attack}",
                    "attack.num_malicious=2",
                    "fl.algorithm=fedsgd",
                    "defense.name=median",
                ]
            )
        return
    r = run(
        [
            "fl.num_clients=8",
            "fl.rounds=2",
            f"attack.name={attack}",
            "attack.num_malicious=2",
            f"fl.algorithm={algorithm}",
            "defense.name=median",
        ]
    )
    assert len(r.metrics) == 2
    assert sum(c["attacking"] for c in r.clients) == 4
