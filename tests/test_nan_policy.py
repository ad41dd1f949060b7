"""The rules' one NaN policy (fedarena.core.robust_kernels), kernel by kernel, with
hand-computed values: faulty rows in row statistics, NaN on top in order statistics,
NaN abstaining in sign votes; and the rules that used to carry their own copy."""

import math

import pytest
import torch

from fedarena.core.layout import ParamLayout
from fedarena.core.robust_kernels import (
    clean_rows,
    multi_krum_select,
    pairwise_sq_distances,
    sorted_slice_mean,
    trimmed_mean,
)
from fedarena.core.sign_masks import and_mask, sign_votes
from fedarena.defenses.base import RoundContext
from fedarena.defenses.invariant import InvariantAggregator, mean_var_ratio, mean_without_faulty
from fedarena.defenses.invariant import trimmed_mean as invariant_trimmed_mean
from fedarena.defenses.invariant_baselines import FLTrust
from fedarena.defenses.rlr import robust_lr_signs
from fedarena.defenses.robust import SignMajority

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sorted_slice_mean_keeps_the_sorted_positions(dtype):
    # column 0 sorted: 1 2 3 4 5 -> positions 1..2 keep 2, 3 -> 2.5
    # column 1 sorted: -4 0 1 7 NaN(top) -> positions 1..2 keep 0, 1 -> 0.5
    U = torch.tensor([[3.0, 7.0], [1.0, NAN], [5.0, 0.0], [2.0, -4.0], [4.0, 1.0]], dtype=dtype)
    assert sorted_slice_mean(U, 1, 3).tolist() == [2.5, 0.5]
    # the symmetric slice is the trimmed mean: trim 1 keeps positions 1..3 -> (2+3+4)/3, (0+1+7)/3
    assert torch.allclose(trimmed_mean(U, 1), torch.tensor([3.0, 8.0 / 3.0], dtype=dtype))
    with pytest.raises(ValueError, match="lo < hi"):
        sorted_slice_mean(U, 2, 2)


def test_invariant_middle_slice_is_the_asymmetric_kernel():
    # n = 10: the code's middle 10 % keeps sorted position [int(4.5), int(5.5)) = [4, 5), widened: 4 only
    U = torch.arange(10.0).flip(0).unsqueeze(1).repeat(1, 3)  # every column holds 9..0
    assert invariant_trimmed_mean(U, 0.25, "middle").tolist() == [4.0, 4.0, 4.0]
    # ceil mode, trim_frac 0.25 of 10: b = 3, keeps 3..6 -> 4.5
    assert invariant_trimmed_mean(U, 0.25).tolist() == [4.5, 4.5, 4.5]


def test_clean_rows_zeroes_faulty_rows_measured_in_the_own_dtype():
    U = torch.tensor([[1.0, 2.0], [NAN, 0.0], [INF, 1.0], [1e30, 0.0]], dtype=torch.float32)
    X, bad = clean_rows(U)
    assert bad.tolist() == [False, True, True, True]  # 1e30^2 overflows float32's Gram arithmetic
    assert X.dtype == torch.float64 and X.tolist() == [[1.0, 2.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]


def test_multi_krum_select_leaves_faulty_rows_out():
    # points 0, 1, 2, 3, 100 on a line, f = 1: scores sum the n - f - 2 = 2 nearest squared
    # distances: 1+4, 1+1, 1+1, 1+4, 97^2+98^2 -> lowest first, ties by index: 1, 2, 0, 3, 4
    U = torch.tensor([[0.0], [1.0], [2.0], [3.0], [100.0]])
    D = pairwise_sq_distances(U)
    none = torch.zeros(5, dtype=torch.bool)
    assert multi_krum_select(D, 1, 3, none).tolist() == [1, 2, 0]
    # row 1 faulty: it goes last and is dropped, so m = 5 selects four rows
    bad = torch.tensor([False, True, False, False, False])
    assert multi_krum_select(D, 1, 5, bad).tolist() == [2, 0, 3, 4]


def test_sign_votes_nan_abstains_inf_votes():
    # column 0: +1 +1 -1 -> 1; column 1: NaN abstains, +inf +1, -inf -1 -> 0; column 2: 0 0 NaN -> 0
    U = torch.tensor([[2.0, NAN, 0.0], [0.5, INF, 0.0], [-1.0, -INF, NAN]])
    assert sign_votes(U).tolist() == [1.0, 0.0, 0.0]
    # the three users of sign votes agree on it: signSGD's vote, RLR's sign of the lr, the AND-mask
    assert SignMajority().aggregate(U, _ctx(U)).update.tolist() == [1.0, 0.0, 0.0]
    assert robust_lr_signs(U, 1).tolist() == [1.0, -1.0, -1.0]
    assert and_mask(U, 0.3).tolist() == [True, False, False]  # |1| > 0.3 * 3 = 0.9


def test_invariant_mean_statistics_leave_faulty_rows_out():
    U = torch.tensor([[1.0, 4.0], [3.0, 0.0], [NAN, 5.0]])
    assert mean_without_faulty(U).tolist() == [2.0, 2.0]
    # rows 0 and 1: |mean| / (population std + 1e-12) = 2 / 1, 2 / 2
    assert torch.allclose(mean_var_ratio(U), torch.tensor([2.0, 1.0]))
    out = InvariantAggregator(estimator="mean", tau=-1).aggregate(U, _ctx(U)).update
    assert out.tolist() == [2.0, 2.0]


def test_fltrust_with_a_faulty_server_update_trusts_nobody():
    U = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    agg, w = FLTrust.combine(U, torch.tensor([NAN, 1.0]))
    assert agg.tolist() == [0.0, 0.0] and w.tolist() == [0.0, 0.0]


def _ctx(U):
    n, d = U.shape
    return RoundContext(
        round=0,
        layout=ParamLayout(("w",), (torch.Size([d]),), (0,)),
        client_ids=torch.arange(n),
        num_samples=torch.ones(n, dtype=torch.long),
        f=0,
    )
