"""Fang et al.'s trim and Krum attacks and Mimic: hand-computed crafted rows, and each Fang
attack lowers accuracy under the rule it targets."""

from __future__ import annotations

import math

import pytest
import torch

from fedarena.attacks.base import RoundView
from fedarena.attacks.fang import FangKrum, FangTrim, fang_krum_lambda_max
from fedarena.attacks.mimic import Mimic
from fedarena.core.layout import ParamLayout
from fedarena.core.robust_kernels import krum_scores, lowest_scores, pairwise_sq_distances
from fedarena.errors import ConfigError


def make_view(benign, own=None, m=2, seed=0, ids=None, rnd=0):
    benign = torch.as_tensor(benign, dtype=torch.float32)
    d = benign.shape[1]
    own = torch.zeros(m, d) if own is None else torch.as_tensor(own, dtype=torch.float32)
    return RoundView(
        round=rnd,
        layout=ParamLayout.from_params({"w": torch.zeros(d)}),
        global_params=torch.zeros(d),
        prev_update=None,
        malicious_ids=torch.arange(len(own)),
        num_clients=len(benign) + len(own),
        own_updates=own,
        benign_updates=benign,
        lr=0.1,
        algorithm="fedavg",
        generator=torch.Generator().manual_seed(seed),
        benign_ids=None if ids is None else torch.as_tensor(ids),
    )


# ------------------------------------------------------------------ Fang trim (full / partial)
def test_fang_trim_full_knowledge_intervals_by_hand():
    # columns: sums 6 (s=+1, min 1 > 0), -7 (s=-1, max -1 <= 0), 3 (s=+1, min -1 <= 0), -3 (s=-1, max 2 > 0)
    B = [[1.0, -2.0, -1.0, 2.0], [3.0, -1.0, 2.0, -4.0], [2.0, -4.0, 2.0, -1.0]]
    a = FangTrim()  # b = 2
    lo, hi, s = a.intervals(make_view(B))
    assert s.tolist() == [1, -1, 1, -1]
    # s>0, min>0: [min/b, min]; s<0, max<=0: [max, max/b]; s>0, min<=0: [b min, min]; s<0, max>0: [max, b max]
    assert lo.tolist() == [0.5, -1.0, -2.0, 2.0]
    assert hi.tolist() == [1.0, -0.5, -1.0, 4.0]
    out = a.craft(make_view(B, m=3, seed=5))
    u = torch.rand(3, 4, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(out, lo + u * (hi - lo))
    assert ((out >= lo) & (out <= hi)).all() and not torch.equal(out[0], out[1])  # one draw per attacker
    assert a.threat.knowledge == "benign" and not a.trains


def test_fang_trim_partial_knowledge_by_hand():
    own = [[1.0, 2.0, -1.0], [3.0, 2.0, -3.0]]  # mu (2, 2, -2); unbiased sigma (sqrt 2, 0, sqrt 2); s (+, +, -)
    a = FangTrim(knowledge="partial")
    assert a.threat.knowledge == "own" and a.trains
    lo, hi, s = a.intervals(make_view([[0.0, 0.0, 0.0]], own=own))
    r2 = math.sqrt(2)
    assert torch.allclose(lo, torch.tensor([2 - 4 * r2, 2.0, -2 + 3 * r2]))
    assert torch.allclose(hi, torch.tensor([2 - 3 * r2, 2.0, -2 + 4 * r2]))
    with pytest.raises(ConfigError, match="attack.b"):
        FangTrim(b=1.0)


# ------------------------------------------------------------------ Fang Krum
def test_fang_krum_lambda_bound_by_hand():
    # 1-D benign rows 1..5, n = 7 rows, c = 2: G(i) = 3 nearest other benign rows;
    # sums of distances 6, 4, 4, 4, 6 -> min 4; first term 4 / ((7 - 4 - 1) * 1) = 2; max |w_i| = 5 -> 7
    B = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])
    assert fang_krum_lambda_max(B, 7, 2) == pytest.approx(7.0)
    # d = 4 scales both terms by 1/sqrt(d)
    assert fang_krum_lambda_max(B.repeat(1, 4), 7, 2) == pytest.approx((4 * 2 / 2 + 10) / 2)


def test_fang_krum_is_selected_by_krum_when_benign_rows_are_spread():
    g = torch.Generator().manual_seed(0)
    B = 0.1 + torch.randn(8, 30, generator=g)  # spread out: a point near the origin is Krum's favourite
    a = FangKrum()
    out = a.craft(make_view(B, m=3))
    diag = a.diagnostics()
    s = torch.sign(B.sum(0))
    assert torch.allclose(out, (-diag["lambda"] * s).repeat(3, 1))
    assert diag["selected"] == 1.0 and diag["lambda"] <= diag["lambda_max"]
    k = round(math.log2(diag["lambda_max"] / diag["lambda"]))
    assert diag["lambda"] == pytest.approx(diag["lambda_max"] / 2**k)  # halvings of the bound
    U = torch.cat([out, B])
    assert int(lowest_scores(krum_scores(pairwise_sq_distances(U), 3), 1)[0]) < 3
    if k > 0:  # the previous (doubled) lambda was not selected
        U2 = torch.cat([(-2 * diag["lambda"] * s).repeat(3, 1), B])
        assert int(lowest_scores(krum_scores(pairwise_sq_distances(U2), 3), 1)[0]) >= 3


def test_fang_krum_gives_up_at_threshold():
    B = torch.ones(5, 2)  # identical benign rows: Krum always picks one of them
    a = FangKrum(threshold=1e-3)
    a.craft(make_view(B, m=2))
    diag = a.diagnostics()
    assert diag["selected"] == 0.0 and 1e-3 <= diag["lambda"] < 2e-3 and diag["lambda_max"] == pytest.approx(1.0)


# ------------------------------------------------------------------ Mimic
def test_mimic_picks_the_row_furthest_along_the_top_variance_direction():
    B = [[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]]  # mu (2, 0); c = sum <x - mu, z0> (x - mu) = 8 z0_x (1, 0)
    z0 = torch.randn(2, generator=torch.Generator().manual_seed(0))
    sign = 1.0 if z0[0] > 0 else -1.0  # one power-iteration step from z0 keeps its x sign
    a = Mimic()
    out = a.craft(make_view(B, m=2, ids=[10, 11, 12]))
    want = 2 if sign > 0 else 0
    assert torch.equal(out, torch.tensor([B[want], B[want]]))
    assert a.diagnostics()["target"] == 10 + want
    assert torch.equal(a.z, torch.tensor([sign, 0.0]))
    # after the warm-up the attackers keep copying that client while it is sampled ...
    B2 = [[9.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    out2 = a.craft(make_view(B2, m=2, ids=[20, 10 + want, 21]))
    assert torch.equal(out2[0], torch.tensor(B2[1]))
    # ... and copy the best row of the round when it is not
    out3 = a.craft(make_view(B2, m=2, ids=[20, 22, 21]))
    assert torch.equal(out3[0], torch.tensor(B2[0] if sign > 0 else B2[1]))
    assert a.chosen == 10 + want


def test_mimic_fixed_target_is_byzfl_epsilon():
    B = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]
    assert Mimic(target=0).craft(make_view(B, m=2)).tolist() == [[1.0, 2.0, 3.0]] * 2  # byzfl.Mimic(0)
    assert Mimic(target=2).craft(make_view(B, m=1)).tolist() == [[7.0, 8.0, 9.0]]


# ------------------------------------------------------------------ end to end
@pytest.mark.parametrize(
    "attack, defense", [("fang-trim", "trimmed-mean"), ("fang-trim", "median"), ("fang-krum", "krum")]
)
def test_fang_attacks_reduce_accuracy_under_their_rule(attack, defense):
    from fedarena.config import load_config
    from fedarena.run.simulation import Simulation

    base = [
        "fl.num_clients=20",
        "fl.rounds=8",
        "fl.local_steps=4",
        "fl.batch_size=16",
        "eval.every=8",
        "attack.num_malicious=6",
        f"defense.name={defense}",
        "data.partition=dirichlet",
        "data.alpha=1.0",
    ]
    # the same malicious clients, honest throughout (the attack window starts after the run)
    clean = Simulation(load_config(None, base + [f"attack.name={attack}", "attack.start_round=100"])).run()
    clean = clean.summary["final_main_acc"]
    hit = Simulation(load_config(None, base + [f"attack.name={attack}"])).run().summary["final_main_acc"]
    assert hit < clean - 0.1, (clean, hit)
