"""``Simulation.local_context``: what an attack's ``local_train`` gets, for tools that
train a client outside a round (the AutoAdapt reproduction's runtime table)."""

import numpy as np
import torch

from fedarena.attacks.autoadapt import AutoAdapt
from fedarena.config import load_config
from fedarena.run.simulation import Simulation


def _cfg():
    return load_config(
        None,
        [
            "data.dataset=digits",
            "data.partition=per-class-sample",
            "data.per_class=4",
            "model.name=mlp",
            "fl.num_clients=6",
            "fl.rounds=2",
            "fl.local_epochs=1",
            "fl.batch_size=8",
            "attack.name=autoadapt",
            "attack.num_malicious=2",
            "attack.start_round=1",
            "attack.activate_epoch=1",
            "eval.every=100",
        ],
    )


def test_local_context_is_what_local_train_gets(monkeypatch, one_thread):
    seen = []

    def capture(self, ctx):  # the attackers submit zero updates; the context is kept
        seen.append(ctx)
        return torch.zeros(len(ctx.client_ids), ctx.layout.dim)

    monkeypatch.setattr(AutoAdapt, "local_train", capture)
    sim = Simulation(_cfg())
    sim.run()
    (got,) = seen  # round 1, the attacked round
    ids = got.client_ids
    assert sorted(ids) == sorted(sim.malicious.tolist())
    mine = sim.local_context(1, ids)
    assert mine.client_ids == ids and mine.round == got.round == 1 and mine.recipe == got.recipe
    for a, b in zip(mine.clean_index, got.clean_index):
        assert np.array_equal(a, b)
    for c, a, b in zip(ids, mine.poisoned_index, got.poisoned_index):
        assert np.array_equal(a, b) and not np.array_equal(a, sim.local_context(1, [c]).clean_index[0])
    # the same, fresh streams (the captured ones were not drawn from)
    assert [r.integers(2**30) for r in mine.rngs] == [r.integers(2**30) for r in got.rngs]
    assert torch.equal(
        torch.randint(0, 2**30, (3,), generator=mine.generator), torch.randint(0, 2**30, (3,), generator=got.generator)
    )
    assert torch.equal(mine.x, got.x) and mine.benign_updates is None
    # what the attack was set up with (digits: 10 classes of 8 x 8 images)
    assert sim.data_info.num_classes == 10 and tuple(sim.data_info.input_shape) == (1, 8, 8)
    # a benign client: its poisoned data is its clean data
    benign = next(c for c in range(6) if c not in ids)
    one = sim.local_context(1, [benign])
    assert np.array_equal(one.poisoned_index[0], one.clean_index[0])


def test_local_context_changes_nothing(one_thread):
    a, b = Simulation(_cfg()), Simulation(_cfg())
    for t in range(2):
        a.local_context(t, range(6))
    ra, rb = a.run(), b.run()
    assert torch.equal(a.flat_params, b.flat_params)
    va, vb = ([r["violations"] for r in res.clients if r.get("malicious") and "violations" in r] for res in (ra, rb))
    assert len(va) == 2 and va == vb
