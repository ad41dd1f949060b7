import math

import numpy as np
import torch

from fedarena.core.layout import ParamLayout
from fedarena.defenses.base import RoundContext
from fedarena.defenses.metric_filters import Flame, MetricHDBSCAN, MultiMetrics
from fedarena.registry import DEFENSES

LAY = ParamLayout.from_params({"w": torch.zeros(2)})


def ctx(n, g=None, seed=0):
    return RoundContext(
        0, LAY, torch.arange(n), torch.ones(n), global_params=g, generator=torch.Generator().manual_seed(seed)
    )


def test_registered():
    for name in ("cos-hdbscan", "flame", "multi-metrics"):
        assert name in DEFENSES


def test_cos_hdbscan_keeps_the_largest_cluster_and_rejects_nan():
    G = torch.tensor([1.0, 0.0])
    # local models at angles whose cosine distances are 1 - cos(theta)
    dist = [0.010, 0.011, 0.012, 0.013, 0.014, 0.30, 0.31, 0.32]
    rows = [torch.tensor([math.cos(math.acos(1 - d)), math.sin(math.acos(1 - d))]) - G for d in dist]
    U = torch.stack(rows + [torch.full((2,), float("nan"))])
    agg = MetricHDBSCAN(min_cluster_size=2)(U, ctx(len(U), G))
    assert agg.weights.tolist() == [True] * 5 + [False] * 4
    assert torch.allclose(agg.update, U[:5].mean(0))
    assert agg.info["accepted"] == 5
    # the values it clusters on are the distances to G
    from fedarena.core.distances import update_metric_values

    v, _ = update_metric_values(U[:8], G, LAY, ["cos"], "whole")
    assert np.allclose(v[:, 0].numpy(), dist, atol=1e-9)


def test_cos_hdbscan_two_metrics_and_all_noise_keeps_all():
    G = torch.tensor([1.0, 0.0])
    U = torch.tensor([[0.1, 0.0], [0.11, 0.0], [0.12, 0.0], [0.13, 0.0], [2.0, 0.0], [2.1, 0.0], [2.2, 0.0]])
    agg = MetricHDBSCAN(metrics=["cos", "l2"])(U, ctx(7, G))
    assert agg.weights.tolist() == [True] * 4 + [False] * 3
    assert MetricHDBSCAN(min_cluster_size=5)(U[:2], ctx(2, G)).weights.all()  # too few rows: keep all


def test_flame_hand_values():
    # A: 3 clients along e1 (norms 1, 2, 4); B: 2 along e2 (norms 3, 5)
    U = torch.tensor([[1.0, 0], [2.0, 0], [4.0, 0], [0, 3.0], [0, 5.0]])
    agg = Flame(lam=0.0)(U, ctx(5))
    assert agg.weights.tolist() == [True, True, True, False, False]
    # median over all norms = 3; clipped A: 1, 2, 3 -> mean 2
    assert torch.allclose(agg.update, torch.tensor([2.0, 0.0]))
    assert agg.info["clip_bound"] == 3.0
    # median over the admitted = 2: clipped 1, 2, 2 -> 5/3
    agg2 = Flame(lam=0.0, median_over="admitted")(U, ctx(5))
    assert torch.allclose(agg2.update, torch.tensor([5 / 3, 0.0]))
    # noise: std lam * S, deterministic given the generator
    a, b = Flame(lam=0.1)(U, ctx(5, seed=1)), Flame(lam=0.1)(U, ctx(5, seed=1))
    assert torch.equal(a.update, b.update) and not torch.allclose(a.update, agg.update)
    # a NaN row is rejected and the result stays finite
    Un = torch.cat([U, torch.full((1, 2), float("nan"))])
    agg3 = Flame(lam=0.0)(Un, ctx(6))
    assert not agg3.weights[-1] and torch.isfinite(agg3.update).all()


def test_multi_metrics_scores_and_selection():
    U = torch.tensor(
        [[1.0, 0.1], [1.1, 0.0], [0.9, 0.05], [1.0, -0.05], [-3.0, 2.0], [1.05, 0.02]], dtype=torch.float64
    )
    s = MultiMetrics().scores(U)
    # independent computation of the paper's features and the Mahalanobis score
    X = U.numpy()
    n = len(X)
    feats = np.zeros((n, 3))
    for i in range(n):
        for j in range(n):
            if i != j:
                c = X[i] @ X[j] / np.linalg.norm(X[i]) / np.linalg.norm(X[j])
                feats[i] += [1 - c, np.abs(X[i] - X[j]).sum(), np.linalg.norm(X[i] - X[j])]
    inv = np.linalg.pinv(np.cov(feats.T))
    exp = np.einsum("ij,jk,ik->i", feats, inv, feats)
    assert np.allclose(s.numpy(), exp, rtol=1e-6)
    agg = MultiMetrics(keep=0.5)(U.float(), ctx(6))
    assert int(agg.weights.sum()) == 3 and not agg.weights[4]
    Un = torch.cat([U.float(), torch.full((1, 2), float("inf"))])
    agg = MultiMetrics(keep=0.5)(Un, ctx(7))
    assert not agg.weights[-1] and torch.isfinite(agg.update).all()
