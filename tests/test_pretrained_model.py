"""``model.name=fl-pretrained``: a run starts from the global model of a benign FL run after R
rounds (the AutoAdapt paper's pretrained start), played once and cached."""

from __future__ import annotations

import pytest
import torch

from fedarena.config import load_config
from fedarena.errors import ConfigError
from fedarena.run import pretrained as mod
from fedarena.run.simulation import Simulation

PRE = {
    "seed": 3,
    "data": {"dataset": "digits"},
    "fl": {"num_clients": 6, "rounds": 4, "local_epochs": 1, "batch_size": 32, "lr": 0.1},
}


def _tree(round_: int = 3, snapshots=(0, 3)) -> dict:
    return {
        "seed": 0,
        "data": {"dataset": "digits"},
        "fl": {"num_clients": 6, "rounds": 1},
        "model": {
            "name": "fl-pretrained",
            "arch": "mlp",
            "arch_params": {"hidden": [16]},
            "round": round_,
            "snapshots": list(snapshots),
            "pretrain": PRE,
        },
    }


@pytest.mark.usefixtures("one_thread")
def test_starts_from_the_benign_runs_global_model_and_caches_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDARENA_CACHE", str(tmp_path))
    # the benign run itself, played directly: its global model after 3 rounds
    ref = Simulation(load_config(None, base=mod.pretrain_tree("mlp", {"hidden": [16]}, PRE)))
    for t in range(3):
        ref.run_round(t)
    before = torch.random.get_rng_state()
    sim = Simulation(load_config(None, base=_tree()))
    for name, v in ref.params.items():
        assert torch.equal(sim.params[name], v), name
    files = list((tmp_path / "pretrained").glob("mlp-*.pt"))
    assert len(files) == 1
    # the round-0 snapshot is the benign run's initial model
    sim0 = Simulation(load_config(None, base=_tree(round_=0)))
    ref0 = Simulation(load_config(None, base=mod.pretrain_tree("mlp", {"hidden": [16]}, PRE)))
    assert all(torch.equal(sim0.params[n], v) for n, v in ref0.params.items())
    # a second run loads the cache instead of training again
    monkeypatch.setattr(mod, "Simulation", None, raising=False)
    calls = []
    real = Simulation.run_round
    monkeypatch.setattr(Simulation, "run_round", lambda self, t: calls.append(t) or real(self, t))
    Simulation(load_config(None, base=_tree()))
    assert calls == [] and len(list((tmp_path / "pretrained").glob("mlp-*.pt"))) == 1
    assert before.shape == torch.random.get_rng_state().shape


def test_bad_settings_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDARENA_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match="model.round"):
        Simulation(load_config(None, base=_tree(round_=9, snapshots=())))
    bad = _tree()
    bad["model"].pop("pretrain")
    with pytest.raises(ConfigError, match="model.pretrain"):
        Simulation(load_config(None, base=bad))
