"""IBA (Nguyen et al., NeurIPS 2023): the eps-bounded trigger, the generator trained
against a fixed model, its checkpointed weights, and a backdoor that outlasts a plain one."""

import pytest
import torch

from fedarena.attacks.base import DataInfo
from fedarena.attacks.iba import IBA, make_generator, poisoned_inputs
from fedarena.config import DEFAULT_RUN, load_config
from fedarena.errors import ConfigError
from fedarena.run.simulation import Simulation

pytestmark = pytest.mark.usefixtures("one_thread")


def test_trigger_is_eps_bounded_and_clamped():
    gen = torch.nn.Sequential(torch.nn.Flatten(0), torch.nn.Unflatten(0, (2, 1, 1, 2)))  # G(x) = x
    x = torch.tensor([[[[0.0, 1.0]]], [[[0.5, 0.9]]]])
    # x + 0.2 tanh(x), clamped: 0 -> 0; 1 + 0.2 tanh(1) -> 1; 0.5 + 0.2 tanh(0.5); 0.9 + 0.2 tanh(0.9) -> 1
    t = torch.tanh(torch.tensor(0.5)).item()
    assert torch.allclose(poisoned_inputs(gen, x, 0.2), torch.tensor([[[[0.0, 1.0]]], [[[0.5 + 0.2 * t, 1.0]]]]))
    gen = make_generator((1, 8, 8), 4)
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert ((poisoned_inputs(gen, x, 0.1) - x).abs() <= 0.1 + 1e-6).all()


def test_generator_learns_to_send_inputs_to_the_target():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
        model[1].bias.copy_(torch.tensor([-2.5, 0.0]))  # class 0 needs a pixel sum above 2.5
    a = IBA(target=0, source=1, eps=0.5, hidden=4, gen_steps=100, gen_lr=0.05)
    a.setup(DataInfo(2, (1, 2, 2)), torch.Generator().manual_seed(0))
    x = torch.full((8, 1, 2, 2), 0.5)  # sum 2.0: class 1; with +0.5 per pixel the sum reaches 4
    a.train_generator(model, dict(model.named_parameters()), {}, x, None)
    assert a.diagnostics()["trigger_hit_before"] == 0.0 and a.diagnostics()["trigger_hit_after"] == 1.0


def test_generator_weights_are_checkpointed():
    a = IBA(hidden=4)
    a.setup(DataInfo(10, (1, 8, 8)), torch.Generator().manual_seed(0))
    b = IBA(hidden=4)
    b.setup(DataInfo(10, (1, 8, 8)), torch.Generator().manual_seed(1))
    assert not torch.equal(a.gen_state["0.weight"], b.gen_state["0.weight"])
    b.load_state_dict(a.state_dict())
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(a.generator_module()(x), b.generator_module()(x))


def test_bad_parameters_are_one_clear_error():
    for kw, field in [
        ({"eps": 0.0}, "attack.eps"),
        ({"gen_lr": 0.0}, "attack.gen_lr"),
        ({"mask_ratio": 1.0}, "attack.mask_ratio"),
    ]:
        with pytest.raises(ConfigError, match=field):
            IBA(**kw)


def _run(attack):
    return Simulation(
        load_config(None, [f"attack.name={attack}", "fl.rounds=20", "attack.end_round=9"], base=DEFAULT_RUN)
    ).run()


def test_iba_backdoor_outlasts_a_plain_one_after_the_attack_stops():
    """Attack in rounds 0-9 of 20 (digits, 4 of 20 attackers). Measured: durability 5 rounds vs 2, BA 5 rounds after
    the attack 0.25 vs 0.16. Part of it is the eps = 0.3 trigger acting as an adversarial perturbation: the generator
    alone (attack.poison_frac=0) keeps BA near 0.27; with eps = 0.15 IBA is weaker than the plain backdoor."""
    iba, plain = _run("iba"), _run("backdoor")
    assert iba.summary["backdoor_durability"] > plain.summary["backdoor_durability"]
    assert iba.metrics[14]["backdoor_acc"] > plain.metrics[14]["backdoor_acc"]
