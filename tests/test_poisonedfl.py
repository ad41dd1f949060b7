"""PoisonedFL (Xie et al., CVPR 2025): Eqs. 7-10 and the authors' magnitude controller,
checked on hand-made histories (LeadFL spec U11, U12)."""

from __future__ import annotations

import math

import pytest
import torch

from fedarena.attacks.base import DataInfo, RoundView
from fedarena.attacks.poisonedfl import MagnitudeController, PoisonedFL, k99
from fedarena.core.layout import ParamLayout
from fedarena.errors import ConfigError
from fedarena.registry import ATTACKS


def view(d, m=3, rnd=0, prev=None, params=None, seed=0):
    return RoundView(
        round=rnd,
        layout=ParamLayout.from_params({"w": torch.zeros(d)}),
        global_params=torch.zeros(d) if params is None else params,
        prev_update=prev,
        malicious_ids=torch.arange(m),
        num_clients=10,
        own_updates=None,
        benign_updates=None,
        lr=1.0,
        algorithm="fedavg",
        generator=torch.Generator().manual_seed(seed),
    )


def attack(**kw):
    a = PoisonedFL(**kw)
    a.setup(DataInfo(10, (4,)), torch.Generator().manual_seed(0))
    return a


def test_u11_first_round_zero_then_sign_s_norm_c_times_global_identical_rows():
    d = 1000
    a = attack()
    first = a.craft(view(d, rnd=0))
    assert first.shape == (3, d) and torch.count_nonzero(first) == 0
    g = torch.randn(d, generator=torch.Generator().manual_seed(1))
    out = a.craft(view(d, rnd=1, prev=g))
    # Eq. 7 with k^{t-1} = 0: h~ = g; v = |g|/||g||; lambda = c0 ||g||
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])  # all fake clients identical
    nz = g != 0
    assert torch.equal(torch.sign(out[0][nz]), a.s[nz])
    assert float(torch.linalg.vector_norm(out[0])) == pytest.approx(8.0 * float(torch.linalg.vector_norm(g)), rel=1e-5)
    expected = g.abs() / torch.linalg.vector_norm(g) * 8.0 * torch.linalg.vector_norm(g) * a.s
    assert torch.allclose(out[0], expected, atol=1e-5)
    assert a.diagnostics()["c"] == 8.0


def test_eq7_removes_the_last_malicious_update():
    # hand values: g = (3, 0), last malicious mean k = (1, 0): h~ = g - 3/1 * k = (0, 0) on x ...
    d = 2
    a = attack()
    a.craft(view(d, rnd=0))
    a.last_mal = torch.tensor([0.0, 2.0])
    g = torch.tensor([3.0, 4.0])  # ||g|| = 5; h~ = g - 5/2 (0, 2) = (3, -1); v = (3, 1)/sqrt(10)
    out = a.craft(view(d, m=1, rnd=1, prev=g))[0]
    expected = torch.tensor([3.0, 1.0]) / math.sqrt(10) * 8 * 5 * a.s
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(a.last_mal, out)  # k^t = the mean of what was sent


def test_u12_controller_schedule_decays_to_floor():
    d = 2000
    s = torch.sign(torch.randn(d, generator=torch.Generator().manual_seed(0)))
    ctl = MagnitudeController(s)
    gen = torch.Generator().manual_seed(1)
    W = torch.zeros(d)
    cs = {}
    for t in range(501):
        cs[t] = ctl.observe(t, W)
        W = W + torch.randn(d, generator=gen)  # random drift: ~50 % aligned < k_99
    assert cs[49] == 8.0 and cs[50] == pytest.approx(5.6) and cs[99] == pytest.approx(5.6)
    assert cs[100] == pytest.approx(3.92) and cs[150] == pytest.approx(2.744)
    expected = [8 * 0.7**k for k in range(8)]  # 8 -> 5.6 -> ... -> 0.6588; 0.4612 < 0.5 never taken
    assert [round(cs[50 * k], 4) for k in range(8)] == [round(x, 4) for x in expected]
    assert cs[400] == pytest.approx(8 * 0.7**7) and cs[500] == pytest.approx(0.6588, abs=1e-4)


def test_u12_controller_keeps_c_when_the_model_moves_along_s():
    d = 2000
    s = torch.sign(torch.randn(d, generator=torch.Generator().manual_seed(0)))
    ctl = MagnitudeController(s)
    W = torch.zeros(d)
    for t in range(301):
        assert ctl.observe(t, W) == 8.0
        W = W + 0.01 * s
    assert ctl.aligned_frac == 1.0


def test_u12_k99_is_the_binomial_quantile_of_the_authors_table():
    assert k99(139_960) == 70_415
    assert k99(1_204_682) == 603_618


def test_random_sign_baseline_draws_a_new_direction_every_round():
    d = 500
    a = attack(consistent=False)
    a.craft(view(d, rnd=0))
    g = torch.randn(d, generator=torch.Generator().manual_seed(3))
    r1 = a.craft(view(d, rnd=1, prev=g, seed=1))[0]
    r2 = a.craft(view(d, rnd=2, prev=g, seed=2))[0]
    both = (r1 != 0) & (r2 != 0)
    agree = float((torch.sign(r1[both]) == torch.sign(r2[both])).float().mean())
    assert 0.4 < agree < 0.6


def test_variants_noise_flip_and_partition():
    d = 1200
    g = torch.randn(d, generator=torch.Generator().manual_seed(3))
    a = attack(noise_rho=0.5)
    a.craft(view(d, rnd=0))
    rows = a.craft(view(d, rnd=1, prev=g))
    assert not torch.equal(rows[0], rows[1])  # per-client noise
    noise = rows[0] - rows.mean(0)
    assert float(noise.std()) == pytest.approx(
        0.5 * a.diagnostics()["lambda"] / math.sqrt(d) * math.sqrt(2 / 3), rel=0.15
    )
    a = attack(flip_p=0.05)
    a.craft(view(d, rnd=0))
    rows = a.craft(view(d, rnd=1, prev=g))
    flipped = float((torch.sign(rows[0]) != a.s).float().mean())
    assert 0.03 < flipped < 0.07
    a = attack(partition_dims=True)
    a.craft(view(d, rnd=0))
    rows = a.craft(view(d, rnd=1, prev=g))
    nonzero = rows != 0
    assert int(nonzero.sum(0).max()) == 1  # every coordinate pushed by one colluder only
    assert int(nonzero.sum()) == d and abs(int(nonzero[0].sum()) - d // 3) <= 1


def test_bad_options_one_line_errors():
    with pytest.raises(ConfigError, match="attack.flip_p"):
        PoisonedFL(flip_p=1.5)
    with pytest.raises(ConfigError, match="attack.rule"):
        PoisonedFL(rule="x")
    assert ATTACKS.get("poisonedfl") is PoisonedFL and PoisonedFL.trains is False
