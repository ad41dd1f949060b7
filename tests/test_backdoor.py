"""Backdoor attacks: poisoning counts (RLR spec U9), evaluation sets and metrics (U12),
distributed triggers, boosting, the negated-loss variant, and a small end-to-end run."""

import math

import pytest
import torch

from fedarena.attacks.backdoor_adaptive import NegatedLossBackdoor, negated_cross_entropy
from fedarena.attacks.base import DataInfo, RoundView
from fedarena.attacks.data_poisoning import Backdoor, LabelFlip
from fedarena.config import load_config
from fedarena.core.layout import ParamLayout
from fedarena.core.recipe import TrainRecipe, cross_entropy
from fedarena.run.simulation import Simulation
from fedarena.errors import ConfigError
from fedarena.core.metrics import backdoor_accuracy, class_accuracy
from fedarena.registry import ATTACKS

INFO = DataInfo(10, (1, 28, 28))


pytestmark = pytest.mark.usefixtures("one_thread")


def _client_data(seed=0, n=200):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.arange(n) % 10  # 20 samples per class
    return x, y


def _attack(**kw):
    a = Backdoor(**{"target": 7, "source": 5, "trigger": "plus", **kw})
    a.setup(INFO, torch.Generator().manual_seed(0))
    return a


@pytest.mark.parametrize("frac,expected", [(0.5, 10), (0.33, 6), (1.0, 20), (0.0, 0), (0.04, 0)])
def test_poisons_floor_of_frac_times_source_samples(frac, expected):
    a = _attack(poison_frac=frac)
    x, y = _client_data()
    px, py = a.poison(x, y, client_id=3, generator=torch.Generator().manual_seed(1))
    assert expected == math.floor(frac * 20)
    changed = (px != x).flatten(1).any(1)
    relabelled = py != y
    assert int(relabelled.sum()) == expected and torch.equal(changed, relabelled)
    assert (y[relabelled] == 5).all() and (py[relabelled] == 7).all()
    # the other samples are byte-identical, the size unchanged
    assert torch.equal(px[~changed], x[~changed]) and torch.equal(py[~relabelled], y[~relabelled])
    assert len(py) == len(y) and a.poisoned_counts[3] == expected
    # the poisoned ones carry exactly the plus
    if expected:
        assert torch.equal(px[changed], a.trigger.apply(x[changed]))


def test_no_source_means_all_non_target_classes():
    a = _attack(source=None, poison_frac=0.5)
    x, y = _client_data()
    _, py = a.poison(x, y, 0, torch.Generator().manual_seed(0))
    assert int((py != y).sum()) == math.floor(0.5 * 180)
    bx, by = a.backdoor_testset(x, y)
    assert len(by) == 180 and (by == 7).all()


def test_backdoor_testset_is_every_source_test_sample_triggered():
    a = _attack()
    x, y = _client_data(seed=5)
    bx, by = a.backdoor_testset(x, y)
    assert len(bx) == int((y == 5).sum()) and (by == 7).all()
    assert torch.equal(bx, a.trigger.apply(x[y == 5]))
    assert a.source_class == 5


def test_metrics_on_hand_made_predictions():
    # U12: backdoor accuracy = share of triggered predictions equal to the target
    assert backdoor_accuracy(torch.tensor([7, 7, 1, 7]), 7) == 0.75
    assert math.isnan(backdoor_accuracy(torch.tensor([], dtype=torch.long), 7))
    # base-class accuracy = per-class accuracy of the source class
    y = torch.tensor([5, 5, 5, 5, 1, 1])
    pred = torch.tensor([5, 7, 5, 5, 1, 5])
    assert class_accuracy(pred, y, 5) == 0.75 and class_accuracy(pred, y, 1) == 0.5


def test_dba_parts_follow_malicious_rank_and_eval_uses_full_trigger():
    a = Backdoor(target=7, source=5, trigger="plus", dba=True)
    a.setup(DataInfo(10, (3, 32, 32)), torch.Generator())
    x, y = torch.full((100, 3, 32, 32), 0.5), torch.full((100,), 5)
    stamped = []
    for cid in (2, 11, 17, 30, 41):  # the engine poisons malicious clients in sorted order
        px, _ = a.poison(x.clone(), y.clone(), cid, torch.Generator().manual_seed(cid))
        row = px[(px != x).flatten(1).any(1)][0]
        stamped.append({tuple(p) for p in torch.nonzero(row[0] == 0).tolist()})
    assert stamped[0] == {(r, 5) for r in range(5, 9)}
    assert stamped[1] == {(r, 5) for r in range(9, 12)}
    assert stamped[4] == stamped[0]  # part j mod 4
    bx, _ = a.backdoor_testset(x[:3], y[:3])
    assert int((bx[0, 0] == 0).sum()) == 13  # the full 7x7 plus


def test_boost_scales_own_updates():
    a = _attack(boost=10.0)
    own = torch.randn(2, 5)
    layout = ParamLayout.from_params({"w": torch.zeros(5)})
    view = RoundView(
        0, layout, torch.zeros(5), None, torch.tensor([0, 1]), 10, own, None, 1.0, "fedavg", torch.Generator()
    )
    assert torch.equal(a.craft(view), own * 10.0)
    assert _attack().craft(view) is None  # boost 1: rows unchanged


def test_negated_loss_recipe():
    a = NegatedLossBackdoor(target=7, source=5)
    base = TrainRecipe(lr=0.1, momentum=0.9, grad_clip=10.0)
    r = a.recipe(base, 0)
    assert r.loss is negated_cross_entropy and r.grad_clip == 10.0 and r.momentum == 0.9 and r.vectorize
    assert a.recipe(base, 1) == r  # one group: trained vectorized together
    logits, y = torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
    assert torch.allclose(negated_cross_entropy(logits, y), -cross_entropy(logits, y))
    assert "backdoor-negated" in ATTACKS


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"poison_frac": 1.5}, "attack.poison_frac"),
        ({"trigger": "star"}, "attack.trigger"),
        ({"boost": 0.0}, "attack.boost"),
        ({"dba_parts": 0}, "attack.dba_parts"),
    ],
)
def test_bad_parameters(kwargs, field):
    with pytest.raises(ConfigError) as e:
        Backdoor(target=7, **kwargs)
    assert str(e.value).startswith(field)


def test_bad_classes_at_setup():
    with pytest.raises(ConfigError, match="attack.source: must differ"):
        _attack(source=7)
    with pytest.raises(ConfigError, match="attack.target: class 12 out of range"):
        _attack(target=12)


def test_label_flip_unchanged():
    a = LabelFlip()
    a.setup(INFO, torch.Generator())
    y = torch.tensor([0, 3, 9])
    assert a.poison(None, y, 0, None)[1].tolist() == [9, 6, 0]
    b = LabelFlip(source=3, target=1)
    b.setup(INFO, torch.Generator())
    assert b.poison(None, y, 0, None)[1].tolist() == [0, 1, 9]


def test_config_keys_reach_the_attack():
    cfg = load_config(
        None,
        [
            "attack.name=backdoor",
            "attack.num_malicious=1",
            "attack.trigger=square",
            "attack.trigger_position=[0,0]",
            "attack.trigger_size=3",
            "attack.source=1",
            "attack.target=7",
        ],
    )
    a = ATTACKS.build(cfg.attack.name, cfg.attack.params())
    assert a.trigger_position == (0, 0) and a.trigger_size == 3
    with pytest.raises(ConfigError, match="attack.trigger_sise: unknown parameter"):
        load_config(None, ["attack.name=backdoor", "attack.num_malicious=1", "attack.trigger_sise=3"])


BASE = [
    "data.dataset=digits",
    "fl.num_clients=10",
    "fl.rounds=40",
    "fl.local_epochs=2",
    "fl.batch_size=32",
    "fl.lr=0.1",
    "fl.momentum=0.9",
    "fl.grad_clip=10",
    "attack.name=backdoor",
    "attack.num_malicious=1",
    "attack.source=1",
    "attack.target=7",
    "attack.trigger=plus",
    "eval.every=40",
    "seed=0",
]


def test_fedavg_gets_backdoored_and_engine_poisons_exactly_the_malicious():
    sim = Simulation(load_config(None, BASE))
    (cid,) = sim.malicious.tolist()
    n_base = int((sim.data.y_train[torch.from_numpy(sim.client_index[cid])] == 1).sum())
    assert sim.attack.poisoned_counts == {cid: n_base // 2}
    py = sim.y_store[torch.from_numpy(sim.poisoned_index[cid])]
    y = sim.data.y_train[torch.from_numpy(sim.client_index[cid])]
    assert int((py != y).sum()) == n_base // 2
    s = sim.run().summary
    assert s["final_backdoor_acc"] >= 0.5 and s["final_main_acc"] >= 0.9


def test_attack_window_clean_outside():
    """Attackers are honest outside [start_round, end_round]: an attack whose window starts
    after the last round leaves exactly the no-attack model (same partition, same draws)."""
    late = load_config(None, BASE[:-2] + ["eval.every=5", "fl.rounds=5", "attack.start_round=5"])
    none = load_config(None, [b for b in BASE if not b.startswith("attack.")] + ["fl.rounds=5", "eval.every=5"])
    r1, r2 = Simulation(late).run(), Simulation(none).run()
    assert r1.metrics[-1]["loss"] == r2.metrics[-1]["loss"]
    assert r1.metrics[-1]["main_acc"] == r2.metrics[-1]["main_acc"]
