"""Paired intervals, bounded display and ranks with ties (studies/stats.py), and the
leaderboard's paired columns, all against hand-computed values."""

import math

import pytest

from fedarena.studies.report import build_report
from fedarena.studies.stats import (
    Interval,
    fmt_bounded,
    fmt_diff,
    paired_interval,
    rank_labels,
    ranks_with_ties,
    t_interval,
)

from test_report import _fake_run

T4 = 2.7764451051977987  # scipy.stats.t.ppf(0.975, 4)


def test_paired_interval_by_hand():
    # x - b per seed: 0.02, 0.04, 0.03, 0.05, 0.01 -> mean 0.03; deviations -.01 .01 0 .02 -.02,
    # squares sum 0.001, sd = sqrt(0.001 / 4) = 0.0158114; half = 2.7764 * 0.0158114 / sqrt(5) = 0.0196324
    b = {0: 0.80, 1: 0.70, 2: 0.90, 3: 0.60, 4: 0.75}
    x = {0: 0.82, 1: 0.74, 2: 0.93, 3: 0.65, 4: 0.76}
    iv = paired_interval(x, b)
    assert iv.mean == pytest.approx(0.03) and iv.n == 5
    assert iv.half == pytest.approx(T4 * math.sqrt(0.001 / 4) / math.sqrt(5), rel=1e-9)
    assert iv.lo > 0  # the paired interval separates them ...
    # ... while the unpaired intervals of x and b overlap: b's sd over seeds is 0.1173 -> half 0.146
    assert t_interval(x.values()).lo < t_interval(b.values()).hi


def test_paired_interval_uses_common_seeds_only():
    iv = paired_interval({0: 0.5, 1: 0.7, 2: 0.9}, {0: 0.4, 1: 0.5})  # differences 0.1, 0.2
    assert iv.n == 2 and iv.mean == pytest.approx(0.15)
    assert iv.half == pytest.approx(12.706204736 * math.sqrt(0.005) / math.sqrt(2), rel=1e-6)


def test_bounded_display_never_leaves_the_range():
    assert fmt_bounded(Interval(0.85, 0.80, 0.90, 5)) == "85.0±5.0"
    # 0.457 ± 2.524 (the old FoolsGold row) is shown clipped to the metric's range
    assert fmt_bounded(Interval(0.457, 0.457 - 2.524, 0.457 + 2.524, 2)) == "45.7 [0.0, 100.0]"
    assert fmt_bounded(Interval(0.98, 0.95, 1.01, 5)) == "98.0 [95.0, 100.0]"
    assert fmt_bounded(Interval(0.5, math.nan, math.nan, 1)) == "50.0"
    assert fmt_bounded(Interval(math.nan, math.nan, math.nan, 0)) == "-"
    assert fmt_diff(Interval(0.03, 0.0103676, 0.0496324, 5)) == "+3.0±2.0"
    assert fmt_diff(Interval(-0.5, -1.7, 0.7, 2)) == "-50.0 [-100.0, +70.0]"


def test_ranks_with_ties_by_hand():
    a = {0: 0.90, 1: 0.80, 2: 0.85}
    b = {0: 0.80, 1: 0.70, 2: 0.75}  # a - b = 0.1 every seed: sd 0, interval [0.1, 0.1] -> a beats b
    c = {0: 0.95, 1: 0.60, 2: 0.70}  # a - c = -0.05, 0.2, 0.15: mean 0.1, sd 0.1323, half 0.3287 -> holds 0
    # c - b = 0.15, -0.1, -0.05 -> holds 0. So: a rank 1, c rank 1 (nobody beats it), b rank 2 (beaten by a only)
    ranks = ranks_with_ties([a, b, c])
    assert ranks == [1, 2, 1]
    assert rank_labels(ranks) == ["1=", "2", "1="]
    assert ranks_with_ties([a, b], higher_is_better=False) == [2, 1]


def test_leaderboard_paired_against_fedavg(tmp_path):
    # fedavg and median on 3 seeds, attacks none and label-flip. MA under attack (one attack):
    # fedavg 0.50, 0.60, 0.55; median 0.70, 0.75, 0.72 -> differences 0.20, 0.15, 0.17,
    # mean 0.17333, sd = sqrt(((0.02667)^2 + (0.02333)^2 + (0.00333)^2) / 2) = 0.025166,
    # half = t(0.975, 2) 4.302653 * 0.025166 / sqrt(3) = 0.062515
    for seed, (fa, me) in enumerate([(0.50, 0.70), (0.60, 0.75), (0.55, 0.72)]):
        _fake_run(tmp_path, f"f-none-{seed}", "none", "fedavg", seed, 0.9, None, [])
        _fake_run(tmp_path, f"m-none-{seed}", "none", "median", seed, 0.88, None, [])
        _fake_run(tmp_path, f"f-lf-{seed}", "label-flip", "fedavg", seed, fa, None, [])
        _fake_run(tmp_path, f"m-lf-{seed}", "label-flip", "median", seed, me, None, [])
    parts = build_report([tmp_path], tmp_path / "rep")
    lb = parts["settings"][0]["leaderboard"].set_index("defense")
    assert lb.loc["median", "d_ma"] == pytest.approx(0.173333, abs=1e-6)
    assert lb.loc["median", "d_ma_hi"] - lb.loc["median", "d_ma"] == pytest.approx(0.062515, abs=1e-5)
    assert math.isnan(lb.loc["fedavg", "d_ma"])
    assert list(lb.index) == ["median", "fedavg"] and list(lb["rank"]) == [1, 2]
    text = parts["settings"][0]["leaderboard_text"].set_index("defense")
    assert text.loc["median", "ΔMA vs fedavg"] == "+17.3±6.3"
    assert text.loc["fedavg", "ΔMA vs fedavg"] == "(baseline)"
    assert "paired" in (tmp_path / "rep" / "report.md").read_text()


def test_significant_differences_are_coloured_by_direction():
    from fedarena.studies.report import diff_verdict

    assert diff_verdict("+3.0±2.0") == "better" and diff_verdict("+1.0±2.0") is None
    assert diff_verdict("-5.0±1.0") == "worse" and diff_verdict("-5.0±1.0", lower_is_better=True) == "better"
    assert diff_verdict("-50.0 [-100.0, -10.0]") == "worse" and diff_verdict("(baseline)") is None


def test_another_baseline(tmp_path):
    # median as the baseline: fedavg - median per seed = -0.20, -0.15, -0.17 (see above) -> -17.3±6.3
    for seed, (fa, me) in enumerate([(0.50, 0.70), (0.60, 0.75), (0.55, 0.72)]):
        _fake_run(tmp_path, f"f-lf-{seed}", "label-flip", "fedavg", seed, fa, None, [])
        _fake_run(tmp_path, f"m-lf-{seed}", "label-flip", "median", seed, me, None, [])
    parts = build_report([tmp_path], tmp_path / "rep", baseline="median")
    text = parts["settings"][0]["leaderboard_text"].set_index("defense")
    assert text.loc["fedavg", "ΔMA vs median"] == "-17.3±6.3" and text.loc["median", "ΔMA vs median"] == "(baseline)"
    parts = build_report([tmp_path], tmp_path / "rep2", baseline="krum")  # not in the study: no paired columns
    assert not any(c.startswith("Δ") for c in parts["settings"][0]["leaderboard_text"].columns)
