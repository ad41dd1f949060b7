"""Robust rules that peers ship (ByzFL, Blades, FLPoison): hand-computed values, the
peers' published values, faulty rows and validation.

ByzFL values: LPD-EPFL/byzfl, PyPI ``byzfl`` 0.0.11 (repository snapshot of 2025-06-06,
commit 69bd1ac), ``tests/unit_test_aggregators.py`` / ``unit_test_preaggregators.py``
and the class docstrings of ``byzfl/aggregators``, all on the same input
``[[1, 2, 3], [4, 5, 6], [7, 8, 9]]`` with ``f = 1``.
"""

import math

import pytest
import torch

from fedarena.defenses.arc import adaptive_robust_clip, arc_clip_count
from fedarena.defenses.base import RoundContext
from fedarena.defenses.pipeline import build_pipeline
from fedarena.errors import ConfigError
from fedarena.registry import DEFENSES, STAGES
from test_aggregators import agg, ctx  # one way to build a rule and its round

T = lambda rows: torch.tensor(rows, dtype=torch.float32)
X3 = T([[1, 2, 3], [4, 5, 6], [7, 8, 9]])  # ByzFL's test input


# ----------------------------------------------------------------------------- ByzFL's published values
@pytest.mark.parametrize(
    "name,params,expected",
    [
        ("mda", {}, [2.5, 3.5, 4.5]),  # byzfl.MDA(1)
        ("monna", {"idx": 1}, [2.5, 3.5, 4.5]),  # byzfl.MoNNA(1, 1)
        ("meamed", {}, [2.5, 3.5, 4.5]),  # byzfl.Meamed(1)
        ("caf", {}, [4.0, 5.0, 6.0]),  # byzfl.CAF(1) (docstring example)
        ("smea", {}, [2.5, 3.5, 4.5]),  # byzfl.SMEA(1) (docstring example)
    ],
)
def test_matches_byzfl_published_values(name, params, expected):
    out = agg(name, X3, f=1, **params).update
    assert out.tolist() == pytest.approx(expected, rel=1e-6)


def test_arc_matches_byzfl_published_value():
    # byzfl.ARC(1)(X3) = [[1, 2, 3], [4, 5, 6], [4.41004009, 5.04004582, 5.67005155]]
    out, C = adaptive_robust_clip(X3.double(), f=1)
    assert out.tolist()[:2] == [[1, 2, 3], [4, 5, 6]]
    assert out[2].tolist() == pytest.approx([4.41004009, 5.04004582, 5.67005155], rel=1e-7)
    assert C == pytest.approx(math.sqrt(77))  # ||(4, 5, 6)||


# ----------------------------------------------------------------------------- hand-computed cases
LINE = T([[0], [1], [3], [10]])


def test_mda_hand_computed():
    # f=1, kept triples and diameters: {0,1,3}: 3, {0,1,10}: 10, {0,3,10}: 10, {1,3,10}: 9 -> mean(0,1,3) = 4/3
    a = agg("mda", LINE, f=1)
    assert a.update.item() == pytest.approx(4 / 3)
    assert a.weights.tolist() == [True, True, True, False]
    assert a.info["diameter"] == pytest.approx(3.0)
    # five rows [0, 1, 3, 10, 11], f=2: the closest triple {0, 1, 3} (diameter 3) -> 4/3
    assert agg("mda", T([[0], [1], [3], [10], [11]]), f=2).update.item() == pytest.approx(4 / 3)


def test_mda_two_dims_ties_go_to_the_first_kept_set():
    # square (0,0),(1,0),(0,1),(1,1), f=1: every kept triple holds a diagonal (sqrt 2): the first, {0,1,2}, wins
    U = T([[0, 0], [1, 0], [0, 1], [1, 1]]).double()  # float64: exact ties (float32 Gram distances are not)
    rule = DEFENSES.build("mda", {})
    a = rule(U, ctx(4, f=1))
    assert a.weights.tolist() == [True, True, True, False]
    assert a.update.tolist() == pytest.approx([1 / 3, 1 / 3])


def test_monna_hand_computed():
    # idx=2 (value 3), f=1: distances 3, 2, 0, 7 -> nearest three {0, 1, 3}: mean 4/3
    a = agg("monna", LINE, f=1, idx=2)
    assert a.update.item() == pytest.approx(4 / 3)
    assert a.weights.tolist() == [True, True, True, False]
    # idx=3 (value 10): distances 10, 9, 7, 0 -> {10, 3, 1}: 14/3
    assert agg("monna", LINE, f=1, idx=3).update.item() == pytest.approx(14 / 3)


def test_meamed_hand_computed():
    # column 0: [1, 2, 3, 4, 100], f=2, median 3, distances 2, 1, 0, 1, 97 -> {3, 2, 4}: 3
    # column 1: [0, 0, 0, 10, -10] -> median 0 -> {0, 0, 0}: 0
    U = T([[1, 0], [2, 0], [3, 0], [4, 10], [100, -10]])
    assert agg("meamed", U, f=2).update.tolist() == pytest.approx([3.0, 0.0])
    # even n: [0, 1, 2, 10], f=1, median 1.5, distances 1.5, .5, .5, 8.5 -> {0, 1, 2}: 1
    assert agg("meamed", T([[0], [1], [2], [10]]), f=1).update.item() == pytest.approx(1.0)


def test_caf_hand_computed():
    # [0, 0, 0, 6], f=1: iteration 1: mu = 1.5, Sigma = (3 * 1.5^2 + 4.5^2) / 4 = 6.75,
    # tau = (2.25, 2.25, 2.25, 20.25), c = (8/9, 8/9, 8/9, 0), sum 8/3 > n - 2f = 2;
    # iteration 2: mu = 0, lambda = 0 < 6.75 -> the answer is 0 with weights (1/3, 1/3, 1/3, 0)
    a = agg("caf", T([[0], [0], [0], [6]]), f=1)
    assert a.update.item() == pytest.approx(0.0, abs=1e-12)
    assert a.weights.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0])
    assert a.info["lambda_max"] == pytest.approx(0.0, abs=1e-12)


def test_caf_two_dims_finds_the_outlier_direction():
    # benign (+-1, 0), (0, +-1), outlier (5, 5), f=1. Iteration 1: mu = (1, 1), Sigma = [[4.4, 4], [4, 4.4]],
    # lambda = 8.4 along (1, 1)/sqrt 2; projections^2 tau = (.5, 4.5, .5, 4.5, 32), c = 1 - tau/32 =
    # (63/64, 55/64, 63/64, 55/64, 0), sum 3.6875 > n - 2f = 3. Iteration 2: mu = (63 - 55)/64 / 3.6875 (1, 1)
    # = 0.0339 (1, 1) with a smaller lambda; its c sums to <= 3, so it is the answer
    U = T([[1, 0], [-1, 0], [0, 1], [0, -1], [5, 5]])
    a = agg("caf", U, f=1)
    assert a.info["iterations"] == 2
    assert a.update.tolist() == pytest.approx([0.125 / 3.6875] * 2, rel=1e-5)
    assert a.weights.tolist() == pytest.approx(
        [c / 3.6875 for c in (63 / 64, 55 / 64, 63 / 64, 55 / 64, 0.0)], rel=1e-5
    )


def test_smea_hand_computed():
    # f=1: {(0,0),(2,0),(0,2)}: mean (2/3, 2/3), Sigma = [[8/9, -4/9], [-4/9, 8/9]], lambda_max = 12/9;
    # every triple with (10, 10) has a far larger eigenvalue
    U = T([[0, 0], [2, 0], [0, 2], [10, 10]])
    a = agg("smea", U, f=1)
    assert a.update.tolist() == pytest.approx([2 / 3, 2 / 3])
    assert a.info["lambda_max"] == pytest.approx(4 / 3)
    assert a.weights.tolist() == [True, True, True, False]


def test_arc_hand_computed():
    # n=10, f=2: k = floor(2 * 2/10 * 8) = floor(3.2) = 3 rows clipped to the 7th smallest norm, 7
    assert arc_clip_count(10, 2) == 3
    U = torch.tensor([[float(i), 0.0] for i in range(1, 11)])
    out, C = adaptive_robust_clip(U, 2)
    assert C == 7.0
    assert out[:, 0].tolist() == [1, 2, 3, 4, 5, 6, 7, 7, 7, 7]
    assert adaptive_robust_clip(U, 0)[0] is U  # f = 0: nothing clipped


def test_arc_stage_from_config_runs_before_the_aggregator():
    p = build_pipeline({"name": "fedavg", "arc": True})
    assert [type(s).__name__ for s in p.pre] == ["ARC"]
    U = torch.tensor([[float(i), 0.0] for i in range(1, 11)])
    # mean of 1..6 and four 7s: (21 + 28) / 10 = 4.9
    assert p(U, ctx(10, f=2)).update.tolist() == pytest.approx([4.9, 0.0])
    assert "arc" in STAGES.names()


# ----------------------------------------------------------------------------- robustness and validation
@pytest.mark.parametrize("name", ["mda", "monna", "meamed", "caf", "smea"])
def test_faulty_row_never_wins(name):
    g = torch.Generator().manual_seed(1)
    U = torch.randn(7, 5, generator=g)
    U[3] = float("nan")
    a = agg(name, U, f=2, **({"idx": 0} if name == "monna" else {}))
    assert torch.isfinite(a.update).all()
    if a.weights is not None:
        w = a.weights
        assert not bool(w[3]) if w.dtype == torch.bool else w[3].item() == 0.0
    U[5] = 1e30
    assert torch.isfinite(agg(name, U, f=2).update).all()


@pytest.mark.parametrize("name", ["mda", "monna", "meamed", "caf", "smea"])
def test_half_the_rows_is_refused(name):
    with pytest.raises(ConfigError, match="defense.f"):
        DEFENSES.build(name, {}).validate(4, 2)


def test_subset_search_is_bounded():
    with pytest.raises(ConfigError, match="max_subsets"):
        DEFENSES.build("mda", {}).validate(100, 20)
    DEFENSES.build("smea", {"max_subsets": 5000}).validate(100, 2)  # C(100, 2) = 4950
    with pytest.raises(ConfigError, match="defense.idx"):
        DEFENSES.build("monna", {"idx": 7}).validate(5, 1)


@pytest.mark.parametrize("name", ["mda", "smea"])
def test_subset_rules_agree_with_a_plain_enumeration(name):
    # the batched search equals a direct loop over itertools.combinations on random data
    import itertools

    g = torch.Generator().manual_seed(3)
    U = torch.randn(9, 4, generator=g, dtype=torch.float64)
    f = 3
    best, best_val = None, math.inf
    for S in itertools.combinations(range(9), 9 - f):
        X = U[list(S)]
        if name == "mda":
            val = float(torch.cdist(X, X).max())
        else:
            C = (X - X.mean(0)).T @ (X - X.mean(0)) / len(S)
            val = float(torch.linalg.eigvalsh(C)[-1])
        if val < best_val - 1e-12:
            best, best_val = S, val
    a = agg(name, U, f=f)
    assert torch.nonzero(a.weights).flatten().tolist() == list(best)
    assert a.update.tolist() == pytest.approx(U[list(best)].mean(0).tolist())


# ----------------------------------------------------------------------------- DnC
def test_dnc_hand_computed_one_dim():
    # [0, 1, 2, 10], f=1: mean 3.25, scores (x - 3.25)^2 = 10.56, 5.06, 1.56, 45.56 -> drop 10: mean 1
    a = agg("dnc", T([[0], [1], [2], [10]]), f=1)
    assert a.update.item() == pytest.approx(1.0)
    assert a.weights.tolist() == [True, True, True, False]


def test_dnc_hand_computed_two_dims():
    # mean (0, .6); centred rows (1,-.6), (-1,-.6), (0,-.1), (0,-1.1), (0,2.4): covariance xx = 2, yy = 7.7,
    # xy = 0 -> v = (0, 1); scores .36, .36, .01, 1.21, 5.76
    U = T([[1, 0], [-1, 0], [0, 0.5], [0, -0.5], [0, 3]])
    assert agg("dnc", U, f=1).update.tolist() == pytest.approx([0.0, 0.0], abs=1e-6)  # drop row 4
    a = agg("dnc", U, f=2)  # drop rows 4 and 3: mean of (1,0), (-1,0), (0,.5)
    assert a.update.tolist() == pytest.approx([0.0, 0.5 / 3])
    assert a.weights.tolist() == [True, True, True, False, False]
    assert agg("dnc", U, f=2, c=0.5).weights.tolist() == [True, True, True, True, False]  # floor(.5 * 2) = 1


def test_dnc_subsamples_coordinates_from_the_round_generator():
    g = torch.Generator().manual_seed(0)
    U = torch.randn(10, 50, generator=g)
    U[:2] += 3.0  # two shifted rows
    rule = DEFENSES.build("dnc", {"subsample": 20, "iters": 3})
    a1, a2 = rule(U, ctx(10, f=2)), rule(U, ctx(10, f=2))
    assert torch.equal(a1.update, a2.update) and a1.info["subsample"] == 20
    assert a1.weights[:2].tolist() == [False, False]


# ----------------------------------------------------------------------------- SignGuard
SG = T([[1, 1, 1, 1], [1.5, 1.5, 1.5, 1.5], [2, 2, 2, 2], [-1, -1, -1, -1], [100, 100, 100, 100]])


def test_signguard_paper_hand_computed():
    # norms 2, 3, 4, 2, 200 -> M = 3; ratios .67, 1, 1.33, .67, 66.7 -> S1 = {0,1,2,3} (row 4 > R = 3);
    # sign features (1,0,0) for rows 0, 1, 2, 4 and (0,0,1) for row 3 -> S2 = {0,1,2,4};
    # S = {0,1,2}; clipped to 3: (1,..), (1.5,..), (1.5,..) -> mean 4/3
    a = agg("signguard", SG, coords=1.0)
    assert a.weights.tolist() == [True, True, True, False, False]
    assert a.update.tolist() == pytest.approx([4 / 3] * 4)
    assert a.info["norm_rejected"] == 1 and a.info["sign_rejected"] == 1


def test_signguard_blades_variant_clips_before_filtering():
    # Blades: rows clipped to M = 3 first (norms 2, 3, 3, 2, 3), so no row exceeds R; 2-means on the
    # sign features splits off row 3 -> mean of (1,..), (1.5,..), (1.5,..), (1.5,..) = 1.375
    a = agg("signguard", SG, variant="blades")
    assert a.weights.tolist() == [True, True, True, False, True]
    assert a.update.tolist() == pytest.approx([1.375] * 4)


# ----------------------------------------------------------------------------- ClippedClustering
def test_clipped_clustering_matches_blades_published_value():
    # fedlib/fedlib (Blades' engine) fedlib/aggregators/tests/test_clippedclustering.py, commit 8b57d11:
    # Clippedclustering()(rows) == [1.9596, 1.6532, 2.9596]. By hand: norms 3.742, 4.243, 4.123, 4.359,
    # tau = median = (4.123 + 4.243) / 2 = 4.183; rows 1 and 3 clipped; row (-1, 4, -1) is its own cluster;
    # mean of (1,2,3), (2,2,3) and (3,1,3) * 4.183/4.359
    U = T([[1, 2, 3], [-1, 4, -1], [2, 2, 3], [3, 1, 3]])
    a = agg("clipped-clustering", U)
    assert a.update.tolist() == pytest.approx([1.9596, 1.6532, 2.9596], abs=1e-4)
    assert a.weights.tolist() == [True, False, True, True]
    s = 4.1828730 / math.sqrt(19)
    assert a.update.tolist() == pytest.approx([(1 + 2 + 3 * s) / 3, (2 + 2 + s) / 3, (3 + 3 + 3 * s) / 3], rel=1e-5)


def test_clipped_clustering_history_is_kept_and_checkpointed():
    rule = DEFENSES.build("clipped-clustering", {})
    rule(T([[1, 0], [2, 0.01], [3, 0]]), ctx(3))  # history 1, 2, 3
    U2 = T([[10, 0], [0, 10], [10, 0.1]])
    state = rule.state_dict()
    a = rule(U2, ctx(3))
    assert a.info["clip_bound"] == pytest.approx((3 + 10.0) / 2, rel=1e-4)  # median of 1, 2, 3, 10, 10, 10.0005
    fresh = DEFENSES.build("clipped-clustering", {})
    fresh.load_state_dict(state)
    b = fresh(U2, ctx(3))
    assert torch.equal(a.update, b.update)
    assert DEFENSES.build("clipped-clustering", {"history": False})(U2, ctx(3)).info["clip_bound"] == pytest.approx(
        10.0, rel=1e-3
    )


# ----------------------------------------------------------------------------- LASA
def test_lasa_hand_computed():
    # one layer, no sparsification. norms: five 1.414 and 14.14 -> median 1.414, population sd 4.743,
    # z(row 5) = 12.73 / 4.743 = 2.68 >= 2 -> rejected. PDP: 1, 1, 1, 1, 0, 1 -> median 1, sd .3727,
    # z(row 4) = 2.68 >= 1 -> rejected. Mean of the clipped rows 0-3 (norm <= M: unchanged) = (1, 1)
    U = T([[1, 1], [1, 1], [1, 1], [1, 1], [-1, -1], [10, 10]])
    a = agg("lasa", U, sparsity=0.0)
    assert a.update.tolist() == pytest.approx([1.0, 1.0])
    assert a.weights.tolist() == [1, 1, 1, 1, 0, 0]


def test_lasa_sparsify_and_layers():
    from fedarena.core.layout import ParamLayout
    from fedarena.defenses.lasa import topk_sparsify

    assert topk_sparsify(T([[3, -1, 2, 0.5]]), 0.5).tolist() == [[3, 0, 2, 0]]
    # two layers: a (2, 2) weight and a (2,) bias; the attacker flips only the bias
    lay = ParamLayout.from_params({"w": torch.zeros(2, 2), "b": torch.zeros(2)})
    U = T([[1, 1, 1, 1, 1, 1]] * 5 + [[1, 1, 1, 1, -1, -1]])
    rule = DEFENSES.build("lasa", {})
    a = rule(U, RoundContext(0, lay, torch.arange(6), torch.ones(6)))
    assert a.weights.tolist() == pytest.approx([1] * 5 + [4 / 6])  # accepted in the weight, not the bias
    assert a.update.tolist() == pytest.approx([1.0] * 6)
