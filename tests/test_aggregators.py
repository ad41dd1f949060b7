"""Robust aggregators: hand-computed values, invariants, validation, faulty rows."""

import math

import numpy as np
import pytest
import torch

from fedarena.config import load_config
from fedarena.defenses.base import RoundContext
from fedarena.defenses.pipeline import build_pipeline
from fedarena.core.robust_kernels import (
    coordinate_median,
    geometric_median,
    krum_scores,
    lowest_scores,
    pairwise_cosine_distances,
    pairwise_sq_distances,
    row_sq_norms,
    trimmed_mean,
)
from fedarena.defenses.robust import bulyan_select, closest_to_median_mean
from fedarena.run.simulation import Simulation
from fedarena.errors import ConfigError
from fedarena.registry import DEFENSES

RULES = ["median", "trimmed-mean", "krum", "multi-krum", "bulyan", "rfa", "cc", "sign"]


def ctx(n, f=0, **kw):
    return RoundContext(
        round=0,
        layout=None,
        client_ids=torch.arange(n),
        num_samples=torch.ones(n, dtype=torch.long),
        f=f,
        generator=torch.Generator().manual_seed(0),
        **kw,
    )


def agg(name, U, f=0, **params):
    rule = DEFENSES.build(name, params)
    rule.validate(U.shape[0], f)
    return rule(U, ctx(U.shape[0], f))


T = lambda rows: torch.tensor(rows, dtype=torch.float32)

# five points in the plane; squared distances by hand:
#   r0=(0,0): 1, 1, 1, 200   r1=(1,0): 1, 2, 4, 181   r2=(0,1): 1, 2, 2, 181
#   r3=(-1,0): 1, 4, 2, 221  r4=(10,10): 200, 181, 181, 221
KRUM_U = T([[0, 0], [1, 0], [0, 1], [-1, 0], [10, 10]])


# ----------------------------------------------------------------------------- helpers


def test_pairwise_sq_distances_match_cdist_and_isolate_faulty_rows():
    U = torch.randn(6, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    D = pairwise_sq_distances(U)
    assert torch.allclose(D, torch.cdist(U, U).square(), atol=1e-10)
    assert (D.diagonal() == 0).all()
    U[2, 3] = float("nan")
    U[4] = 1e200  # squared norm overflows float64's /8 margin
    D = pairwise_sq_distances(U)
    assert not torch.isnan(D).any()
    assert torch.isinf(D[2, [0, 1, 3, 4, 5]]).all() and torch.isinf(D[:, 4][[0, 1, 2, 3, 5]]).all()
    assert D[2, 2] == 0 and D[4, 4] == 0
    assert torch.isfinite(D[[0, 1, 3, 5]][:, [0, 1, 3, 5]]).all()


def test_centered_distances_keep_digits_when_rows_are_close():
    U = torch.randn(6, 20000, generator=torch.Generator().manual_seed(2)) * 1e-3 + 100.0
    U[2] = float("nan")
    exact = pairwise_sq_distances(U.double())
    ok = torch.isfinite(exact)
    D = pairwise_sq_distances(U, center=True).double()
    assert torch.isinf(D[~ok]).all()
    assert torch.allclose(D[ok], exact[ok], rtol=1e-3, atol=1e-5)  # distances ~0.04, norms^2 ~2e8


def test_row_sq_norms_flags_float32_overflow():
    U = T([[3, 4], [1e30, 0], [float("inf"), 0], [float("nan"), 1]])
    sq, bad = row_sq_norms(U)
    assert sq[0] == 25 and bad.tolist() == [False, True, True, True]


def test_cosine_distances_by_hand():
    D = pairwise_cosine_distances(T([[1, 0], [0, 2], [-3, 0], [0, 0]]))
    expect = T([[0, 1, 2, 1], [1, 0, 1, 1], [2, 1, 0, 1], [1, 1, 1, 0]])
    assert torch.allclose(D, expect, atol=1e-6)


def test_krum_scores_by_hand():
    scores = krum_scores(pairwise_sq_distances(KRUM_U, center=False), f=1)  # n - f - 2 = 2 neighbours
    assert scores.tolist() == [2, 3, 3, 3, 362]
    # the default (centred) expansion: same values up to float32 round-off
    assert krum_scores(pairwise_sq_distances(KRUM_U), f=1).tolist() == pytest.approx([2, 3, 3, 3, 362], abs=1e-4)
    # restricted to rows 1..4 (r = 4, one neighbour): r1: 2, r2: 2, r3: 2, r4: 181
    active = torch.tensor([False, True, True, True, True])
    assert krum_scores(pairwise_sq_distances(KRUM_U, center=False), 1, active).tolist() == [math.inf, 2, 2, 2, 181]


def test_lowest_scores_put_faulty_rows_last_even_on_inf_ties():
    scores = torch.tensor([math.inf, 5.0, math.inf, 1.0])
    bad = torch.tensor([True, False, False, False])
    assert lowest_scores(scores, 4, bad).tolist() == [3, 1, 2, 0]


# ----------------------------------------------------------------------------- median, trimmed mean


def test_median_by_hand():
    assert agg("median", T([[1, 5], [2, 0], [9, 1]])).update.tolist() == [2, 1]
    U = T([[1], [2], [3], [10]])
    assert agg("median", U).update.tolist() == [2.5]
    assert agg("median", U, even="lower").update.tolist() == [2.0]
    assert agg("median", U).weights is None


def test_trimmed_mean_by_hand_default_trim_is_declared_f():
    U = T([[1, -50], [2, 0], [3, 1], [4, 2], [100, 3]])
    assert agg("trimmed-mean", U, f=1).update.tolist() == [3, 1]  # (2+3+4)/3, (0+1+2)/3
    assert agg("trimmed-mean", U, f=0, trim=2).update.tolist() == [3, 1]
    assert agg("trimmed-mean", U, f=0).update.tolist() == pytest.approx([22, -8.8])  # trim 0: the mean


@pytest.mark.parametrize("n", [7, 8, 25])
def test_median_and_trimmed_mean_match_sorting_and_are_permutation_invariant(n):
    g = torch.Generator().manual_seed(n)
    U = torch.randn(n, 20_000, generator=g)  # > one column block
    S = U.sort(dim=0).values
    med = S[(n - 1) // 2] if n % 2 else 0.5 * (S[n // 2 - 1] + S[n // 2])
    assert torch.allclose(coordinate_median(U), med, atol=1e-6)
    assert torch.allclose(trimmed_mean(U, 2), S[2 : n - 2].mean(0), atol=1e-6)
    perm = torch.randperm(n, generator=g)
    assert torch.equal(coordinate_median(U[perm]), coordinate_median(U))
    assert torch.allclose(trimmed_mean(U[perm], 2), trimmed_mean(U, 2), atol=1e-6)
    # the torch path (used off-CPU) gives the same
    V = U.clone().requires_grad_()
    with torch.no_grad():
        assert torch.allclose(trimmed_mean(V, 2), S[2 : n - 2].mean(0), atol=1e-6)
        assert torch.allclose(coordinate_median(V), med, atol=1e-6)
        assert torch.allclose(closest_to_median_mean(V, n - 4), closest_to_median_mean(U, n - 4), atol=1e-6)


# ----------------------------------------------------------------------------- krum family


def test_krum_picks_the_lowest_score_row():
    out = agg("krum", KRUM_U, f=1)
    assert out.update.tolist() == [0, 0]
    assert out.weights.tolist() == [True, False, False, False, False]


def test_multi_krum_by_hand():
    out = agg("multi-krum", KRUM_U, f=1)  # m = n - f = 4: rows 0..3
    assert out.update.tolist() == [0, 0.25]
    assert out.weights.tolist() == [True, True, True, True, False]
    out = agg("multi-krum", KRUM_U, f=1, m=2)  # r0 (2), then one of r1, r2, r3 (a tie at 3)
    w = out.weights.tolist()
    assert w[0] and not w[4] and sum(w) == 2
    assert out.update.tolist() == (KRUM_U[0] + KRUM_U[w.index(True, 1)]).div(2).tolist()


def test_bulyan_selection_by_hand():
    # 1-D points; n = 7, f = 1: theta = 5 rows by repeated Krum, beta = 3 around the median
    # round 1 (4 neighbours): scores 30, 15, 10, 15, 30, ... -> row 2 (value 2)
    # round 2 (3 neighbours): r0 26, r1 14, r3 14, r4 26 -> row 1; round 3 (2): r0 25, r3 10, r4 17 -> row 3
    # round 4 (1): r0 16, r4 16 -> row 0; round 5 (0 neighbours) -> row 4
    U = T([[0], [1], [2], [3], [4], [100], [-50]])
    idx = bulyan_select(pairwise_sq_distances(U), f=1, theta=5)
    assert idx.tolist() == [2, 1, 3, 0, 4]
    out = agg("bulyan", U, f=1)
    assert out.weights.tolist() == [True] * 5 + [False, False]
    assert out.update.tolist() == [2.0]  # mean of 1, 2, 3


@pytest.mark.parametrize("theta, beta", [(5, 3), (7, 3), (9, 2), (12, 4), (12, 10)])
def test_closest_to_median_mean_matches_brute_force(theta, beta):
    S = torch.randn(theta, 300, generator=torch.Generator().manual_seed(theta * beta), dtype=torch.float64)
    med = S.quantile(0.5, dim=0)
    nearest = torch.argsort((S - med).abs(), dim=0)[:beta]
    assert torch.allclose(closest_to_median_mean(S, beta), S.gather(0, nearest).mean(0), atol=1e-12)


def test_closest_to_median_mean_by_hand():
    # column [0, 1, 2, 10, 2.5]: median 2, nearest three 2, 2.5, 1 -> 5.5 / 3
    S = T([[0, 5], [1, 5], [2, 5], [10, 5], [2.5, -100]])
    assert closest_to_median_mean(S, 3).tolist() == pytest.approx([5.5 / 3, 5.0])


# ----------------------------------------------------------------------------- rfa, cc, sign


def reference_rfa(M, T_=3, nu=0.1):  # spec rop-centered-clipping.md Sec. 8
    z = np.zeros(M.shape[1], M.dtype)
    for _ in range(T_):
        w = (1.0 / M.shape[0]) / np.maximum(np.linalg.norm(M - z, axis=1), nu)
        z = (w[:, None] * M).sum(0) / w.sum()
    return z


def test_rfa_one_step_by_hand_and_reference_kernel():
    # from z = 0: distances 0, 1, 10 -> b ~ 10, 1, 0.1 -> z = (1 + 1) / 11.1
    out = agg("rfa", T([[0], [1], [10]]), iters=1)
    assert out.update.item() == pytest.approx(2 / 11.1, rel=1e-6)
    assert out.weights.tolist() == pytest.approx([10 / 11.1, 1 / 11.1, 0.1 / 11.1], rel=1e-6)
    M = np.random.default_rng(0).normal(size=(9, 50)) + 1.0
    ours = agg("rfa", torch.from_numpy(M)).update.numpy()
    assert np.allclose(ours, reference_rfa(M), atol=1e-10)


def test_rfa_converges_to_geometric_median():
    z, _ = geometric_median(T([[0], [1], [10]]), iters=200, nu=1e-6)
    assert z.item() == pytest.approx(1.0, abs=1e-3)  # 1-D geometric median = median


def test_weiszfeld_distances_stay_accurate_near_the_center():
    # rows 100 + 1e-3 noise in float32: ||u - z||^2 by the Gram formula alone would cancel
    g = torch.Generator().manual_seed(5)
    U = 100.0 + 1e-3 * torch.randn(8, 5000, generator=g)
    z32, w32 = geometric_median(U, iters=2, nu=1e-9, init=U.mean(0))
    z64, w64 = geometric_median(U.double(), iters=2, nu=1e-9, init=U.double().mean(0))
    assert torch.allclose(w32.double(), w64, rtol=1e-3)
    assert torch.allclose(z32.double(), z64, atol=1e-5)


def test_cc_by_hand_and_center_persists_across_rounds():
    U = T([[3, 4], [0, 0.5]])
    rule = DEFENSES.build("cc", {"tau": 1.0})
    out = rule(U, ctx(2))
    # center 0: row 0 (norm 5) clipped to (0.6, 0.8), row 1 kept -> mean (0.3, 0.65)
    assert out.update.tolist() == pytest.approx([0.3, 0.65])
    assert out.weights.tolist() == pytest.approx([0.1, 0.5])
    assert out.info["clipped"] == 1
    out = rule(U, ctx(2))
    # center (0.3, 0.65): diffs (2.7, 3.35) (norm 4.30262, clipped) and (-0.3, -0.15) (kept)
    d0 = np.array([2.7, 3.35]) / math.hypot(2.7, 3.35)
    expect = np.array([0.3, 0.65]) + 0.5 * (d0 + np.array([-0.3, -0.15]))
    assert out.update.tolist() == pytest.approx(expect.tolist(), rel=1e-5)
    rule.reset()
    assert rule(U, ctx(2)).update.tolist() == pytest.approx([0.3, 0.65])


def test_cc_with_large_tau_is_the_mean_and_matches_reference_kernel():
    g = torch.Generator().manual_seed(3)
    U = torch.randn(10, 30, generator=g, dtype=torch.float64)
    for it in (1, 3):
        assert torch.allclose(agg("cc", U, tau=1e9, iterations=it).update, U.mean(0), atol=1e-12)
    # reference kernel (spec Sec. 8), two rounds, three iterations, small tau
    rule = DEFENSES.build("cc", {"tau": 0.5, "iterations": 3})
    v = np.zeros(30)
    for _ in range(2):
        M = U.numpy() + 0.3
        for _ in range(3):
            D = M - v
            nrm = np.linalg.norm(D, axis=1, keepdims=True)
            v = v + (D * np.minimum(1.0, 0.5 / np.maximum(nrm, 1e-12))).mean(0)
        ours = rule(U + 0.3, ctx(10)).update.numpy()
        assert np.allclose(ours, v, atol=1e-12)


def test_sign_majority_vote_by_hand():
    out = agg("sign", T([[1, -2, 0, 3], [2, -1, 0, -3], [-1, -1, 5, 0]]))
    assert out.update.tolist() == [1, -1, 1, 0]
    assert out.info["tie_frac"] == 0.25


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "name, params, n, f, field, valid",
    [
        ("krum", {}, 6, 2, "defense.f", "0..1"),
        ("multi-krum", {}, 6, 2, "defense.f", "0..1"),
        ("bulyan", {}, 10, 2, "defense.f", "0..1"),
        ("bulyan", {}, 2, 0, "defense.f", "none for n=2"),
        ("trimmed-mean", {"trim": 5}, 10, 0, "defense.trim", "0..4"),
        ("trimmed-mean", {}, 10, 5, "defense.f", "0..4"),
        ("multi-krum", {"m": 11}, 10, 1, "defense.m", "1..10"),
    ],
)
def test_impossible_settings_give_one_line_errors(name, params, n, f, field, valid):
    rule = DEFENSES.build(name, params)
    with pytest.raises(ConfigError) as e:
        rule.validate(n, f)
    assert e.value.field == field and e.value.valid == valid and "\n" not in str(e.value)
    with pytest.raises(ConfigError):  # checked again on the rows that reach the rule
        rule(torch.zeros(n, 3), ctx(n, f))


@pytest.mark.parametrize(
    "name, params, field",
    [
        ("cc", {"tau": 0.0}, "defense.tau"),
        ("cc", {"iterations": 0}, "defense.iterations"),
        ("rfa", {"nu": 0.0}, "defense.nu"),
        ("rfa", {"iters": 0}, "defense.iters"),
        ("trimmed-mean", {"trim": -1}, "defense.trim"),
        ("multi-krum", {"m": 0}, "defense.m"),
        ("median", {"even": "upper"}, "defense.even"),
    ],
)
def test_bad_parameters(name, params, field):
    with pytest.raises(ConfigError) as e:
        DEFENSES.build(name, params)
    assert e.value.field == field


def test_bulyan_needs_4f_plus_3_at_config_time():
    cfg = load_config(
        None, ["fl.num_clients=10", "attack.name=label-flip", "attack.num_malicious=3", "defense.name=bulyan"]
    )
    with pytest.raises(ConfigError, match=r"defense.f: bulyan needs n >= 4f\+3 rows \(n=10, f=3\)"):
        Simulation(cfg)


# ----------------------------------------------------------------------------- faulty rows

NAN, INF = float("nan"), float("inf")


def faulty_matrix(dtype=torch.float32, n=19, d=12):
    g = torch.Generator().manual_seed(7)
    U = (torch.randn(n, d, generator=g) * 0.1 + 1.0).to(dtype)
    U[0] = NAN
    U[1] = INF
    U[2] = 1e30
    U[3, 5] = -INF  # a single bad entry
    return U


@pytest.mark.parametrize("name", RULES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_faulty_rows_within_f_never_reach_the_output(name, dtype):
    U = faulty_matrix(dtype)  # 4 faulty rows, f = 4 declared, n = 19 (Bulyan: 4f+3)
    out = agg(name, U, f=4)
    assert torch.isfinite(out.update).all()
    if name == "sign":
        assert out.update.tolist() == [1.0] * 12
    elif name != "cc":  # cc moves at most tau from its center
        assert (out.update - 1.0).abs().max() < 0.5
    if out.weights is not None and out.weights.dtype == torch.bool:
        assert not out.weights[:4].any()


@pytest.mark.parametrize("name", RULES)
def test_too_many_faulty_rows_never_crash_nor_give_nan(name):
    U = faulty_matrix()
    U[4:11] = NAN  # 11 of 19 rows faulty, 4 declared
    assert not torch.isnan(agg(name, U, f=4).update).any()
    U[:] = NAN
    assert not torch.isnan(agg(name, U, f=4).update).any()


def test_huge_row_is_clipped_not_dropped_by_cc():
    U = T([[1e30, 0], [0, 0]])
    out = agg("cc", U, tau=1.0)
    assert out.update.tolist() == pytest.approx([0.5, 0.0])  # (1, 0) and (0, 0) averaged


def test_robust_rules_survive_the_nan_attack_end_to_end():
    over = [
        "fl.algorithm=fedsgd",
        "fl.num_clients=10",
        "fl.rounds=3",
        "fl.lr=0.5",
        "attack.name=nan",
        "attack.num_malicious=2",
    ]
    assert Simulation(load_config(None, over)).run().summary["status"] != "ok"  # fedavg stops
    for name in ("median", "krum", "cc"):
        r = Simulation(load_config(None, over + [f"defense.name={name}"])).run()
        assert r.summary["status"] == "ok", name


def test_pipeline_passes_declared_f_and_registry_lists_rules():
    for name in RULES:
        assert name in DEFENSES.names()
    p = build_pipeline({"name": "trimmed-mean", "f": 2})
    U = T([[0], [1], [2], [3], [100], [-100]])
    assert p(U, ctx(6, f=2)).update.tolist() == [1.5]


def test_median_keeps_accuracy_under_label_flipping():
    over = [
        "fl.algorithm=fedsgd",
        "fl.num_clients=10",
        "fl.rounds=60",
        "fl.lr=0.5",
        "fl.client_momentum=0.9",
        "eval.every=60",
        "attack.name=label-flip",
        "attack.num_malicious=3",
    ]
    plain = Simulation(load_config(None, over)).run().summary["final_main_acc"]
    robust = Simulation(load_config(None, over + ["defense.name=median"])).run().summary["final_main_acc"]
    assert robust >= 0.9 and robust >= plain + 0.03


@pytest.mark.parametrize("name", RULES)
def test_half_precision_updates_match_float32(name):
    U = torch.randn(11, 300, generator=torch.Generator().manual_seed(4)) * 30  # squared norms overflow float16
    ref = agg(name, U.half().float(), f=2).update
    out = agg(name, U.half(), f=2).update
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert torch.allclose(out.float(), ref, atol=0.05 * ref.abs().max().item() + 1e-3)


def test_gram_distances_centered_match_float64_on_tight_rows():
    """Rows 1 + 1e-3 N(0,1), d = 1e4 (tight cluster far from 0, as fedsgd momenta at beta = 0.99):
    the uncentred float32 Gram expansion loses every digit; the default centred one matches float64,
    and Krum picks the row float64 distances pick."""
    from fedarena.core.robust_kernels import krum_scores, pairwise_sq_distances
    from fedarena.defenses.robust import Krum

    g = torch.Generator().manual_seed(0)
    U = 1 + 1e-3 * torch.randn(15, 10_000, generator=g)
    D64 = torch.cdist(U.double(), U.double()) ** 2
    off = ~torch.eye(15, dtype=torch.bool)
    rel = lambda D: float(((D.double() - D64).abs()[off] / D64[off]).max())
    assert rel(pairwise_sq_distances(U, center=False)) > 0.05  # the failure being fixed
    assert rel(pairwise_sq_distances(U)) < 1e-4  # default: centred, because distances are tiny next to norms
    assert rel(pairwise_sq_distances(U, center=True)) < 1e-4
    spread = torch.randn(15, 10_000, generator=g)  # spread-out rows: the plain expansion is already exact enough
    assert torch.equal(pairwise_sq_distances(spread), pairwise_sq_distances(spread, center=False))
    f = 3
    want = int(torch.argmin(krum_scores(D64, f)))
    agg = Krum()(U, ctx(15, f))
    assert agg.info["selected"] == want
