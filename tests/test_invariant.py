"""Invariant Aggregator (Wang et al., AISTATS 2024): the spec's deterministic claims U1-U11
with hand-computed values, the Theorem-10 Monte-Carlo check, NaN safety and config errors."""

import math

import pytest
import torch

from fedarena.config import defense_dict, from_tree
from fedarena.defenses.base import RoundContext
from fedarena.defenses.invariant import (
    InvariantAggregator,
    adaptive_rescale,
    and_mask,
    invariant_aggregate,
    sign_consistency,
    trim_count,
    trim_slice,
    trimmed_mean,
)
from fedarena.defenses.pipeline import build_pipeline
from fedarena.core.layout import ParamLayout
from fedarena.errors import ConfigError

U1 = torch.tensor(
    [[1.0, -0.5, 0.2, 0.0], [2.0, 0.5, 0.1, 0.0], [0.5, -1.0, -0.3, 0.0], [1.5, 2.0, 0.4, 0.0], [9.0, -3.0, 0.3, 1.0]],
    dtype=torch.float64,
)


def ctx_for(U, f=0):
    n, d = U.shape
    return RoundContext(
        round=0,
        layout=ParamLayout(("w",), (torch.Size([d]),), (0,)),
        client_ids=torch.arange(n),
        num_samples=torch.ones(n, dtype=torch.long),
        f=f,
    )


# ------------------------------------------------------------------ U1
def test_u1_trimmed_mean_and_consistency():
    assert torch.allclose(trimmed_mean(U1, 0.2), torch.tensor([1.5, -1 / 3, 0.2, 0.0], dtype=torch.float64))
    assert torch.allclose(sign_consistency(U1), torch.tensor([1.0, 0.2, 0.6, 0.2], dtype=torch.float64))


@pytest.mark.parametrize(
    "tau,strict,expected",
    [
        (0.5, True, [1.5, 0, 0.2, 0]),
        (0.6, True, [1.5, 0, 0, 0]),
        (0.6, False, [1.5, 0, 0.2, 0]),
        (0.2, True, [1.5, 0, 0.2, 0]),
        (0.2, False, [1.5, -1 / 3, 0.2, 0]),
    ],
)
def test_u1_algorithm1_table(tau, strict, expected):
    out = invariant_aggregate(U1, tau=tau, trim_frac=0.2, strict=strict)
    assert torch.allclose(out, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    agg = InvariantAggregator(tau=tau, trim_frac=0.2, strict=strict).aggregate(U1, ctx_for(U1))
    assert torch.allclose(agg.update, out)


# ------------------------------------------------------------------ U2
@pytest.mark.parametrize("n,b,kept", [(20, 5, 10), (15, 4, 7), (10, 3, 4), (5, 2, 1)])
def test_u2_trim_counts(n, b, kept):
    assert trim_count(n, 0.25) == b
    lo, hi = trim_slice(n, 0.25)
    assert (lo, hi - lo) == (b, kept)


def test_u2_code_middle_slices():
    # the authors' code keeps sorted positions [int(.45N), int(.55N))
    assert trim_slice(20, 0.25, "middle") == (9, 11)
    assert trim_slice(15, 0.25, "middle") == (6, 8)
    assert trim_slice(10, 0.25, "middle") == (4, 5)


def test_u2_nothing_kept_raises():
    agg = InvariantAggregator(trim_frac=0.45)
    with pytest.raises(ConfigError, match="defense.trim_frac"):
        agg.validate(4, 0)  # ceil(0.45*4)=2 per side of 4
    with pytest.raises(ConfigError, match="defense.trim_frac"):
        InvariantAggregator(trim_frac=0.5)


# ------------------------------------------------------------------ U3 / U4
def test_u3_mask_scale_and_permutation_invariant():
    g = torch.Generator().manual_seed(0)
    G = torch.randn(20, 50, generator=g, dtype=torch.float64)
    c = torch.rand(20, 1, generator=g, dtype=torch.float64) * 10 + 0.01
    assert torch.equal(and_mask(G, 0.2), and_mask(c * G, 0.2))
    perm = torch.randperm(20, generator=g)
    assert torch.allclose(invariant_aggregate(G), invariant_aggregate(G[perm]))


def test_u4_pathwise_structure():
    G = torch.randn(20, 500, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out, tm = invariant_aggregate(G, tau=0.2), trimmed_mean(G, 0.25)
    assert bool(((out == 0) | (out == tm)).all())
    assert bool((out.abs() <= tm.abs()).all())
    assert 0 < int((out == 0).sum()) < 500  # the mask does something on random data


# ------------------------------------------------------------------ U5
def test_u5_benign_range_with_at_most_b_attackers():
    g = torch.Generator().manual_seed(2)
    benign = torch.randn(15, 40, generator=g, dtype=torch.float64)
    bad = torch.tensor([1e6, -1e6, 1e30, -1e30, 1e6], dtype=torch.float64)[:, None].expand(5, 40)
    out = invariant_aggregate(torch.cat([benign, bad]), tau=0.2, trim_frac=0.25)
    lo, hi = benign.min(0).values, benign.max(0).values
    assert bool((((out >= lo) & (out <= hi)) | (out == 0)).all())


def test_u5_fails_with_more_than_b_attackers():
    benign = -torch.linspace(0.1, 1.4, 14, dtype=torch.float64)[:, None]  # all negative
    bad = torch.full((6, 1), 1e6, dtype=torch.float64)
    out = invariant_aggregate(torch.cat([benign, bad]), tau=-1, trim_frac=0.25)  # mask off: the trimmed mean
    assert out.item() > 1e4  # the kept middle includes a 1e6


# ------------------------------------------------------------------ U6
def test_u6_degenerate_cases():
    G = torch.randn(7, 30, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.allclose(invariant_aggregate(G, tau=-1, trim_frac=0.0), G.mean(0), atol=1e-12)
    assert torch.equal(invariant_aggregate(G, tau=1.0, strict=True), torch.zeros(30, dtype=torch.float64))
    row = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    assert torch.allclose(invariant_aggregate(row.expand(8, 3).clone(), tau=0.9), row)
    Z = torch.zeros(6, 4)
    assert torch.equal(invariant_aggregate(Z), torch.zeros(4))


# ------------------------------------------------------------------ U7 (Fig. 2b) and U8 (RLR counter-example)
def test_u7_figure_2b():
    col = torch.tensor([0.3, 0.2, 0.1, -0.05, -0.02, -5.0, -5.0], dtype=torch.float64)[:, None]
    assert col.median().item() == pytest.approx(-0.02)  # the median points the malicious way
    assert sign_consistency(col).item() == pytest.approx(1 / 7)
    assert invariant_aggregate(col, tau=1 / 7, strict=True).item() == 0.0
    # b = ceil(7/4) = 2: keeps sorted[2:5] = (-0.05, -0.02, 0.1) -> +0.01
    assert invariant_aggregate(col, tau=1 / 7, strict=False).item() == pytest.approx(0.01)


def test_u8_rlr_counter_example():
    col = torch.tensor([[0.9], [0.7], [-0.1]], dtype=torch.float64)
    from fedarena.defenses.rlr import robust_lr_signs

    rlr = (robust_lr_signs(col, theta=2) * col.mean(0)).item()
    assert rlr == pytest.approx(-0.5)  # RLR flips the step: helps the adversary
    assert invariant_aggregate(col, tau=0.5, strict=True, trim_frac=0.0).item() == 0.0


# ------------------------------------------------------------------ U10 adaptive transform
def test_u10_adaptive_rescale():
    g = torch.Generator().manual_seed(4)
    M = torch.randn(3, 100, generator=g, dtype=torch.float64)
    mask = torch.rand(100, generator=g) > 0.6
    A = adaptive_rescale(M, mask)
    assert torch.allclose(torch.linalg.vector_norm(A, dim=1), torch.linalg.vector_norm(M, dim=1), atol=1e-12)
    assert bool((A[:, ~mask] == 0).all())
    assert bool(((torch.sign(A) == torch.sign(M)) | (A == 0)).all())
    # hand value: g = [3, 4], mask = [1, 0] -> [5, 0]
    assert adaptive_rescale(torch.tensor([3.0, 4.0]), torch.tensor([True, False])).tolist() == [5.0, 0.0]
    # nothing passes: unchanged
    assert adaptive_rescale(torch.tensor([3.0, 4.0]), torch.tensor([False, False])).tolist() == [3.0, 4.0]


def test_u10_rescaling_cannot_unmask_in_adversary_direction():
    g = torch.Generator().manual_seed(5)
    benign = torch.randn(16, 200, generator=g, dtype=torch.float64)
    mal = torch.randn(4, 200, generator=g, dtype=torch.float64)
    m0 = and_mask(torch.cat([benign, mal]), 0.2)
    m1 = and_mask(torch.cat([benign, adaptive_rescale(mal, m0)]), 0.2)
    s_mal = torch.sign(mal.sum(0))
    s_all = torch.sign(torch.sign(torch.cat([benign, mal])).sum(0))
    newly = m1 & ~m0
    assert not bool((newly & (s_all == s_mal) & (s_mal != 0)).any())


# ------------------------------------------------------------------ U11 threshold table
@pytest.mark.parametrize(
    "n,tau,strict,need",
    [
        (20, 0.2, True, 13),
        (20, 0.2, False, 12),
        (20, 0.5, True, 16),
        (20, 0.5, False, 15),
        (20, 0.6, True, 17),
        (20, 0.6, False, 16),
        (15, 0.5, True, 12),
        (15, 0.6, True, 13),
        (15, 0.6, False, 12),
        (10, 0.2, True, 7),
        (10, 0.2, False, 6),
        (10, 0.5, True, 8),
    ],
)
def test_u11_minimum_agreeing_clients(n, tau, strict, need):
    # column j: j+1 clients at +1, the rest at -1
    agree = torch.arange(1, n + 1)
    G = torch.where(torch.arange(n)[:, None] < agree[None, :], 1.0, -1.0)
    m = and_mask(G, tau, strict)
    passing = agree[m & (agree > n / 2)]
    assert int(passing.min()) == need


# ------------------------------------------------------------------ presets, ablations, config
def test_code_preset_is_mean_sign_ge_06_and_middle_slice():
    agg = InvariantAggregator(preset="code")
    assert (agg.tau, agg.strict, agg.trim_mode) == (0.6, False, "middle")
    G = torch.randn(20, 64, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    ref_mask = torch.sign(G).mean(0).abs() >= 0.6
    ref = torch.sort(G, 0).values[9:11].mean(0) * ref_mask
    assert torch.allclose(agg.aggregate(G, ctx_for(G)).update, ref)
    assert InvariantAggregator(preset="code", tau=0.3).tau == 0.3  # explicit value wins


def test_ablations():
    ctx = ctx_for(U1)
    mean_mask = InvariantAggregator(tau=0.5, estimator="mean").aggregate(U1, ctx).update
    assert torch.allclose(mean_mask, torch.tensor([2.8, 0.0, 0.14, 0.0], dtype=torch.float64))
    tm = InvariantAggregator(mask="none", trim_frac=0.2).aggregate(U1, ctx).update
    assert torch.allclose(tm, trimmed_mean(U1, 0.2))
    # mean-variance ratio with a fixed threshold: r = |mean| / std (ddof 0)
    mv = InvariantAggregator(mask="mean-var", mv_tau=1.0, trim_frac=0.2).aggregate(U1, ctx)
    r = U1.mean(0).abs() / U1.std(0, unbiased=False)
    assert torch.allclose(mv.update, torch.where(r > 1.0, trimmed_mean(U1, 0.2), 0.0))


def test_mean_var_calibration_matches_sign_mask_share():
    G = torch.randn(20, 1000, generator=torch.Generator().manual_seed(7)) + 0.3
    agg = InvariantAggregator(mask="mean-var", tau=0.2)
    out = agg.aggregate(G, ctx_for(G))
    sign_pass = float(and_mask(G, 0.2).float().mean())
    assert out.info["pass_frac"] == pytest.approx(sign_pass, abs=2e-3)
    tau_first = agg.mv_tau
    agg.aggregate(G * 2 + 1, ctx_for(G))
    assert agg.mv_tau == tau_first  # calibrated once
    agg.reset()
    assert agg.mv_tau is None


def test_config_through_pipeline_and_errors():
    cfg = from_tree({"defense": {"name": "invariant", "tau": 0.3, "strict": False}})
    agg = build_pipeline(defense_dict(cfg)).aggregator
    assert isinstance(agg, InvariantAggregator) and agg.tau == 0.3 and agg.strict is False
    with pytest.raises(ConfigError, match="defense.tau"):
        from_tree({"defense": {"name": "invariant", "tau": 1.5}})
    with pytest.raises(ConfigError, match="defense.mask"):
        from_tree({"defense": {"name": "invariant", "mask": "bogus"}})
    with pytest.raises(ConfigError, match="defense.trim_frac"):
        from_tree({"fl": {"num_clients": 4}, "defense": {"name": "invariant", "trim_frac": 0.45}})
        build_pipeline({"name": "invariant", "trim_frac": 0.45}).validate(4, 0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e30])
def test_nonfinite_rows_never_give_nan(bad):
    g = torch.Generator().manual_seed(8)
    U = torch.randn(10, 30, generator=g)
    U[2] = bad
    U[7, :5] = bad
    for kw in ({}, {"estimator": "mean"}, {"mask": "mean-var"}, {"preset": "code"}):
        out = InvariantAggregator(**kw).aggregate(U, ctx_for(U)).update
        assert torch.isfinite(out).all()
    out = InvariantAggregator(tau=0.0).aggregate(U, ctx_for(U)).update
    benign = torch.cat([U[:2], U[3:7], U[8:]])
    assert bool((((out >= benign.min(0).values - 1e-6) & (out <= benign.max(0).values + 1e-6)) | (out == 0))[5:].all())


# ------------------------------------------------------------------ Theorem 10 (Monte Carlo)
def test_theorem10_monte_carlo_bounds():
    from fedarena.reproduce.invariant import theorem10_monte_carlo

    rows = theorem10_monte_carlo(gammas=(0.0, 0.25, 0.5, 1.0), trials=40_000, seed=0)
    for r in rows:
        se = lambda p: 4 * math.sqrt(max(p * (1 - p), 1e-12) / r["trials"]) + 1e-9
        # T1: bounds, within 4 standard errors
        assert r["trmean_m"] <= r["bound_trmean_m"] + se(r["bound_trmean_m"])
        assert r["ours_strict_m"] <= r["bound_ours_strict_m"] + se(r["bound_ours_strict_m"])
        assert r["trmean_b"] >= r["bound_b"] - se(r["bound_b"])
        assert r["ours_ge_b"] >= r["bound_b"] - se(r["bound_b"])
        assert r["ours_strict_b"] >= r["bound_ours_strict_b"] - se(r["bound_ours_strict_b"])
        # nearly tight: Ours->= P(b) and Ours-strict P(m)
        assert abs(r["ours_ge_b"] - r["bound_b"]) <= se(r["bound_b"]) + 2e-3
        assert abs(r["ours_strict_m"] - r["bound_ours_strict_m"]) <= se(r["bound_ours_strict_m"]) + 2e-3
        # T2: pathwise, and the mean always follows the attackers
        assert r["ours_strict_m"] <= r["trmean_m"] and r["ours_strict_b"] <= r["trmean_b"]
        assert r["mean_m"] == 1.0
    # T3: P_ours(m) non-increasing in gamma; T4: masking also blocks benign steps
    pm = [r["ours_strict_m"] for r in rows]
    assert all(a >= b - 4 * math.sqrt(a / rows[0]["trials"]) for a, b in zip(pm, pm[1:]))
    assert all(r["ours_strict_b"] < 0.5 * r["trmean_b"] for r in rows)
    # reference values of the spec (200k trials) within 4 SE
    ref = {0.0: (0.0892, 0.0382), 0.5: (0.6976, 0.0004), 1.0: (0.9911, 0.0)}
    for r in rows:
        if r["gamma"] in ref:
            tb, om = ref[r["gamma"]]
            assert abs(r["trmean_b"] - tb) <= se(tb)
            assert abs(r["ours_strict_m"] - om) <= se(om) + 1e-4


def test_proposition5_closed_form():
    from fedarena.reproduce.invariant import prop5_margin, prop5_threshold

    assert prop5_margin(0.4 * math.pi) == pytest.approx(0.0364745, abs=1e-6)
    assert prop5_threshold() / math.pi == pytest.approx(0.3918266, abs=1e-6)
    assert all(prop5_margin(t) > 0 for t in torch.linspace(0.4 * math.pi, math.pi / 2, 20).tolist())
    assert prop5_margin(0.35 * math.pi) < 0


def test_mask_keeps_a_same_sign_bias_and_can_mask_benign_progress():
    """The two channels that carry the edge-case backdoor past the mask in the reproduction
    (see its notes): hand-computed, N = 10, alpha = 0.2 (b = 2), tau = 0.2 (strict: |S| > 2)."""
    benign = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    # (1) attackers agree in sign but are large: every row positive, |S| = 10 -> kept, and the
    # trimmed mean of sorted [1..8, 50, 50] drops 1, 2 and 50, 50: mean(3..8) = 5.5 > benign 4.5
    U = torch.cat([benign, torch.tensor([50.0, 50.0])]).unsqueeze(1)
    assert trimmed_mean(benign.unsqueeze(1), 0.25).item() == pytest.approx(4.5)  # b = 2 of 8: mean(3..6)
    assert invariant_aggregate(U, tau=0.2, trim_frac=0.2).item() == pytest.approx(5.5)
    # (2) benign rows agree 6 to 2 (|S| = 4 > 2, kept without attackers: trimmed mean of 8 rows, b = 2)
    b2 = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0]).unsqueeze(1)
    assert invariant_aggregate(b2, tau=0.2, trim_frac=0.25).item() == pytest.approx(1.0)
    # two attackers of the opposite sign bring |S| to 6 - 4 = 2 <= 2: the benign step is masked to 0
    U2 = torch.cat([b2, torch.tensor([[-0.01], [-0.01]])])
    assert sign_consistency(U2).item() == pytest.approx(0.2)
    assert invariant_aggregate(U2, tau=0.2, trim_frac=0.2).item() == 0.0
