"""Table-1 baselines of the Invariant Aggregator paper: Multi-Krum (cosine), Multi-Krum +
trimmed mean, SparseFed and FLTrust, on hand-computed toy inputs (spec U12), NaN safety
and one small end-to-end FLTrust run through the engine's root dataset."""

import math

import pytest
import torch

from fedarena.config import from_tree
from fedarena.defenses.base import RoundContext
from fedarena.defenses.invariant_baselines import FLTrust, MultiKrumCosine, MultiKrumTrimmedMean, SparseFed
from fedarena.core.layout import ParamLayout
from fedarena.run.simulation import Simulation
from fedarena.errors import ConfigError


def ctx_for(U, f=1, root=None):
    n, d = U.shape
    return RoundContext(
        round=0,
        layout=ParamLayout(("w",), (torch.Size([d]),), (0,)),
        client_ids=torch.arange(n),
        num_samples=torch.ones(n, dtype=torch.long),
        f=f,
        global_params=torch.zeros(d),
        root_gradient=root,
    )


CLUSTER = torch.tensor([[1.0, 0.0], [1.1, 0.1], [0.9, -0.1], [1.0, 0.2]], dtype=torch.float64)


def test_multi_krum_cos_drops_the_direction_outlier():
    # a long vector in the cluster's direction is close in cosine, a rotated one is not
    U = torch.cat([CLUSTER, torch.tensor([[-1.0, 1.0]], dtype=torch.float64)])
    agg = MultiKrumCosine().aggregate(U, ctx_for(U, f=1))
    assert agg.weights.tolist() == [True, True, True, True, False]
    assert torch.allclose(agg.update, CLUSTER.mean(0))
    # cosine ignores the norm: a scaled cluster member is as good as the others
    V = torch.cat([CLUSTER[:3], 100 * CLUSTER[3:], torch.tensor([[0.0, -1.0]], dtype=torch.float64)])
    agg = MultiKrumCosine().aggregate(V, ctx_for(V, f=1))
    assert agg.weights.tolist() == [True, True, True, True, False]


def test_multi_krum_cos_hand_scores():
    # 5 unit vectors at angles 0, 10, 20, 30 and 180 degrees, f = 1 -> 2 neighbours, m = 4
    ang = torch.tensor([0.0, 10.0, 20.0, 30.0, 180.0], dtype=torch.float64) * math.pi / 180
    U = torch.stack([ang.cos(), ang.sin()], 1)
    agg = MultiKrumCosine().aggregate(U, ctx_for(U, f=1))
    assert agg.weights.tolist() == [True, True, True, True, False]
    assert torch.allclose(agg.update, U[:4].mean(0))
    agg2 = MultiKrumCosine(m=1).aggregate(U, ctx_for(U, f=1))
    # scores: 1-cos: row1 neighbours 0,20 -> 2(1-cos10); row2 same; row1 wins the tie (lower index)
    assert agg2.weights.tolist() == [False, True, False, False, False]


def test_multi_krum_tm_selects_then_trims():
    U = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [100.0]], dtype=torch.float64)
    # f = 1: Multi-Krum keeps the 6 closest (1..6); trim ceil(0.25*6) = 2 per side -> mean(3, 4) = 3.5
    agg = MultiKrumTrimmedMean().aggregate(U, ctx_for(U, f=1))
    assert agg.weights.tolist() == [True] * 6 + [False]
    assert agg.update.item() == pytest.approx(3.5)
    agg0 = MultiKrumTrimmedMean(trim_frac=0.0).aggregate(U, ctx_for(U, f=1))
    assert agg0.update.item() == pytest.approx(3.5)  # plain mean of 1..6


def test_fltrust_scores_and_rescaling():
    g0 = torch.tensor([3.0, 4.0], dtype=torch.float64)  # norm 5
    U = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, -4.0]], dtype=torch.float64)
    agg = FLTrust().aggregate(U, ctx_for(U, root=lambda p: g0))
    ts = torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64)  # ReLU(cos): 3/5, 4/5, 0
    assert torch.allclose(agg.weights, ts / ts.sum())
    expected = (0.6 * torch.tensor([5.0, 0.0]) + 0.8 * torch.tensor([0.0, 5.0])) / 1.4
    assert torch.allclose(agg.update, expected.double())
    # every score 0 -> zero update
    agg = FLTrust().aggregate(-U[:2], ctx_for(U[:2], root=lambda p: g0))
    assert torch.equal(agg.update, torch.zeros(2, dtype=torch.float64))


def test_sparsefed_topk_with_error_feedback_and_momentum():
    agg = SparseFed(k_frac=0.5, norm_bound=10.0, rho=0.5)
    U = torch.tensor([[4.0, 1.0, 0.0, 2.0], [4.0, 1.0, 0.0, 0.0]])  # mean [4, 1, 0, 1]
    out = agg.aggregate(U, ctx_for(U)).update
    # round 1: u = [4,1,0,1], e = u; top-2 |e| -> coords 0 and (1 or 3: tie, lowest index by topk)
    assert out[0] == 4.0 and out[2] == 0.0 and out.count_nonzero() == 2
    applied = out.clone()
    # round 2 with zero updates: u = 0.5 u (momentum zeroed where applied); e keeps the rest
    out2 = agg.aggregate(torch.zeros(2, 4), ctx_for(U)).update
    rest = torch.tensor([4.0, 1.0, 0.0, 1.0]) - applied  # error left after round 1
    u_left = torch.where(applied != 0, torch.zeros(4), torch.tensor([4.0, 1.0, 0.0, 1.0]))
    e2 = rest + 0.5 * u_left
    top = torch.topk(e2.abs(), 2).indices
    ref = torch.zeros(4)
    ref[top] = e2[top]
    assert torch.allclose(out2, ref)


def test_sparsefed_clip_default_is_first_round_median_norm():
    U = torch.tensor([[3.0, 4.0], [6.0, 8.0], [0.3, 0.4]])  # norms 5, 10, 0.5 -> median 5
    agg = SparseFed(k_frac=1.0, rho=0.0)
    out = agg.aggregate(U, ctx_for(U))
    assert agg.clip == pytest.approx(5.0)
    assert torch.allclose(out.update, torch.tensor([(3 + 3 + 0.3) / 3, (4 + 4 + 0.4) / 3]))
    agg.reset()
    assert agg.clip is None and agg.e is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e30])
def test_faulty_rows_never_give_nan(bad):
    g = torch.Generator().manual_seed(0)
    U = torch.randn(9, 20, generator=g) * 0.1 + 1.0
    U[3] = bad
    g0 = torch.ones(20)
    for rule in (MultiKrumCosine(), MultiKrumTrimmedMean(), SparseFed(), FLTrust()):
        out = rule.aggregate(U, ctx_for(U, f=2, root=lambda p: g0))
        assert torch.isfinite(out.update).all(), type(rule).__name__
        if out.weights is not None:
            assert float(out.weights[3]) == 0.0


def test_config_errors():
    with pytest.raises(ConfigError, match="defense.f"):
        MultiKrumCosine().validate(6, 2)
    with pytest.raises(ConfigError, match="defense.k_frac"):
        SparseFed(k_frac=0.0)
    with pytest.raises(ConfigError, match="defense.root_size"):
        FLTrust(root_size=0)
    with pytest.raises(ConfigError, match="defense.root_size"):
        FLTrust().aggregate(torch.ones(3, 2), ctx_for(torch.ones(3, 2)))
    with pytest.raises(ConfigError, match="defense.rho"):
        from_tree({"defense": {"name": "sparsefed", "rho": 1.0}})


def test_fltrust_end_to_end_uses_root_dataset():
    cfg = from_tree(
        {
            "data": {"dataset": "digits"},
            "fl": {"num_clients": 8, "rounds": 4, "batch_size": 16},
            "defense": {"name": "fltrust", "root_size": 50},
        }
    )
    sim = Simulation(cfg)
    assert sim.root_index is not None and len(sim.root_index) == 50
    res = sim.run()
    assert res.summary["status"] == "ok" and res.summary["final_main_acc"] > 0.5
