"""Every path with ``fl.device=cuda``: the same runs on the GPU as on the CPU.

Skipped without CUDA (CI has none); ``benchmarks/gpu.sh`` runs this file on a GPU
machine together with the end-to-end and lockstep checks (``FEDARENA_TEST_DEVICE=cuda``).
"""

import pytest
import torch

from fedarena.config import from_tree
from fedarena.run.lockstep import Lockstep
from fedarena.run.runner import run_many
from fedarena.run.simulation import Simulation

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _tree(device, **sections):
    tree = {"seed": 0, "fl": {"rounds": 4, "num_clients": 10, "device": device}}
    for key, value in sections.items():
        tree.setdefault(key, {}).update(value)
    return tree


def _both(**sections):
    """The run on the CPU and on the GPU."""
    return [Simulation(from_tree(_tree(dev, **sections))).run() for dev in ("cpu", "cuda")]


@pytest.mark.parametrize("algorithm", ["fedavg", "fedsgd"])
@pytest.mark.parametrize(
    "attack,defense",
    [
        ("none", "fedavg"),
        ("alie", "median"),
        ("label-flip", "krum"),
        ("ipm", "cc"),
        ("backdoor", "flame"),
        ("minmax", "trimmed-mean"),
    ],
)
def test_gpu_run_matches_the_cpu_run(algorithm, attack, defense):
    sections = {
        "fl": {"algorithm": algorithm, **({"client_momentum": 0.9} if algorithm == "fedsgd" else {})},
        "defense": {"name": defense},
    }
    if attack != "none":
        sections["attack"] = {"name": attack, "num_malicious": 2}
    cpu, gpu = _both(**sections)
    assert gpu.summary["status"] == cpu.summary["status"] == "ok", gpu.summary.get("error")
    for a, b in zip(cpu.metrics, gpu.metrics):  # float reductions differ in order: close, not equal
        assert b["main_acc"] == pytest.approx(a["main_acc"], abs=0.05)
        assert b["loss"] == pytest.approx(a["loss"], rel=0.1, abs=0.05)


def test_model_data_and_updates_live_on_the_gpu():
    sim = Simulation(from_tree(_tree("cuda")))
    assert sim.device.type == "cuda"
    assert all(p.is_cuda for p in sim.params.values()) and sim.data.x_train.is_cuda
    plan = sim.plan_round(0)
    assert plan.U.is_cuda
    sim.run()


@pytest.mark.parametrize(
    "model,data",
    [
        ({"name": "cnn"}, {"dataset": "synthetic", "synthetic": {"image_size": 28}}),
        ({"name": "resnet20"}, {"dataset": "synthetic", "synthetic": {"image_size": 32, "channels": 3}}),
    ],
)
def test_cnn_and_batchnorm_models_train_on_the_gpu(model, data):
    """The clients-folded CNN path and the sequential path (BatchNorm buffers)."""
    r = Simulation(from_tree(_tree("cuda", model=model, data=data, fl={"rounds": 2}))).run()
    assert r.summary["status"] == "ok", r.summary.get("error")


@pytest.mark.parametrize("optimizer,state", [("adam", "persistent"), ("sgd", "reset")])
def test_local_optimizers_on_the_gpu(optimizer, state):
    cpu, gpu = _both(fl={"optimizer": optimizer, "client_state": state, "lr": 0.01 if optimizer == "adam" else 0.1})
    assert gpu.summary["final_main_acc"] == pytest.approx(cpu.summary["final_main_acc"], abs=0.05)


def test_lockstep_on_the_gpu_equals_runs_one_by_one():
    trees = [
        _tree("cuda", attack={"name": a, "num_malicious": 2}, defense={"name": d})
        for a in ("label-flip", "alie")
        for d in ("fedavg", "median", "cc")
    ]
    cfgs = [from_tree({**t, "name": f"r{i}"}) for i, t in enumerate(trees)]
    alone = [Simulation(c).run() for c in cfgs]
    together = Lockstep([Simulation(c) for c in cfgs]).run()
    for a, b in zip(alone, together):
        for ma, mb in zip(a.metrics, b.metrics):
            assert mb["main_acc"] == pytest.approx(ma["main_acc"], abs=1e-3)
            assert mb["loss"] == pytest.approx(ma["loss"], rel=1e-3, abs=1e-4)


def test_run_many_and_the_attack_search_on_the_gpu():
    cfgs = [
        from_tree(
            {
                **_tree(
                    "cuda", attack={"name": "alie", "num_malicious": 2, "optimize": True}, defense={"name": "median"}
                ),
                "name": "opt",
            }
        )
    ]
    [r] = run_many(cfgs)
    assert r.summary["status"] == "ok", r.summary.get("error")


_STAGE_ATTACK = {"name": "ipm", "num_malicious": 2}


@pytest.mark.parametrize(
    "sections",
    [
        {"attack": _STAGE_ATTACK, "defense": {"name": "median", "bucketing": 2}},
        {"attack": _STAGE_ATTACK, "defense": {"name": "median", "nnm": True}},
        {"attack": _STAGE_ATTACK, "defense": {"name": "median", "clip": 1.0}},
        {"attack": _STAGE_ATTACK, "defense": {"name": "median", "noise": 0.01, "noise_abs": True}},
        {"defense": {"name": "fedavg", "clip": 1.0, "clip_at": "client"}},
        {"defense": {"name": "fedavg", "dp": "local", "dp_clip": 1.0, "dp_sigma": 0.1}},
        {"defense": {"name": "fedavg", "dp": "central", "dp_clip": 1.0, "dp_sigma": 0.1}},
        {"attack": {"name": "backdoor", "num_malicious": 2}, "defense": {"client": "leadfl"}},
        {"attack": {"name": "backdoor", "num_malicious": 2}, "defense": {"client": "ldp"}},
        {"attack": {"name": "backdoor", "num_malicious": 2}, "defense": {"client": "fl-wbc"}},
        {"attack": {"name": "poisonedfl", "num_malicious": 2}, "defense": {"name": "cos-hdbscan"}},
    ],
    ids=[
        "bucketing",
        "nnm",
        "clip",
        "noise",
        "client-clip",
        "dp-local",
        "dp-central",
        "leadfl",
        "ldp",
        "fl-wbc",
        "poisonedfl-cos-hdbscan",
    ],
)
def test_stages_dp_and_client_side_defenses_on_the_gpu(sections):
    """Defense stages, DP and the client-side defenses draw their noise and permutations on
    the CPU and move them: the GPU run sees the same draws as the CPU run."""
    cpu, gpu = _both(**sections)
    assert gpu.summary["status"] == cpu.summary["status"] == "ok", gpu.summary.get("error")
    assert gpu.summary["final_main_acc"] == pytest.approx(cpu.summary["final_main_acc"], abs=0.1)
