"""Edge-case backdoor and its tail sets: poisoning counts, held-out backdoor set, the
collude and adaptive variants (hand-computed), config errors and a small end-to-end run."""

import numpy as np
import pytest
import torch

from fedarena.attacks.base import DataInfo, RoundView
from fedarena.attacks.edge_case import EdgeCaseBackdoor
from fedarena.config import from_tree
from fedarena.data.edge_sets import fit_shape, load_edge_set, make_shapes
from fedarena.defenses.invariant import and_mask
from fedarena.core.layout import ParamLayout
from fedarena.run.simulation import Simulation
from fedarena.errors import ConfigError

INFO = DataInfo(10, (1, 8, 8))


def attack(**kw):
    a = EdgeCaseBackdoor(**kw)
    a.setup(INFO, torch.Generator().manual_seed(0))
    return a


def test_shapes_set_is_deterministic_and_in_range():
    a, b = make_shapes(50, (1, 8, 8), 3), make_shapes(50, (1, 8, 8), 3)
    assert torch.equal(a, b) and a.shape == (50, 1, 8, 8)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    s = load_edge_set("shapes", (3, 16, 16))
    assert s.x_train.shape == (1000, 3, 16, 16) and s.x_test.shape == (300, 3, 16, 16)
    assert not torch.equal(s.x_train[:300], s.x_test)  # held-out part is different


def test_fit_shape_resizes_and_repeats_channels():
    x = torch.rand(4, 1, 28, 28)
    y = fit_shape(x, (3, 8, 8))
    assert y.shape == (4, 3, 8, 8) and torch.equal(y[:, 0], y[:, 2])


def test_npz_tail_set(tmp_path):
    g = np.random.default_rng(0)
    p = tmp_path / "tail.npz"
    np.savez(p, x=g.integers(0, 256, size=(10, 8, 8), dtype=np.uint8))
    s = load_edge_set(str(p), (1, 8, 8))
    assert len(s.x_train) == 8 and len(s.x_test) == 2 and float(s.x_train.max()) <= 1.0
    q = tmp_path / "tail2.npz"
    np.savez(q, x_train=g.random((5, 8, 8, 3)).astype(np.float32), x_test=g.random((2, 8, 8, 3)).astype(np.float32))
    s = load_edge_set(str(q), (1, 8, 8))
    assert s.x_train.shape == (5, 1, 8, 8)
    with pytest.raises(ConfigError, match="attack.edge_set"):
        load_edge_set(str(tmp_path / "missing.npz"), (1, 8, 8))
    with pytest.raises(ConfigError, match="attack.edge_set"):
        load_edge_set("nope", (1, 8, 8))


def test_mnist_tail_from_shared_data(shared_data):
    s = load_edge_set("mnist", (1, 28, 28), root=str(shared_data), edge_class=7)
    assert s.name == "mnist-7" and 600 < len(s.x_train) < 1000 and 100 < len(s.x_test) < 300


def test_mnist_tail_falls_back_to_data_root(shared_data, monkeypatch):
    """Without attack.edge_root the tail is read from data.root (DataInfo.root), not only $FEDARENA_DATA."""
    monkeypatch.delenv("FEDARENA_DATA", raising=False)
    a = EdgeCaseBackdoor(edge_set="mnist", edge_class=7, target=9)
    a.setup(DataInfo(10, (1, 28, 28), "fashion-mnist", str(shared_data)), torch.Generator().manual_seed(0))
    assert a.edges.name == "mnist-7" and len(a.edges.x_train) == 838 and len(a.edges.x_test) == 232


def test_rare_tail_is_the_most_atypical_test_images(shared_data):
    s = load_edge_set("rare", (1, 28, 28), root=str(shared_data), edge_class=0, dataset="fashion-mnist", rare_frac=0.2)
    assert s.name == "rare-fashion-mnist-0" and len(s.x_train) == 100 and len(s.x_test) == 100
    with pytest.raises(ConfigError, match="attack.edge_dataset"):
        load_edge_set("rare", (1, 28, 28), edge_class=0)


@pytest.mark.parametrize(
    "mix,n,expect_edge,expect_clean", [("add", 56, 8, 56), ("replace", 64, 8, 56), ("add", 3, 1, 3)]
)
def test_poison_counts(mix, n, expect_edge, expect_clean):
    a = attack(target=3, mix=mix)  # 8 of 64 by default
    x, y = torch.rand(n, 1, 8, 8), torch.zeros(n, dtype=torch.long)
    px, py = a.poison(x, y, 0, torch.Generator().manual_seed(1))
    assert int((py == 3).sum()) == expect_edge and len(py) == expect_clean + expect_edge
    assert px.shape[1:] == (1, 8, 8)


def test_edge_share_follows_edge_per_batch():
    a = attack(edge_per_batch=16, batch_size=64)  # 25%
    _, py = a.poison(torch.rand(300, 1, 8, 8), torch.zeros(300, dtype=torch.long), 0, torch.Generator().manual_seed(2))
    assert int((py == 9).sum()) == 100  # 300 * .25 / .75


def test_backdoor_testset_is_the_held_out_tail():
    a = attack(target=4)
    x, y = torch.rand(20, 1, 8, 8), torch.arange(20) % 10
    bx, by = a.backdoor_testset(x, y)
    assert torch.equal(bx, a.edges.x_test) and bool((by == 4).all())


def test_inverted_tail_of_one_class():
    a = attack(edge_set="inverted", edge_class=1, target=0)
    x = torch.rand(40, 1, 8, 8)
    y = torch.arange(40) % 4
    px, py = a.poison(x, y, 0, torch.Generator().manual_seed(0))
    new = px[40:]
    src = x[y == 1]
    assert all(any(torch.allclose(1 - e, s) for s in src) for e in new)
    bx, by = a.backdoor_testset(x, y)
    assert torch.allclose(bx, 1 - x[y == 1]) and bool((by == 0).all())


def view(own, benign=None, prev=None):
    m, d = own.shape
    return RoundView(
        round=1,
        layout=ParamLayout(("w",), (torch.Size([d]),), (0,)),
        global_params=torch.zeros(d),
        prev_update=prev,
        malicious_ids=torch.arange(m),
        num_clients=m + (0 if benign is None else len(benign)),
        own_updates=own,
        benign_updates=benign,
        lr=1.0,
        algorithm="fedavg",
        generator=torch.Generator().manual_seed(0),
    )


def test_plain_edge_case_does_not_craft():
    assert attack().craft(view(torch.ones(2, 3))) is None
    assert attack().threat.knowledge == "own"


def test_collude_sends_the_mean():
    a = attack(collude=True)
    own = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    out = a.craft(view(own))
    assert torch.equal(out, torch.tensor([[2.0, 1.0], [2.0, 1.0]]))
    assert a.threat.collude


def test_adaptive_current_mask_hand_example():
    a = attack(adaptive=True, mask_tau=0.5)
    assert a.threat.knowledge == "benign" and a.threat.aggregator_aware
    benign = torch.tensor([[1.0, 1.0, -1.0], [1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])
    own = torch.tensor([[3.0, 4.0, 0.0]])
    # sign sums with the unscaled malicious row: [4, 2, -1] over 4 reports; tau*N = 2 -> mask [T, F, F]
    out = a.craft(view(own, benign))
    assert torch.allclose(out, torch.tensor([[5.0, 0.0, 0.0]]))
    assert torch.equal(and_mask(torch.cat([benign, own]), 0.5), torch.tensor([True, False, False]))
    assert a.diagnostics()["scale"] == pytest.approx(5 / 3)


def test_adaptive_previous_mask_and_collude_order():
    a = attack(adaptive=True, collude=True, adaptive_mask="previous")
    assert a.threat.knowledge == "own"
    own = torch.tensor([[2.0, 0.0, 2.0], [0.0, 4.0, 2.0]])  # mean [1, 2, 2]
    prev = torch.tensor([0.5, 0.0, -0.1])  # last global update: coordinates 0 and 2 passed
    out = a.craft(view(own, prev=prev))
    assert torch.allclose(out, torch.tensor([[1.0, 0.0, 2.0], [1.0, 0.0, 2.0]]) * (3 / 5**0.5))


def test_config_errors():
    with pytest.raises(ConfigError, match="attack.edge_per_batch"):
        EdgeCaseBackdoor(edge_per_batch=64)
    with pytest.raises(ConfigError, match="attack.target"):
        attack(target=10)
    with pytest.raises(ConfigError, match="attack.mix"):
        from_tree({"attack": {"name": "edge-case", "num_malicious": 1, "mix": "both"}})
    with pytest.raises(ConfigError, match="attack.edge_class"):
        attack(edge_set="inverted", edge_class=12)


def test_end_to_end_backdoor_succeeds_against_fedavg():
    tree = {
        "data": {"dataset": "digits", "partition": "iid"},
        "fl": {"num_clients": 10, "rounds": 12, "batch_size": 16, "lr": 0.1},
        "attack": {"name": "edge-case", "num_malicious": 3, "target": 9, "batch_size": 16, "edge_per_batch": 4},
        "defense": {"name": "fedavg"},
        "eval": {"every": 12},
    }
    attacked = Simulation(from_tree(tree)).run().summary
    clean = Simulation(from_tree({**tree, "attack": {**tree["attack"], "start_round": 1000}})).run().summary
    assert attacked["final_backdoor_acc"] >= clean["final_backdoor_acc"] + 0.3
    assert attacked["final_main_acc"] >= clean["final_main_acc"] - 0.1
