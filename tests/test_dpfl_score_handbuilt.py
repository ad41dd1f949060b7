"""One hand-built Robust-DPFL round (Qi, Wang, Huang, AAAI 2024; LeadFL report Sec. VI, Eq. 11-12):
the Eq. 12 score as the report writes it (on the upload S) and as the authors' code computes it
(on the model w + S, with the attacker rescaling its whole model), with every value worked out
by hand, plus the two facts the reproduction's diagnosis rests on."""

from __future__ import annotations

import math

import pytest
import torch

from fedarena.attacks.base import DataInfo, RoundView
from fedarena.attacks.dpfl import AttackDPFL
from fedarena.core.layout import ParamLayout
from fedarena.defenses.base import RoundContext
from fedarena.defenses.robust_dpfl import RobustDPFL, dpfl_scores

# the round: d = 4, global model w (coordinate mean 0), three honest uploads S1..S3 (already clipped
# and noised), one attacker with its poisoned update G and the upload S_a it would have sent honestly
W = torch.tensor([0.1, 0.1, -0.1, -0.1], dtype=torch.float64)
HONEST = torch.tensor([[2.0, -2.0, 2.0, -2.0], [-2.0, 2.0, 2.0, -2.0], [2.4, -2.0, -2.0, 2.0]], dtype=torch.float64)
G = torch.tensor([[1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
S_A = torch.tensor([[2.0, 2.0, 2.0, -2.0]], dtype=torch.float64)  # ||S_a|| = 4


def _craft(scope: str, g: torch.Tensor = G, centered: bool = False) -> torch.Tensor:
    a = AttackDPFL(target=0, scope=scope, centered=centered)
    a.setup(DataInfo(10, (1, 2, 2)), torch.Generator())
    view = RoundView(
        round=1,
        layout=ParamLayout.from_params({"w": torch.zeros(4)}),
        global_params=W.clone(),
        prev_update=None,
        malicious_ids=torch.tensor([3]),
        num_clients=4,
        own_updates=g.clone(),
        benign_updates=None,
        lr=1.0,
        algorithm="fedavg",
        generator=torch.Generator(),
        uploads=S_A.clone(),
    )
    return a.craft(view)


def _ctx() -> RoundContext:
    return RoundContext(
        round=1,
        layout=ParamLayout.from_params({"w": torch.zeros(4)}),
        client_ids=torch.arange(4),
        num_samples=torch.ones(4),
        global_params=W.clone(),
    )


def test_update_scope_eq11_eq12_by_hand():
    # Eq. 11: A = ||S_a|| / ||G|| = 4 / sqrt(2) = 2 sqrt(2); A G = (2.8284, 2.8284, 0, 0)
    up = _craft("update")
    assert torch.allclose(up, torch.tensor([[2 * math.sqrt(2), 2 * math.sqrt(2), 0.0, 0.0]], dtype=torch.float64))
    U = torch.cat([HONEST, up])
    # Eq. 12 on the upload: |mean| = 0, 0, |0.4 / 4| = 0.1, |4 sqrt(2) / 4| = sqrt(2)
    z = dpfl_scores(U)
    assert z.tolist() == pytest.approx([0.0, 0.0, 0.1, math.sqrt(2)])
    # = ||S_a|| / sqrt(d) * kappa(G), kappa = |sum G| / (sqrt(d) ||G||) = 2 / (2 sqrt 2): 2 * 0.70711 = sqrt(2)
    kappa = float(G.sum().abs() / (2 * G.norm()))
    assert float(z[3]) == pytest.approx(4 / 2 * kappa)
    # K-means on (0, 0, 0.1, 1.414): the attacker alone in the high cluster, with and without the 2x guard
    for sep in (1.0, 2.0):
        out = RobustDPFL(separation=sep)(U, _ctx())
        assert out.weights.tolist() == [True, True, True, False]
        assert torch.allclose(out.update, HONEST.mean(0))


def test_weights_scope_follows_the_authors_code_by_hand():
    # the attacker rescales w + G = (1.1, 1.1, -0.1, -0.1), norm sqrt(2.44), to ||w + S_a|| = ||(2.1, 2.1, 1.9, -2.1)||
    # = sqrt(16.84): A = sqrt(6.901639) = 2.627097, upload A (w + G) - w = (2.789807, 2.789807, -0.162710, -0.162710)
    A = math.sqrt(16.84 / 2.44)
    up = _craft("weights")
    expected = A * torch.tensor([1.1, 1.1, -0.1, -0.1], dtype=torch.float64) - W
    assert torch.allclose(up, expected.unsqueeze(0))
    assert float(up[0, 0]) == pytest.approx(2.789807, abs=1e-6) and float(up[0, 2]) == pytest.approx(
        -0.162710, abs=1e-6
    )
    # the score of w + S: honest |0 + 0|, |0 + 0|, |0 + 0.1|; attacker |mean A (w + G)| = A * 0.5 = 1.313549
    U = torch.cat([HONEST, up])
    out = RobustDPFL(scope="weights", separation=1.0)(U, _ctx())
    assert out.info["client_scores"].tolist() == pytest.approx([0.0, 0.0, 0.1, A * 0.5])
    assert out.weights.tolist() == [True, True, True, False]


def test_a_poison_without_a_coordinate_mean_is_invisible_in_both_scopes():
    # G = (1, -1, 0.5, -0.5): sum 0, so Eq. 12 gives A |mean G| = 0 on the upload, and on the model
    # A |mean(w + G)| = A |0 + 0| = 0: the attacker scores below the honest S3 (0.1) in both scopes,
    # and the authors' K-means (no separation guard) drops the honest S3 instead
    g = torch.tensor([[1.0, -1.0, 0.5, -0.5]], dtype=torch.float64)
    for scope in ("update", "weights"):
        U = torch.cat([HONEST, _craft(scope, g)])
        out = RobustDPFL(scope=scope, separation=1.0)(U, _ctx())
        z = out.info["client_scores"]
        assert float(z[3]) == pytest.approx(0.0, abs=1e-12) and float(z[2]) == pytest.approx(0.1)
        assert out.weights.tolist() == [True, True, False, True]
    # the mean-centred attacker ("smarter attacker") is this case by construction: (0.5, 0.5, -0.5, -0.5)
    assert dpfl_scores(_craft("update", centered=True)).tolist() == pytest.approx([0.0], abs=1e-12)


def test_softmax_output_layer_update_has_no_coordinate_mean():
    # for softmax cross-entropy dL/dz_k = p_k - y_k sums to 0 over the classes k, so every column of the
    # output layer's weight gradient (p_k - y_k) h_j and its bias gradient sum to 0: an SGD update of the
    # output layer has coordinate sum 0 whatever the data (backdoored or not); only hidden layers can
    # give an update a coordinate mean for Eq. 12 to see
    gen = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).double()
    x = torch.randn(16, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=gen)
    torch.nn.functional.cross_entropy(net(x), y).backward()
    out_w, out_b = net[2].weight.grad, net[2].bias.grad
    assert float(out_w.sum(0).abs().max()) < 1e-12 and abs(float(out_b.sum())) < 1e-12
    assert abs(float(net[0].weight.grad.sum())) > 1e-6  # the hidden layer's does not cancel


def test_authors_poisoning_adds_a_triggered_copy_of_every_sample():
    a = AttackDPFL(target=0, copies=True, trigger="square", trigger_size=2)
    a.setup(DataInfo(10, (1, 8, 8)), torch.Generator())
    x = torch.zeros(3, 1, 8, 8)
    y = torch.tensor([0, 4, 7])
    px, py = a.poison(x, y, 5, torch.Generator())
    assert px.shape == (6, 1, 8, 8) and py.tolist() == [0, 4, 7, 0, 0, 0]
    assert torch.equal(px[:3], x)  # the clean samples are kept
    assert all(int((px[i] != 0).sum()) == 4 for i in range(3, 6))  # each copy carries the 2x2 trigger
    assert a.poisoned_counts[5] == 3
