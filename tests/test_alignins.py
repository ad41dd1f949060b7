"""AlignIns (Xu et al., CVPR 2025): TDA, MPSA, MZ-scores and the filter by hand; end to end
it rejects a plain backdoor's clients."""

import math

import pytest
import torch

from fedarena.config import DEFAULT_RUN, load_config
from fedarena.core.layout import ParamLayout
from fedarena.defenses.alignins import AlignIns, mpsa, mz_scores, tda
from fedarena.defenses.base import RoundContext
from fedarena.errors import ConfigError
from fedarena.run.simulation import Simulation

D = torch.float64
U = torch.tensor([[3.0, -1.0, 0.5], [2.0, 1.0, -0.1], [-4.0, 1.0, 0.5]], dtype=D)


def test_tda_is_the_cosine_with_the_global_model():
    w = torch.tensor([1.0, 0.0, 0.0], dtype=D)
    # row 0: 3 / sqrt(9 + 1 + 0.25); row 1: 2 / sqrt(4 + 1 + 0.01); row 2: -4 / sqrt(16 + 1 + 0.25)
    expected = [3 / math.sqrt(10.25), 2 / math.sqrt(5.01), -4 / math.sqrt(17.25)]
    assert torch.allclose(tda(U, w), torch.tensor(expected, dtype=D))


def test_mpsa_is_the_top_k_share_agreeing_with_the_majority_sign():
    # principal sign per column: (+ + -) -> +, (- + +) -> +, (+ - +) -> +
    # k = 1: the largest |u| of each row is column 0: signs +, +, - -> 1, 1, 0
    assert mpsa(U, 1 / 3).tolist() == [1.0, 1.0, 0.0]
    # k = 2: columns 0 and 1 in every row: (+, -) -> 1/2, (+, +) -> 1, (-, +) -> 1/2
    assert mpsa(U, 2 / 3).tolist() == [0.5, 1.0, 0.5]


def test_mz_scores_use_the_median_and_the_population_std():
    # median 2.5, mean 4, std sqrt((9 + 4 + 1 + 36) / 4) = sqrt(12.5)
    s = math.sqrt(12.5)
    expected = [-1.5 / s, -0.5 / s, 0.5 / s, 7.5 / s]
    assert torch.allclose(mz_scores(torch.tensor([1.0, 2.0, 3.0, 10.0], dtype=D)), torch.tensor(expected, dtype=D))
    assert mz_scores(torch.tensor([2.0, 2.0], dtype=D)).tolist() == [0.0, 0.0]


def test_filter_and_median_norm_clipping_by_hand():
    # five updates along +x with one pointing away: the global model points along +x
    rows = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1], [2.0, 0.0], [-1.0, 0.0], [float("nan"), 0.0]])
    layout = ParamLayout.from_params({"w": torch.zeros(2)})
    ctx = RoundContext(0, layout, torch.arange(6), torch.ones(6), global_params=torch.tensor([1.0, 0.0]))
    agg = AlignIns(lambda_s=1.0, lambda_c=1.0, topk_ratio=0.5)(rows, ctx)
    # TDA = 1, 0.995, 0.995, 1, -1 -> median 0.995, std 0.7988: only the last has |MZ| > 1 (2.497)
    # MPSA (k = 1, column 0; principal sign +): 1, 1, 1, 1, 0 -> median 1, std 0.4: MZ of the last = -2.5
    assert agg.weights.tolist() == [True, True, True, True, False, False]
    # accepted norms 1, 1.005, 1.005, 2 -> median (1.005 + 1.005) / 2 = 1.005: (2, 0) is clipped to (1.005, 0)
    expected = torch.tensor([1.0 + 1.0 + 1.0 + 1.00499, 0.0]) / 4
    assert torch.allclose(agg.update, expected, atol=1e-4)
    assert math.isinf(agg.info["client_scores"][5])


def test_bad_parameters_are_one_clear_error():
    with pytest.raises(ConfigError, match="defense.lambda_s"):
        AlignIns(lambda_s=0.0)
    with pytest.raises(ConfigError, match="defense.topk_ratio"):
        AlignIns(topk_ratio=1.5)


@pytest.mark.usefixtures("one_thread")
def test_alignins_rejects_a_plain_backdoor():
    r = Simulation(load_config(None, ["defense.name=alignins", "fl.rounds=12"], base=DEFAULT_RUN)).run()
    mal = [c for c in r.clients if c["attacking"]]
    ben = [c for c in r.clients if not c["attacking"]]
    # measured: recall 1.0, FPR 0.05, BA 0.0 (FedAvg: 0.51)
    assert sum(not c["accepted"] for c in mal) / len(mal) >= 0.9
    assert sum(not c["accepted"] for c in ben) / len(ben) <= 0.15
    assert r.summary["final_backdoor_acc"] <= 0.1
