"""Attack-DPFL (Eq. 11) and Robust-DPFL (Eq. 12 + 1-D K-means): hand values and U13."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedarena.attacks.base import DataInfo, RoundView
from fedarena.attacks.dpfl import AttackDPFL
from fedarena.core.layout import ParamLayout
from fedarena.defenses.base import RoundContext
from fedarena.defenses.robust_dpfl import RobustDPFL, dpfl_scores, kmeans_keep
from fedarena.errors import ConfigError


def test_u13_score_of_noise_amplified_and_centred_vectors():
    d, sigma, C = 10_000, 1.0, 1.0
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(1000, d, generator=gen, dtype=torch.float64) * sigma * C
    expected = sigma * C * math.sqrt(2 / math.pi) / math.sqrt(d)
    assert float(dpfl_scores(noise).mean()) == pytest.approx(expected, rel=0.05)
    # amplified all-positive poison: A = sigma C sqrt(d) / ||G_u||; Z = sigma C exactly for a constant G_u
    G = torch.full((1, d), 0.3, dtype=torch.float64)
    amplified = G * (sigma * C * math.sqrt(d) / torch.linalg.vector_norm(G))
    assert float(dpfl_scores(amplified)[0]) == pytest.approx(sigma * C, rel=1e-9)
    assert float(dpfl_scores(amplified)[0]) / expected == pytest.approx(math.sqrt(d) * math.sqrt(math.pi / 2), rel=0.01)
    # the smarter attacker: a mean-centred G_u scores 0
    Gu = torch.rand(1, d, generator=gen, dtype=torch.float64)
    centred = Gu - Gu.mean()
    centred = centred * (sigma * C * math.sqrt(d) / torch.linalg.vector_norm(centred))
    assert float(dpfl_scores(centred)[0]) < 1e-12


def test_kmeans_drops_the_high_cluster_and_keeps_all_without_separation():
    z = np.array([0.01, 0.012, 0.009, 0.011, 1.0, 1.1])
    assert kmeans_keep(z).tolist() == [True, True, True, True, False, False]
    z = np.array([0.010, 0.012, 0.009, 0.011, 0.015])  # centroids ~0.0105 and 0.015: ratio < 2
    assert kmeans_keep(z).all()
    assert kmeans_keep(np.array([0.5, 0.5, 0.5])).all()  # one distinct value
    assert kmeans_keep(np.array([0.01, 0.015, np.inf])).tolist() == [True, True, False]


def test_robust_dpfl_averages_the_kept_rows():
    U = torch.tensor([[1.0, -1.0, 0.1], [-0.5, 0.5, 0.0], [0.2, -0.1, -0.1], [3.0, 3.0, 3.0]])
    # scores: 0.0333, 0, 0, 3 -> the last row is dropped
    ctx = RoundContext(
        round=0,
        layout=ParamLayout.from_params({"w": torch.zeros(3)}),
        client_ids=torch.arange(4),
        num_samples=torch.ones(4),
    )
    out = RobustDPFL()(U, ctx)
    assert out.weights.tolist() == [True, True, True, False]
    assert torch.allclose(out.update, U[:3].mean(0))
    assert out.info["num_dropped"] == 1
    with pytest.raises(ConfigError, match="defense.separation"):
        RobustDPFL(separation=0.5)


def _view(own, uploads):
    d = own.shape[1]
    return RoundView(
        round=3,
        layout=ParamLayout.from_params({"w": torch.zeros(d)}),
        global_params=torch.zeros(d),
        prev_update=None,
        malicious_ids=torch.arange(len(own)),
        num_clients=10,
        own_updates=own,
        benign_updates=None,
        lr=1.0,
        algorithm="fedavg",
        generator=torch.Generator(),
        uploads=uploads,
    )


def test_attack_dpfl_amplifies_to_the_noised_upload_norm():
    a = AttackDPFL(target=0)
    a.setup(DataInfo(10, (1, 8, 8)), torch.Generator())
    own = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]])
    uploads = torch.tensor([[10.0, 0.0, 0.0], [0.0, 2.0, 0.0]])  # norms 10 and 2
    out = a.craft(_view(own, uploads))
    assert torch.allclose(out, torch.tensor([[6.0, 8.0, 0.0], [0.0, 0.0, 2.0]]))  # A = 10/5 and 2/1
    assert a.diagnostics()["amplification"] == pytest.approx(2.0)
    assert torch.allclose(a.craft(_view(own, None)), own)  # no client-side DP: A = 1


def test_smarter_attacker_is_mean_centred():
    a = AttackDPFL(target=0, centered=True)
    a.setup(DataInfo(10, (1, 8, 8)), torch.Generator())
    own = torch.tensor([[1.0, 2.0, 3.0]])
    out = a.craft(_view(own, torch.tensor([[0.0, 0.0, 2.0 * math.sqrt(2.0)]])))
    # centred (-1, 0, 1), norm sqrt(2) -> amplified to norm 2 sqrt(2): (-2, 0, 2)
    assert torch.allclose(out, torch.tensor([[-2.0, 0.0, 2.0]]), atol=1e-6)
    assert float(dpfl_scores(out)[0]) < 1e-7


def test_scope_weights_follows_the_authors_code():
    # attack: rescale the whole model w + G_u to ||w + S||, upload the difference to w
    a = AttackDPFL(target=0, scope="weights")
    a.setup(DataInfo(10, (1, 8, 8)), torch.Generator())
    v = _view(torch.tensor([[0.0, 1.0]]), torch.tensor([[3.0, 7.0]]))
    v.global_params = torch.tensor([3.0, 0.0])
    # w + G = (3, 1), ||.|| = sqrt(10); w + S = (6, 7), ||.|| = sqrt(85); A = sqrt(8.5)
    out = a.craft(v)
    assert torch.allclose(out, math.sqrt(8.5) * torch.tensor([[3.0, 1.0]]) - torch.tensor([[3.0, 0.0]]), atol=1e-5)
    # defense: the score is taken on w + S
    U = torch.tensor([[1.0, -1.0], [0.0, 0.0], [0.5, -0.5], [2.0, 2.0]])
    ctx = RoundContext(
        round=0,
        layout=ParamLayout.from_params({"w": torch.zeros(2)}),
        client_ids=torch.arange(4),
        num_samples=torch.ones(4),
        global_params=torch.tensor([-1.0, 1.0]),
    )
    out = RobustDPFL(scope="weights")(U, ctx)  # scores of w + S: 0, 0, 0, 2 -> the last row dropped
    assert out.weights.tolist() == [True, True, True, False]
    assert RobustDPFL()(U, ctx).weights.tolist() == [True, True, True, False]  # update scope: 0, 0, 0, 2 too
