"""Runs in lockstep give the records of the same runs played one by one."""

import itertools
import math
import os

import numpy as np
import pytest
import torch

from fedarena.config import from_tree
from fedarena.core.local import BatchSchedule, minibatch_gradients, train_vectorized
from fedarena.core.recipe import TrainRecipe
from fedarena.models.simple import MLP
from fedarena.run.lockstep import Lockstep, group_key, groups
from fedarena.run.runner import run_many
from fedarena.run.simulation import Simulation


#: ``FEDARENA_TEST_DEVICE=cuda`` runs the identity checks on a GPU (``benchmarks/gpu.sh``)
DEVICE = os.environ.get("FEDARENA_TEST_DEVICE", "cpu")


def _cfg(attack="none", defense="fedavg", seed=0, **fl):
    tree = {
        "name": f"{attack}-{defense}-s{seed}",
        "seed": seed,
        "fl": {"rounds": 3, "num_clients": 12, "clients_per_round": 8, "device": DEVICE, **fl},
        "defense": {"name": defense},
        "eval": {"every": 1 + seed % 2},
    }
    if attack != "none":
        tree["attack"] = {"name": attack, "num_malicious": 3}
    return from_tree(tree)


def _mixed_sweep():
    cfgs = [
        _cfg(a, d, s, lr=0.1 if s == 0 else 0.05)
        for a, d, s in itertools.product(
            ["none", "label-flip", "alie", "backdoor", "nan"], ["fedavg", "median", "trimmed-mean", "cc"], [0, 1]
        )
    ]
    # FedSGD with client momentum, a different round count, a different chunk size
    cfgs += [_cfg(a, "cc", 2, algorithm="fedsgd", client_momentum=0.9) for a in ("none", "label-flip", "ipm")]
    cfgs += [_cfg("ipm", "median", 3, rounds=2), _cfg("none", "fedavg", 4, chunk_size=3)]
    return cfgs


def _close(a, b, key):
    if isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-4, abs=1e-5), key
    else:
        assert a == b, key


def test_mixed_sweep_in_lockstep_equals_runs_one_by_one():
    cfgs = _mixed_sweep()
    alone = [Simulation(c).run() for c in cfgs]
    together = Lockstep([Simulation(c) for c in cfgs]).run()
    assert len(together) == len(cfgs)
    for c, a, b in zip(cfgs, alone, together):
        assert a.summary["status"] == b.summary["status"], c.name
        assert a.summary["rounds_completed"] == b.summary["rounds_completed"], c.name
        assert [m["round"] for m in a.metrics] == [m["round"] for m in b.metrics], c.name
        for ma, mb in zip(a.metrics, b.metrics):
            for k in ma:
                _close(ma[k], mb[k], (c.name, k))
        assert len(a.clients) == len(b.clients) and len(a.rounds) == len(b.rounds)
        for ra, rb in zip(a.clients, b.clients):
            for k in ("round", "client", "malicious", "attacking", "accepted"):
                assert ra.get(k) == rb.get(k), (c.name, k)
            for k in ("norm", "weight"):
                if ra.get(k) is not None:
                    _close(ra[k], rb[k], (c.name, k))
    assert {r.summary["status"] for r in together} == {"ok", "diverged"}


def test_single_run_is_a_lockstep_of_one():
    cfg = _cfg("label-flip", "median", 0)
    a, b = Simulation(cfg).run(), Lockstep([Simulation(cfg)]).run()[0]
    assert a.metrics == b.metrics and a.clients == b.clients


def test_runs_of_different_architectures_are_refused():
    a = Simulation(_cfg())
    b = Simulation(from_tree({"fl": {"num_clients": 12, "rounds": 1}, "model": {"name": "mlp", "hidden": [32]}}))
    with pytest.raises(ValueError, match="share the model"):
        Lockstep([a, b])


def test_run_many_groups_compatible_configs_and_keeps_order():
    cfgs = [
        _cfg(seed=0),
        from_tree({"name": "wide", "fl": {"num_clients": 12, "rounds": 2}, "model": {"name": "mlp", "hidden": [32]}}),
        _cfg("ipm", "median", 1),
    ]
    assert group_key(cfgs[0]) == group_key(cfgs[2]) != group_key(cfgs[1])
    assert groups(cfgs) == [[0, 2], [1]]
    assert groups(cfgs, max_runs=1) == [[0], [1], [2]]
    seen = []
    res = run_many(cfgs, on_result=lambda i, r: seen.append(i))
    assert [r.config.name for r in res] == [c.name for c in cfgs] and sorted(seen) == [0, 1, 2]
    alone = Simulation(cfgs[0]).run().metrics
    assert [m["main_acc"] for m in res[0].metrics] == pytest.approx([m["main_acc"] for m in alone], abs=1e-6)


def _data(k=6, n=20):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(k * n, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (k * n,), generator=g)
    return x, y, [np.arange(i * n, (i + 1) * n) for i in range(k)]


@pytest.mark.parametrize(
    "recipe", [TrainRecipe(lr=0.1, batch_size=8), TrainRecipe(lr=0.05, momentum=0.9, batch_size=6)]
)
def test_stacked_initial_params_equal_one_call_per_run(recipe):
    """Clients of two runs (different global models) in one call equal each run's own call."""
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10)
    x, y, index = _data()
    p0 = {n: v.detach().clone() for n, v in model.named_parameters()}
    p1 = {n: v + 0.05 * torch.randn_like(v) for n, v in p0.items()}
    sched = BatchSchedule.build([20] * 6, recipe, [np.random.default_rng(i) for i in range(6)])
    owner = [0, 1, 0, 1, 1, 0]
    stacked = {n: torch.stack([p0[n], p1[n]]) for n in p0}
    U = train_vectorized(model, stacked, x, y, index, sched, recipe, chunk_size=4, owner=owner)
    for run, params in ((0, p0), (1, p1)):
        rows = [i for i, o in enumerate(owner) if o == run]
        alone = train_vectorized(
            model, params, x, y, [index[i] for i in rows], BatchSchedule([sched.batches[i] for i in rows]), recipe
        )
        assert torch.allclose(U[rows], alone, atol=1e-6)
    G = minibatch_gradients(model, stacked, x, y, index, sched, recipe, owner=owner, chunk_size=2)
    for run, params in ((0, p0), (1, p1)):
        rows = [i for i, o in enumerate(owner) if o == run]
        alone = minibatch_gradients(
            model, params, x, y, [index[i] for i in rows], BatchSchedule([sched.batches[i] for i in rows]), recipe
        )
        assert torch.allclose(G[rows], alone, atol=1e-6)
    with pytest.raises(ValueError, match="owner"):
        train_vectorized(model, stacked, x, y, index, sched, recipe, owner=[0, 2, 0, 0, 0, 0])
