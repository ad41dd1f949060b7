"""AutoAdapt: the equations (App. A-C), the multiplier reset, the memory, the spec's toy
problems, the constrained training on core's trainer, and one small federated round
against cos-hdbscan."""

import math

import numpy as np
import pytest
import torch

from fedarena.attacks.autoadapt import (
    AutoAdapt,
    Constraints,
    LoopConfig,
    Memory,
    al_penalty,
    eq24_alpha,
    train_constrained,
    update_mu,
)
from fedarena.config import load_config
from fedarena.core.layout import ParamLayout
from fedarena.core.local import BatchSchedule, train_sequential
from fedarena.core.recipe import TrainRecipe
from fedarena.errors import ConfigError
from fedarena.reproduce import autoadapt_toys as toys
from fedarena.run.simulation import Simulation


def test_box7_loss_and_gradient_against_autograd():
    # hand value: h = (0.5, -1), mu = (0.2, 3), alpha = 2:
    # (max(0, 0.2 + 1)^2 - 0.04 + max(0, 3 - 2)^2 - 9) / 4 = (1.44 - 0.04 + 1 - 9) / 4
    h = torch.tensor([0.5, -1.0], dtype=torch.float64)
    mu = torch.tensor([0.2, 3.0], dtype=torch.float64)
    assert float(al_penalty(h, mu, 2.0)) == pytest.approx((1.44 - 0.04 + 1 - 9) / 4)
    assert toys.gradient_identity_error() < 1e-12  # Eq. 23 == autograd
    assert toys.slack_identity_error() < 1e-9  # Eq. 15-20 (closed-form slack)
    assert toys.slack_grid_error() < 1e-6  # against a brute-force minimum over s^2


def test_eq24_and_its_cap():
    h = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    assert eq24_alpha(0.02, h) == pytest.approx(2 * 0.02 / (0.09 + 0.01))  # 0.4
    c = toys.eq24_checks()
    assert abs(c["penalty_minus_f"]) < 1e-15  # at activation the penalty equals f
    assert c["alpha_capped"] == 10.0 and c["alpha_zero_denominator"] == 10.0
    assert eq24_alpha(None, h) == 10.0 and eq24_alpha(5.0, h, alpha_max=3.0) == 3.0


def test_mu_update_rules():
    mu = torch.tensor([1.0, 2.0, 0.5, 0.0])
    h = torch.tensor([-0.1, 0.3, 0.0, 0.2])  # lower bounds j=0,1; upper bounds j=2,3
    assert update_mu(mu, h, 10.0, "always").tolist() == pytest.approx([0.0, 5.0, 0.0, 2.0])  # reset where h <= 0
    assert update_mu(mu, h, 10.0, "never").tolist() == pytest.approx([0.0, 5.0, 0.5, 2.0])  # max(0, mu + a h)
    # pair: mu_j reset only when the opposite bound (j +- 2) is violated: j=0 <-> 2, j=1 <-> 3 (j=3: j=1 violated)
    assert update_mu(mu, h, 10.0, "pair").tolist() == pytest.approx([0.0, 0.0, 0.5, 0.0])
    assert all(toys.reset_checks().values())


def test_memory_rule():
    assert toys.toy_memory_sequence() == [0, 1, 2, 3, 4, 6]  # fewest violations, then penalty; ties: later
    m = Memory()
    m.offer(torch.tensor([1.0]), 1, 0.0)
    assert not m.offer(torch.tensor([2.0]), 2, 0.0)
    assert float(m.best) == 1.0 and m.key == (1.0, 0.0)


def test_spec_toy_problems():
    # plain AL (box 6) converges to x* = 1; box 7 zig-zags and the memory keeps a feasible x near 1
    assert toys.toy_plain_al(0.01, steps=2000) < 1e-6
    b = toys.toy_box7(0.01, steps=2000)
    assert b["memory_violations"] == 0 and b["memory_gap"] < 0.01
    assert b["min"] == pytest.approx(0.9967, abs=1e-4) and b["max"] == pytest.approx(1.0996, abs=1e-4)
    # Eq. 2 converges to the infeasible minimiser 1 + 2 alpha
    assert toys.toy_eq2(0.3, lr=0.1, steps=500) == pytest.approx(1.6, abs=1e-6)


def _linear_task(n=64):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    params = {n_: p.detach().clone() for n_, p in model.named_parameters()}
    lay = ParamLayout.from_params(params)
    x = torch.randn(n, 4)
    y = torch.randint(0, 3, (n,))
    return model, params, lay, lay.flatten(params), x, y


def _l2_range(lay, g, lo, hi):
    return Constraints(
        lay,
        g,
        ["l2"],
        "whole",
        False,
        torch.tensor([lo], dtype=torch.float64),
        torch.tensor([hi], dtype=torch.float64),
        ["l2/whole"],
    )


RECIPE = TrainRecipe(lr=0.1, momentum=0.9, weight_decay=0.005, batch_size=16, epochs=4)


def test_constrained_training_meets_the_range_and_logs(one_thread):
    model, params, lay, g, x, y = _linear_task()
    cons = _l2_range(lay, g, 0.0, 0.1)
    res = train_constrained(
        model,
        params,
        {},
        x,
        y,
        np.arange(64),
        None,
        RECIPE,
        np.random.default_rng(0),
        LoopConfig(mode="autoadapt", activate_epoch=3),
        cons,
    )
    assert res.log["violations"] == 0 and res.log["batches_to_feasible"] is not None
    assert res.log["num_constraints"] == 2 and res.log["alpha_al"] <= 10 and res.log["epochs"] == 4
    assert torch.linalg.vector_norm(res.flat - g) <= 0.1 + 1e-9
    assert torch.equal(res.update, res.flat - g)
    free = train_constrained(
        model, params, {}, x, y, np.arange(64), None, RECIPE, np.random.default_rng(0), LoopConfig(mode="none"), cons
    )
    assert free.log["violations"] == 1  # unconstrained training leaves the range


def test_mode_none_is_the_core_trainer_exactly(one_thread):
    # the benign reference models: core's sequential trainer, same batches (one permutation per epoch)
    model, params, lay, g, x, y = _linear_task()
    res = train_constrained(
        model, params, {}, x, y, np.arange(64), None, RECIPE, np.random.default_rng(7), LoopConfig(mode="none")
    )
    sched = BatchSchedule.build([64], RECIPE, [np.random.default_rng(7)])
    rows, _ = train_sequential(model, params, x, y, [np.arange(64)], sched, RECIPE)
    assert torch.equal(res.update, rows[0]) and res.log["epochs"] == 4
    assert torch.equal(res.flat, g + rows[0])


def test_activation_switches_to_plain_sgd(one_thread):
    # A range every model meets ([-1, 1e6] on a distance >= 0): the penalty and its gradient are 0,
    # so AutoAdapt is 2 epochs with the recipe's SGD (momentum 0.9, decay 0.005), then 2 epochs of
    # plain SGD (momentum and decay off) from there, on the same batch stream; the memory keeps
    # the last iterate (every iterate is feasible with penalty 0; ties go to the later one).
    model, params, lay, g, x, y = _linear_task()
    cons = _l2_range(lay, g, -1.0, 1e6)
    res = train_constrained(
        model,
        params,
        {},
        x,
        y,
        np.arange(64),
        None,
        RECIPE,
        np.random.default_rng(1),
        LoopConfig(mode="autoadapt", activate_epoch=3),
        cons,
    )
    assert res.log["batches_to_feasible"] == 0 and res.log["alpha_al"] == 10.0  # Eq. 24 with a 0 denominator
    rng = np.random.default_rng(1)
    first, _ = train_sequential(
        model, params, x, y, [np.arange(64)], BatchSchedule.build([64], RECIPE.with_(epochs=2), [rng]), RECIPE
    )
    mid = lay.unflatten(g + first[0])
    late = BatchSchedule.build([64], RECIPE.with_(epochs=2), [rng])
    plain, _ = train_sequential(model, mid, x, y, [np.arange(64)], late, RECIPE.with_(momentum=0.0, weight_decay=0.0))
    assert torch.allclose(res.flat, g + first[0] + plain[0], atol=1e-6)
    kept, _ = train_sequential(model, mid, x, y, [np.arange(64)], late, RECIPE)  # momentum and decay still on
    assert not torch.allclose(res.flat, g + first[0] + kept[0], atol=1e-3)


def _record_offers(monkeypatch):
    offers = []
    orig = Memory.offer

    def offer(self, x, violations, penalty, step=0):
        offers.append((step, violations, penalty, x.detach().clone()))
        return orig(self, x, violations, penalty, step)

    monkeypatch.setattr(Memory, "offer", offer)
    return offers


def test_stop_when_feasible_ends_training_at_the_first_feasible_step(one_thread, monkeypatch):
    model, params, lay, g, x, y = _linear_task()
    cons = _l2_range(lay, g, 0.0, 0.1)
    cfg = LoopConfig(mode="autoadapt", activate_epoch=3, stop_when_feasible=True)
    offers = _record_offers(monkeypatch)
    res = train_constrained(model, params, {}, x, y, np.arange(64), None, RECIPE, np.random.default_rng(0), cfg, cons)
    b = res.log["batches_to_feasible"]
    assert b is not None and b >= 1 and res.log["violations"] == 0
    # offers: activation (step 0) then one per constrained step; the last is the first feasible one
    assert [o[0] for o in offers] == list(range(b + 1)) and offers[-1][1] == 0
    assert all(o[1] > 0 for o in offers[:-1])
    assert torch.equal(res.flat, offers[-1][3])
    assert res.log["epochs"] == 3 + (b - 1) // 4  # 4 batches per epoch; stopped in the epoch of step b
    offers.clear()
    longer = train_constrained(
        model,
        params,
        {},
        x,
        y,
        np.arange(64),
        None,
        RECIPE,
        np.random.default_rng(0),
        LoopConfig(mode="autoadapt", activate_epoch=3),
        cons,
    )
    assert len(offers) == 1 + 8 and longer.log["batches_to_feasible"] == b  # without the stop: 2 full epochs


def test_memory_submits_the_best_iterate(one_thread, monkeypatch):
    # a narrow range away from the global model (l2 distance in [0.5, 0.52]) that box 7 never
    # meets here: every iterate violates one constraint, the penalty sum goes down and up again,
    # the memory keeps the smallest (ties: the later iterate, Memory's rule) and the extra
    # epochs run while it violates (max_extra_epochs=2: 4 + 2 epochs, 5 of them constrained)
    model, params, lay, g, x, y = _linear_task()
    cons = _l2_range(lay, g, 0.5, 0.52)
    offers = _record_offers(monkeypatch)
    res = train_constrained(
        model,
        params,
        {},
        x,
        y,
        np.arange(64),
        None,
        RECIPE,
        np.random.default_rng(0),
        LoopConfig(mode="autoadapt", activate_epoch=2, max_extra_epochs=2),
        cons,
    )
    assert res.log["epochs"] == 6 and len(offers) == 1 + 5 * 4
    assert all(o[1] == 1 for o in offers) and res.log["violations"] == 1
    best = min(range(len(offers)), key=lambda i: (offers[i][1], offers[i][2], -i))
    assert 0 < best < len(offers) - 1  # neither the activation point nor the last iterate
    assert torch.equal(res.flat, offers[best][3])
    assert res.log["penalty_sum"] == pytest.approx(offers[best][2])


def test_bad_parameters_are_one_line_errors():
    with pytest.raises(ConfigError, match="attack.metrics"):
        AutoAdapt(metrics=["manhattan"])
    with pytest.raises(ConfigError, match="attack.scope"):
        AutoAdapt(scope="conv")
    with pytest.raises(ConfigError, match="attack.surrogate_shrink"):
        AutoAdapt(surrogate_shrink=0.6)


def _round(adapt: bool):
    R = 4
    cfg = load_config(
        None,
        [
            "data.dataset=digits",
            "data.partition=per-class-sample",
            "data.per_class=16",
            "model.name=mlp",
            "fl.num_clients=20",
            f"fl.rounds={R + 1}",
            "fl.local_epochs=5",
            "fl.batch_size=16",
            "fl.lr=0.05",
            "fl.momentum=0.9",
            "fl.weight_decay=0.005",
            "attack.name=autoadapt",
            "attack.num_malicious=9",
            f"attack.start_round={R}",
            "attack.trigger_size=2",
            "attack.activate_epoch=2",
            "attack.max_extra_epochs=3",
            f"attack.adapt={str(adapt).lower()}",
            "defense.name=cos-hdbscan",
            "eval.every=100",
        ],
    )
    res = Simulation(cfg).run()
    rows = [c for c in res.clients if c["round"] == R]
    return res.summary["final_backdoor_acc"], rows


@pytest.mark.usefixtures("one_thread")
def test_end_to_end_unadapted_filtered_adapted_passes():
    ba0, rows0 = _round(False)
    ba1, rows1 = _round(True)
    mal0 = [r for r in rows0 if r["malicious"]]
    mal1 = [r for r in rows1 if r["malicious"]]
    assert sum(not r["accepted"] for r in mal0) >= 8  # cos-hdbscan filters the unadapted backdoor
    assert all(r["violations"] >= 1 for r in mal0)  # precondition: the backdoor is visible in the metric
    assert all(r["violations"] == 0 for r in mal1)  # adapted: every attacker inside the range
    assert sum(r["accepted"] for r in mal1) >= 8  # ... and accepted
    assert ba1 >= ba0 + 0.2, (ba0, ba1)
    # the distances the attack and defense use are logged for every client
    assert all("cos/whole" in r["distances"] for r in rows1)
    assert all(math.isfinite(r["distances"]["cos/whole"]) for r in rows1)
    assert all("constraints" in r and r["batches_to_feasible"] is not None for r in mal1)
