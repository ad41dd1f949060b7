"""Models: exact parameter counts, forward shapes, engine rounds with normalisation layers."""

import math

import pytest
import torch

from fedarena.config import load_config
from fedarena.run.simulation import Simulation
from fedarena.errors import ConfigError
from fedarena.registry import MODELS


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "name,shape,kw,count",
    [
        # RLR paper CNNs (reference-code-facts.md section 1): hand sums
        # fmnist-cnn: (1*32*9+32) + (32*64*9+64) + (9216*128+128) + (128*10+10)
        ("fmnist-cnn", (1, 28, 28), {}, 320 + 18496 + 1179776 + 1290),
        # cifar-cnn: convs 1792 + 73856 + 295168, FCs 131200 + 33024 + 2570
        ("cifar-cnn", (3, 32, 32), {}, 1792 + 73856 + 295168 + 131200 + 33024 + 2570),
        ("resnet20", (3, 32, 32), {}, 696618),  # rop-centered-clipping.md 5.2 (library variant)
        ("resnet20", (3, 32, 32), {"variant": "he"}, 269722),  # He et al.'s 0.27M ResNet-20
        ("resnet20", (3, 32, 32), {"norm": "group"}, 696618),  # GroupNorm has the same affine params as BN
        ("resnet18", (3, 32, 32), {}, 11173962),  # the usual CIFAR ResNet-18
        ("cnn", (1, 28, 28), {}, 44426),
        ("mlp", (1, 8, 8), {"hidden": (64,)}, 64 * 64 + 64 + 64 * 10 + 10),
    ],
)
def test_parameter_counts(name, shape, kw, count):
    m = MODELS.get(name)(shape, 10, **kw)
    assert n_params(m) == count


def test_rlr_cnn_counts_match_the_brief():
    assert n_params(MODELS.get("fmnist-cnn")((1, 28, 28), 10)) == 1_199_882
    assert n_params(MODELS.get("cifar-cnn")((3, 32, 32), 10)) == 537_610


@pytest.mark.parametrize(
    "name,shape,kw",
    [
        ("fmnist-cnn", (1, 28, 28), {}),
        ("fmnist-cnn", (1, 8, 8), {}),  # works on digits too
        ("cifar-cnn", (3, 32, 32), {}),
        ("cifar-cnn", (1, 28, 28), {}),
        ("resnet20", (3, 32, 32), {}),
        ("resnet20", (1, 8, 8), {"variant": "he"}),
        ("resnet18", (3, 32, 32), {}),
        ("cnn", (1, 8, 8), {}),
        ("mlp", (3, 32, 32), {}),
    ],
)
def test_forward_shapes(name, shape, kw):
    torch.manual_seed(0)
    m = MODELS.get(name)(shape, 7, **kw).eval()
    out = m(torch.rand(3, *shape))
    assert out.shape == (3, 7) and torch.isfinite(out).all()


def test_resnet_structure():
    m = MODELS.get("resnet18")((3, 32, 32), 10)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert not any(isinstance(x, torch.nn.MaxPool2d) for x in m.modules())
    assert sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules()) == 1 + 2 * 8 + 3  # stem, blocks, shortcuts
    lib = MODELS.get("resnet20")((3, 32, 32), 10)
    convs = [x for x in lib.modules() if isinstance(x, torch.nn.Conv2d)]
    assert all(c.bias is None for c in convs)
    assert sum(c.kernel_size == (3, 3) for c in convs) == 1 + 12  # "1 + 12 + 1 weighted layers"
    he = MODELS.get("resnet20")((3, 32, 32), 10, variant="he")
    assert sum(isinstance(x, torch.nn.Conv2d) for x in he.modules()) == 19  # 19 convs + fc = 20 layers
    gn = MODELS.get("resnet20")((3, 32, 32), 10, norm="group")
    assert not list(gn.buffers())


def test_dropout_active_in_train_only():
    torch.manual_seed(0)
    m = MODELS.get("fmnist-cnn")((1, 28, 28), 10)
    x = torch.rand(4, 1, 28, 28)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    assert not torch.equal(m(x), m(x))


def test_too_small_input_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^model\.name: cifar-cnn cannot take inputs of shape \(1, 8, 8\)"):
        MODELS.get("cifar-cnn")((1, 8, 8), 10)


def test_bad_model_option_via_config():
    with pytest.raises(ConfigError, match=r"^model\.variant: "):
        load_config(None, ["model.name=resnet20", "model.variant=resnet56"])


def _synthetic(size: int) -> dict:
    """Small colour images (16x16 keeps the ResNet rounds to about a second on one core)."""
    return {
        "data": {
            "dataset": "synthetic",
            "synthetic": {"image_size": size, "channels": 3, "train_size": 200, "test_size": 50},
        }
    }


def _one_round(*overrides: str, size: int = 16) -> tuple[Simulation, dict]:
    torch.manual_seed(0)
    cfg = load_config(None, ["fl.num_clients=2", "fl.rounds=1", "fl.batch_size=50", *overrides], base=_synthetic(size))
    sim = Simulation(cfg)
    res = sim.run()
    return sim, res.metrics[-1]


def test_groupnorm_resnet_round_vectorized():
    sim, m = _one_round("model.name=resnet20", "model.variant=he", "model.norm=group")
    assert math.isfinite(m["loss"]) and 0.0 <= m["main_acc"] <= 1.0


def test_paper_cnn_round_vectorized():
    sim, m = _one_round("model.name=cifar-cnn", size=24)
    assert math.isfinite(m["loss"])


def test_batchnorm_resnet_round_sequential():
    cfg = load_config(
        None,
        ["model.name=resnet20", "model.variant=he", "fl.num_clients=2", "fl.rounds=1", "fl.batch_size=50"],
        base=_synthetic(16),
    )
    sim = Simulation(cfg)
    before = {k: v.clone() for k, v in sim.buffers.items()}
    res = sim.run()
    m = res.metrics[-1]
    assert math.isfinite(m["loss"])
    # BN running statistics were trained by the clients and averaged into the global buffers
    assert not torch.equal(before["bn1.running_mean"], sim.buffers["bn1.running_mean"])
    # each client ran 100 / 50 = 2 batches; integer buffers take the max over clients
    assert int(sim.buffers["bn1.num_batches_tracked"]) == 2


def test_batchnorm_resnet_round_fedsgd():
    cfg = load_config(
        None,
        [
            "model.name=resnet20",
            "model.variant=he",
            "fl.num_clients=2",
            "fl.rounds=2",
            "fl.batch_size=20",
            "fl.algorithm=fedsgd",
        ],
        base=_synthetic(16),
    )
    sim = Simulation(cfg)
    before = sim.buffers["bn1.running_mean"].clone()
    res = sim.run()
    assert math.isfinite(res.metrics[-1]["loss"])
    assert not torch.equal(before, sim.buffers["bn1.running_mean"])
    assert int(sim.buffers["bn1.num_batches_tracked"]) == 2  # one minibatch per round


def test_registry_descriptions():
    for name in ("mlp", "cnn", "fmnist-cnn", "cifar-cnn", "resnet18", "resnet20"):
        assert MODELS.summary(name)
