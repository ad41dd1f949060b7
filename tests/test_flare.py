"""FLARE (Wang et al., AsiaCCS 2022): MMD, nominations and trust scores by hand; the
aggregate on a tiny model; end to end the backdoor's clients get no weight."""

import math

import pytest
import torch

from fedarena.config import DEFAULT_RUN, load_config
from fedarena.core.layout import ParamLayout
from fedarena.defenses.base import RoundContext
from fedarena.defenses.flare import FLARE, mmd2, nomination_counts, trust_scores
from fedarena.defenses.probe import ModelProbe
from fedarena.errors import ConfigError
from fedarena.run.simulation import Simulation


def test_mmd_by_hand():
    # A = {0, 2}, B = {1}, h2 = 1: k(A, A) = (1 + e^-2 + e^-2 + 1) / 4, k(B, B) = 1, k(A, B) = e^-0.5
    A, B = torch.tensor([[0.0], [2.0]], dtype=torch.float64), torch.tensor([[1.0]], dtype=torch.float64)
    expected = (2 + 2 * math.exp(-2)) / 4 + 1 - 2 * math.exp(-0.5)
    assert math.isclose(float(mmd2(A, B, 1.0)), expected, rel_tol=1e-12)
    assert float(mmd2(A, A, 1.0)) == 0.0


def test_nominations_and_trust_scores_by_hand():
    D = torch.tensor([[0.0, 1.0, 3.0, 9.0], [1.0, 0.0, 2.0, 9.0], [3.0, 2.0, 0.0, 8.0], [9.0, 9.0, 8.0, 0.0]])
    # k = 2: 0 -> {1, 2}, 1 -> {0, 2}, 2 -> {1, 0}, 3 -> {2, 0 or 1: 9 = 9, first index 0}
    c = nomination_counts(D, 2)
    assert c[:3].sum() == 8 and c[3] == 0 and c[2] == 3
    # softmax of (3, 2, 1) with tau = 1 and tau = 2
    e = [math.exp(3), math.exp(2), math.exp(1)]
    assert torch.allclose(
        trust_scores(torch.tensor([3, 2, 1])), torch.tensor([v / sum(e) for v in e], dtype=torch.float64)
    )
    e2 = [math.exp(1.5), math.exp(1), math.exp(0.5)]
    assert torch.allclose(
        trust_scores(torch.tensor([3, 2, 1]), 2.0), torch.tensor([v / sum(e2) for v in e2], dtype=torch.float64)
    )


def _ctx(probe, n):
    return RoundContext(
        0,
        probe.layout,
        torch.arange(n),
        torch.ones(n),
        global_params=torch.zeros(probe.layout.dim),
        extras={"probe": probe},
    )


def test_an_outlying_model_gets_the_smallest_trust():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 2))
    layout = ParamLayout.from_module(model)
    probe = ModelProbe(model, {}, layout, (2,), 2, root_x=torch.randn(20, 2))
    base = torch.randn(layout.dim)
    U = torch.stack([base + 0.01 * torch.randn(layout.dim) for _ in range(4)] + [base + 5.0 * torch.randn(layout.dim)])
    agg = FLARE(neighbors=2, drop_below=0.0)(U, _ctx(probe, 5))
    counts = agg.info["client_scores"]
    assert counts[4] == 0 and counts.sum() == 10  # 5 clients x 2 nominations, none for the outlier
    # weights = softmax(counts): recompute from the counts
    assert torch.allclose(agg.weights.double(), torch.softmax(counts, 0), atol=1e-6)
    assert torch.allclose(agg.update, agg.weights @ U, atol=1e-5)
    # drop_below = 0.5: a trust score under 0.5 / 5 = 0.1 is rejected, the rest renormalised
    agg = FLARE(neighbors=2, drop_below=0.5)(U, _ctx(probe, 5))
    kept = torch.softmax(counts, 0) >= 0.1
    assert torch.equal(agg.weights > 0, kept) and math.isclose(float(agg.weights.sum()), 1.0, rel_tol=1e-6)


def test_bad_parameters_and_missing_auxiliary_data():
    with pytest.raises(ConfigError, match="defense.root_size"):
        FLARE(root_size=1)
    with pytest.raises(ConfigError, match="defense.tau"):
        FLARE(tau=0.0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    probe = ModelProbe(model, {}, ParamLayout.from_module(model), (2,), 2)
    with pytest.raises(ConfigError, match="defense.root_size"):
        FLARE()(torch.zeros(3, probe.layout.dim), _ctx(probe, 3))


@pytest.mark.usefixtures("one_thread")
def test_flare_gives_the_backdoor_clients_no_weight():
    r = Simulation(
        load_config(None, ["defense.name=flare", "fl.rounds=8", "defense.root_size=50"], base=DEFAULT_RUN)
    ).run()
    mal = [c["weight"] for c in r.clients if c["attacking"]]
    ben = [c["weight"] for c in r.clients if not c["attacking"]]
    # measured (12 rounds, 100 samples): every attacking row rejected, BA 0.0; but with tau = 1 the softmax also
    # drops benign clients nominated less often (FPR 0.45)
    assert sum(w <= 0 for w in mal) / len(mal) >= 0.9
    assert sum(w <= 0 for w in ben) / len(ben) < 0.7
    assert r.summary["final_backdoor_acc"] <= 0.1
