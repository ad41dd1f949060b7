"""Neurotoxin (Zhang et al., ICML 2022): the coordinate mask, the projection, training on
the masked coordinates (both training paths) and the backdoor's retention after the attack."""

import math

import pytest
import torch

from fedarena.attacks.neurotoxin import MaskProjection, Neurotoxin, neurotoxin_mask
from fedarena.config import DEFAULT_RUN, load_config
from fedarena.errors import ConfigError
from fedarena.run.simulation import Simulation

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mask_drops_the_top_k_share_of_the_previous_update():
    prev = torch.tensor([0.5, -3.0, 0.1, 2.0])
    # |prev| = 0.5, 3.0, 0.1, 2.0: the largest two (ceil(0.5 * 4) = 2) are coordinates 1 and 3
    assert neurotoxin_mask(prev, 0.5).tolist() == [True, False, True, False]
    # ceil(0.25 * 4) = 1: only coordinate 1 (|-3| = 3) is dropped
    assert neurotoxin_mask(prev, 0.25).tolist() == [True, False, True, True]
    # ceil(0.3 * 4) = ceil(1.2) = 2
    assert neurotoxin_mask(prev, 0.3).tolist() == [True, False, True, False]
    assert neurotoxin_mask(prev, 0.0).all()
    # a non-finite coordinate counts as largest
    assert neurotoxin_mask(torch.tensor([1.0, float("nan"), 2.0]), 0.3).tolist() == [True, False, True]


def test_projection_keeps_masked_coordinates_at_the_global_value_then_bounds_the_norm():
    g = {"w": torch.tensor([1.0, 1.0, 1.0]), "b": torch.tensor([0.0])}
    p = {"w": torch.tensor([2.0, 5.0, 4.0]), "b": torch.tensor([-1.0])}
    masks = {"w": torch.tensor([1.0, 0.0, 1.0]), "b": torch.tensor([1.0])}
    out = MaskProjection(masks)(p, g)
    # w: 1 + [1, 0, 1] * [1, 4, 3] = [2, 1, 4]; b: 0 + 1 * (-1) = -1
    assert out["w"].tolist() == [2.0, 1.0, 4.0] and out["b"].tolist() == [-1.0]
    out = MaskProjection(masks, bound=1.0)(p, g)
    # masked diff (1, 0, 3, -1) has norm sqrt(11): scaled by 1 / sqrt(11)
    s = 1 / math.sqrt(11)
    assert torch.allclose(out["w"], torch.tensor([1 + s, 1.0, 1 + 3 * s]))
    assert torch.allclose(out["b"], torch.tensor([-s]))


def test_bad_parameters_are_one_clear_error():
    with pytest.raises(ConfigError, match="attack.mask_ratio"):
        Neurotoxin(mask_ratio=1.0)
    with pytest.raises(ConfigError, match="attack.norm_bound"):
        Neurotoxin(norm_bound=0.0)


OVER = [
    "fl.num_clients=10",
    "fl.rounds=3",
    "attack.name=neurotoxin",
    "attack.num_malicious=3",
    "attack.mask_ratio=0.4",
    "attack.poison_frac=1.0",
]


def _round_rows(extra):
    sim = Simulation(load_config(None, OVER + extra))
    sim.run_round(0)
    prev = sim.prev_update.clone()
    rec = sim.run_round(1)
    mal = torch.from_numpy(rec["malicious"])
    return prev, rec["U"][mal], rec["U"][~mal]


@pytest.mark.parametrize("vectorize", ["true", "false"])
def test_attackers_change_only_the_coordinates_outside_the_top_k(vectorize):
    prev, M, B = _round_rows([f"fl.vectorize={vectorize}"])
    keep = neurotoxin_mask(prev, 0.4)
    assert len(M) and (M[:, ~keep] == 0).all()  # the dropped 40 % stay at the global value
    assert (M[:, keep] != 0).float().mean() > 0.5  # the rest is trained
    assert (B[:, ~keep] != 0).any()  # benign clients are not masked


def test_vectorized_and_sequential_attackers_agree():
    _, Mv, _ = _round_rows(["fl.vectorize=true"])
    _, Ms, _ = _round_rows(["fl.vectorize=false"])
    assert torch.allclose(Mv, Ms, atol=1e-5)


def test_fedsgd_masks_the_uploaded_gradient():
    prev, M, _ = _round_rows(["fl.algorithm=fedsgd"])
    assert (M[:, ~neurotoxin_mask(prev, 0.4)] == 0).all()


def _retention(name, seed, extra=()):
    # attack a converged model (rounds 20-29), as Neurotoxin does, then 3 benign rounds
    r = Simulation(
        load_config(
            None,
            [
                f"attack.name={name}",
                f"seed={seed}",
                "fl.rounds=33",
                "attack.start_round=20",
                "attack.end_round=29",
                "attack.poison_frac=1.0",
                *extra,
            ],
            base=DEFAULT_RUN,
        )
    ).run()
    bd = [m["backdoor_acc"] for m in r.metrics]
    assert r.summary["attack_last_round"] == 29 and r.summary["backdoor_durability"] is not None
    return bd[32] / bd[29]


@pytest.mark.parametrize("seed", [0, 1])
def test_neurotoxin_backdoor_keeps_more_of_itself_after_the_attack_stops(seed):
    """Three rounds after the last attack, Neurotoxin keeps a larger share of its backdoor
    accuracy than a plain backdoor (measured: 0.45 vs 0.31 with seed 0, 0.38 vs 0.26 with
    seed 1). At this scale (a 4.8k-parameter MLP) its *absolute* backdoor accuracy is lower
    (0.24 vs 0.42 at the attack's end), so it does not stay above a fixed threshold longer."""
    assert _retention("neurotoxin", seed, ["attack.mask_ratio=0.3"]) > 1.2 * _retention("backdoor", seed)
