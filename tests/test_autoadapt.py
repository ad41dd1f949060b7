"""AutoAdapt: the equations (App. A-C), the multiplier reset, the memory, the spec's toy
problems, the local loop, and one small federated round against cos-hdbscan."""

import math

import pytest
import torch

from fedarena.attacks.autoadapt import (AutoAdapt, Constraints, LoopConfig, Memory, al_penalty, eq24_alpha, make_net,
                                        train_loop, update_mu)
from fedarena.config import load_config
from fedarena.core.layout import ParamLayout
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


def test_loop_switches_off_momentum_and_logs(one_thread):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    lay = ParamLayout.from_params(params)
    g = lay.flatten(params)
    x = torch.randn(64, 4)
    y = torch.randint(0, 3, (64,))
    v0 = torch.tensor([0.0])
    cons = Constraints(lay, g, ["l2"], "whole", False, v0, torch.tensor([0.1], dtype=torch.float64), ["l2/whole"])
    import numpy as np
    recipe = TrainRecipe(lr=0.1, momentum=0.9, weight_decay=0.005, batch_size=16, epochs=4)
    res = train_loop(make_net(model, params, {}), x, y, np.arange(64), None, recipe, np.random.default_rng(0),
                     LoopConfig(mode="autoadapt", activate_epoch=3), cons)
    assert res.log["violations"] == 0 and res.log["batches_to_feasible"] is not None
    assert res.log["num_constraints"] == 2 and res.log["alpha_al"] <= 10
    assert torch.linalg.vector_norm(res.flat - g) <= 0.1 + 1e-9
    free = train_loop(make_net(model, params, {}), x, y, np.arange(64), None, recipe, np.random.default_rng(0),
                      LoopConfig(mode="none"), cons)
    assert free.log["violations"] == 1  # unconstrained training leaves the range


def test_bad_parameters_are_one_line_errors():
    with pytest.raises(ConfigError, match="attack.metrics"):
        AutoAdapt(metrics=["manhattan"])
    with pytest.raises(ConfigError, match="attack.scope"):
        AutoAdapt(scope="conv")
    with pytest.raises(ConfigError, match="attack.surrogate_shrink"):
        AutoAdapt(surrogate_shrink=0.6)


def _round(adapt: bool):
    R = 4
    cfg = load_config(None, [
        "data.dataset=digits", "data.partition=per-class-sample", "data.per_class=16", "model.name=mlp",
        "fl.num_clients=20", f"fl.rounds={R + 1}", "fl.local_epochs=5", "fl.batch_size=16", "fl.lr=0.05",
        "fl.momentum=0.9", "fl.weight_decay=0.005", "attack.name=autoadapt", "attack.num_malicious=9",
        f"attack.start_round={R}", "attack.trigger_size=2", "attack.activate_epoch=2", "attack.max_extra_epochs=3",
        f"attack.adapt={str(adapt).lower()}", "defense.name=cos-hdbscan", "eval.every=100"])
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
