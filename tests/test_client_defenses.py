"""Client-side defenses (defenses/client.py): the LeadFL spec's U3-U7 and U10 via
reproduce/leadfl_units.py, vectorized == sequential for every recipe, config errors, and
that attackers never apply them."""

import numpy as np
import pytest
import torch

from fedarena.config import load_config
from fedarena.core.local import BatchSchedule, train_sequential, train_vectorized
from fedarena.core.recipe import TrainRecipe
from fedarena.defenses.client import client_defense, laplace
from fedarena.errors import ConfigError
from fedarena.models.simple import MLP, LeNet
from fedarena.reproduce import leadfl_units as units


@pytest.mark.parametrize("name", ["U2", "U3", "U4", "U5", "U7", "U8", "U9", "U10"])
def test_unit_claims(name):
    ours, ok = units.UNITS[name]()
    assert ok, ours


@pytest.mark.parametrize("double", [True, False])
def test_u6_ref_equals_the_reference_code_loop(double):
    """LeadFLRef == the authors' loop written with torch.optim.SGD (momentum, un-zeroed grads,
    clip_grad_value_, per-epoch reset, no regulariser on an epoch's first batch)."""
    err, ok = units.u6_reference_code(double)
    assert ok, err


def test_laplace_sampler_scale():
    x = laplace((200_000,), 0.2, torch.Generator().manual_seed(0))
    assert float(x.abs().mean()) == pytest.approx(0.2, rel=0.02)  # E|X| = s
    assert abs(float(x.mean())) < 0.005


HOOKS = [("leadfl", "ref", True), ("leadfl", "ref", False), ("leadfl", "a3", True), ("leadfl", "a1n", True),
         ("ldp", "ref", True), ("fl-wbc", "ref", True)]


@pytest.mark.parametrize("name,variant,double", HOOKS)
def test_vectorized_equals_sequential_with_client_defense(name, variant, double):
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10)
    g = torch.Generator().manual_seed(0)
    sizes = (13, 30, 7, 25)  # unequal: clients stop at different steps
    x, y = torch.rand(sum(sizes), 1, 8, 8, generator=g), torch.randint(0, 10, (sum(sizes),), generator=g)
    bounds = np.cumsum((0,) + sizes)
    index = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(sizes))]
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    hook = client_defense(name, variant, 0.4, 0.2, double)
    recipe = TrainRecipe(lr=0.05, momentum=0.1, batch_size=8, epochs=2, step_hook=hook)
    sched = BatchSchedule.build(list(sizes), recipe, [np.random.default_rng([1, i]) for i in range(4)])
    U_vec = train_vectorized(model, params, x, y, index, sched, recipe, chunk_size=3)
    U_seq, _ = train_sequential(model, params, x, y, index, sched, recipe)
    plain = TrainRecipe(lr=0.05, momentum=0.1, batch_size=8, epochs=2)
    U_plain, _ = train_sequential(model, params, x, y, index, BatchSchedule.build(
        list(sizes), plain, [np.random.default_rng([1, i]) for i in range(4)]), plain)
    assert torch.allclose(U_vec, U_seq, atol=1e-5, rtol=1e-4)
    assert (U_seq - U_plain).abs().max() > 1e-4  # the defense changed the training


@pytest.mark.parametrize("name", ["leadfl", "fl-wbc"])
def test_vectorized_equals_sequential_cnn_fold(name):
    torch.manual_seed(0)
    model = LeNet((1, 28, 28), 10)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(30, 1, 28, 28, generator=g), torch.randint(0, 10, (30,), generator=g)
    index = [np.arange(0, 15), np.arange(15, 30)]
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    recipe = TrainRecipe(lr=0.05, momentum=0.1, batch_size=8, epochs=1, step_hook=client_defense(name))
    sched = BatchSchedule.build([15, 15], recipe, [np.random.default_rng(i) for i in range(2)])
    U_vec = train_vectorized(model, params, x, y, index, sched, recipe)
    U_seq, _ = train_sequential(model, params, x, y, index, sched, recipe)
    assert torch.allclose(U_vec, U_seq, atol=1e-5, rtol=1e-4)


def test_attackers_train_without_the_client_defense():
    from fedarena.run.simulation import Simulation

    base = ["fl.num_clients=10", "fl.rounds=1", "attack.name=backdoor", "attack.num_malicious=3",
            "attack.poison_frac=0.0"]
    plain = Simulation(load_config(None, base))
    lead = Simulation(load_config(None, base + ["defense.client=leadfl"]))
    cohort = plain.sample_clients(0)
    U0, U1 = plain.local_updates(0, cohort, True), lead.local_updates(0, cohort, True)
    mal = torch.from_numpy(plain.is_malicious[cohort])
    assert torch.allclose(U0[mal], U1[mal])  # attackers: identical to no defense
    assert not torch.allclose(U0[~mal], U1[~mal])  # benign: changed


@pytest.mark.parametrize("override,field", [
    ("defense.client=dp", "defense.client"), ("defense.client_variant=paper", "defense.client_variant"),
    ("defense.pert_strength=0", "defense.pert_strength"),
])
def test_bad_client_defense_settings_are_one_line_errors(override, field):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert e.value.field == field


def test_client_defense_composes_with_server_rules_and_survives_a_name_change():
    cfg = load_config(None, ["defense.client=ldp", "defense.name=median"])
    assert cfg.defense.client == "ldp" and cfg.defense.name == "median"
