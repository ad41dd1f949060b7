"""CRFL (Xie et al., ICML 2021): parameter clipping, the server step, the certified radius
by hand, and certified robustness that falls as the attack grows."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from fedarena.config import DEFAULT_RUN, load_config
from fedarena.core.layout import ParamLayout
from fedarena.defenses.base import RoundContext
from fedarena.defenses.crfl import CRFL, certified_radius, clip_parameters
from fedarena.errors import ConfigError
from fedarena.run.simulation import Simulation

pytestmark = pytest.mark.usefixtures("one_thread")


def test_clip_parameters_scales_to_rho_only_when_longer():
    assert clip_parameters(torch.tensor([3.0, 4.0]), 2.5).tolist() == [1.5, 2.0]  # ||w|| = 5 -> * 2.5 / 5
    assert clip_parameters(torch.tensor([3.0, 4.0]), 10.0).tolist() == [3.0, 4.0]


def _ctx(algorithm="fedavg", server_lr=1.0, lr=1.0):
    layout = ParamLayout.from_params({"w": torch.zeros(2)})
    return RoundContext(
        0,
        layout,
        torch.arange(2),
        torch.ones(2),
        global_params=torch.zeros(2),
        generator=torch.Generator().manual_seed(0),
        server_lr=server_lr,
        extras={"algorithm": algorithm, "lr": lr},
    )


def test_aggregate_lands_the_server_step_on_the_clipped_model():
    U = torch.tensor([[2.0, 0.0], [4.0, 0.0]])  # mean (3, 0)
    rule = CRFL(rho=1.0, sigma=0.0)
    # FedAvg, server lr 1: w' = clip((3, 0), 1) = (1, 0) -> agg = (1, 0)
    assert rule(U, _ctx()).update.tolist() == [1.0, 0.0]
    # server lr 2: step (6, 0) -> clip (1, 0) -> agg = (1, 0) / 2
    assert rule(U, _ctx(server_lr=2.0)).update.tolist() == [0.5, 0.0]
    # FedSGD, lr 0.5: step -0.5 * (3, 0) = (-1.5, 0) -> clip (-1, 0) -> agg = (0 - (-1, 0)) / 0.5 = (2, 0)
    assert rule(U, _ctx("fedsgd", lr=0.5)).update.tolist() == [2.0, 0.0]


def test_noise_has_sigma_and_nan_rows_get_weight_zero():
    U = torch.tensor([[1.0, 1.0], [float("nan"), 0.0]])
    a = CRFL(rho=100.0, sigma=0.0)(U, _ctx())
    assert a.update.tolist() == [1.0, 1.0] and a.weights.tolist() == [1.0, 0.0]
    noisy = CRFL(rho=1e9, sigma=0.5)(torch.zeros(2, 2), _ctx()).update
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(noisy, 0.5 * torch.randn(2, generator=g))  # the round's defense generator


def test_certified_radius_by_hand():
    # all M = 100 votes for A: Clopper-Pearson lower bound p_A = alpha^(1/M), upper bound of n_B = 0 is 1 - alpha^(1/M)
    p = 0.001 ** (1 / 100)  # = exp(0.01 ln 0.001) = 0.93325
    assert math.isclose(p, 0.933254, rel_tol=1e-5)
    # RAD = sigma / 2 (Phi^-1(p) - Phi^-1(1 - p)) = sigma Phi^-1(p) = 0.01 * 1.5003
    rad = certified_radius(np.array([100]), np.array([0]), 100, 0.01, 0.001)
    assert math.isclose(rad[0], 0.01 * norm.ppf(p), rel_tol=1e-9) and math.isclose(rad[0], 0.015003, rel_tol=1e-3)
    # a 50 / 50 split: p_A < 0.5 < p_B -> negative radius (abstain)
    assert certified_radius(np.array([50]), np.array([50]), 100, 0.01, 0.001)[0] < 0


def test_bad_parameters_are_one_clear_error():
    for kw, field in [
        ({"rho": 0.0}, "defense.rho"),
        ({"sigma": -1.0}, "defense.sigma"),
        ({"certify_samples": 1}, "defense.certify_samples"),
        ({"alpha": 0.7}, "defense.alpha"),
    ]:
        with pytest.raises(ConfigError, match=field):
            CRFL(**kw)


def _certified(over):
    r = Simulation(
        load_config(None, ["defense.name=crfl", "fl.rounds=15", "defense.certify_samples=50", *over], base=DEFAULT_RUN)
    ).run()
    return r.summary


def test_certified_robustness_falls_as_the_attack_grows():
    # measured (M = 100): backdoor-free certified share 0.96 (1 attacker), 0.32 (4), 0.02 (4, boosted x5)
    s1, s4, s4b = (
        _certified(o)
        for o in (["attack.num_malicious=1"], ["attack.num_malicious=4"], ["attack.num_malicious=4", "attack.boost=5"])
    )
    free = [s["crfl_certified_backdoor_free"] for s in (s1, s4, s4b)]
    assert free[0] > free[1] > free[2] and free[0] >= 0.8 and free[2] <= 0.1
    assert all(s["crfl_certified_acc"] >= 0.85 for s in (s1, s4, s4b))  # the clean task stays certified
    assert 0 < s1["crfl_mean_radius"] <= 0.016  # at most sigma Phi^-1(alpha^(1/M)) with M = 50
