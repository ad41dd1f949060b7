"""Robust Learning Rate (RLR spec U1-U5), clipping (U6, U8, through the clip stage), noise
(U7), their composition, robustness to faulty rows, sampling (U13), model sizes (U11) and
a small end-to-end run."""

import numpy as np
import pytest
import torch

from fedarena.config import load_config
from fedarena.defenses.base import Aggregate, RoundContext
from fedarena.defenses.fedavg import FedAvg
from fedarena.defenses.noise import GaussianNoise
from fedarena.defenses.pipeline import build_pipeline
from fedarena.defenses.rlr import RobustLearningRate, robust_lr_signs, sign_votes
from fedarena.core.layout import ParamLayout
from fedarena.core.local import BatchSchedule, train_sequential, train_vectorized
from fedarena.core.recipe import TrainRecipe
from fedarena.run.simulation import Simulation
from fedarena.errors import ConfigError
from fedarena.registry import MODELS


pytestmark = pytest.mark.usefixtures("one_thread")


def ctx_for(U, num_samples=None, seed=0, t=0, f=1):
    k, d = U.shape
    ns = torch.ones(k) if num_samples is None else torch.as_tensor(num_samples, dtype=torch.float32)
    return RoundContext(
        round=t,
        layout=ParamLayout.from_params({"w": torch.zeros(d)}),
        client_ids=torch.arange(k),
        num_samples=ns,
        f=f,
        generator=torch.Generator().manual_seed(seed),
    )


def u1_matrix():
    """10 clients x 5 coordinates with the vote patterns of the RLR spec's U1."""
    g = torch.Generator().manual_seed(0)
    mag = torch.rand(10, 5, generator=g) + 0.1
    s = torch.zeros(10, 5)
    s[:7, 0], s[7:, 0] = 1, -1  # 7 (+) / 3 (-): |sum| = 4
    s[:6, 1], s[6:, 1] = 1, -1  # 6 / 4: |sum| = 2
    # coord 2: all zero
    s[:4, 3] = 1  # 4 (+), 6 zeros: |sum| = 4
    s[:4, 4], s[4:, 4] = 1, -1  # 4 / 6: |sum| = 2
    return s * mag


def test_u1_lr_signs_by_hand():
    U = u1_matrix()
    assert sign_votes(U).tolist() == [4, 2, 0, 4, -2]
    assert robust_lr_signs(U, theta=4).tolist() == [1.0, -1.0, -1.0, 1.0, -1.0]


def test_u2_votes_unweighted_and_zero_abstains():
    U = u1_matrix()
    rlr = RobustLearningRate(theta=4, weighted=True)
    a = rlr(U, ctx_for(U, num_samples=[1] * 10))
    b = rlr(U, ctx_for(U, num_samples=[1000, 1, 1, 1, 1, 1, 1, 1, 1, 1]))
    assert torch.equal(a.info["lr_signs"], b.info["lr_signs"])
    assert a.info["lr_signs"].tolist() == [1.0, -1.0, -1.0, 1.0, -1.0]
    # ... but the aggregate is the sample-weighted mean (Eq. 1) times the signs (Eq. 6)
    w = torch.tensor([1000.0] + [1.0] * 9)
    assert torch.allclose(b.update, b.info["lr_signs"] * ((w / w.sum()) @ U))


def test_u3_theta_zero_is_fedavg_and_identical_updates_unchanged():
    U = u1_matrix()
    off = RobustLearningRate(theta=0)(U, ctx_for(U))
    assert torch.equal(off.update, FedAvg()(U, ctx_for(U)).update)  # bit-for-bit
    assert "lr_signs" not in off.info
    same = torch.tensor([[0.5, -2.0, 3.0]]).repeat(10, 1)
    for theta in range(1, 11):
        out = RobustLearningRate(theta=theta)(same, ctx_for(same))
        assert torch.allclose(out.update, same.mean(0))


def test_u4_rlr_over_each_base():
    U = torch.tensor([[1.0, -1.0, 2.0, 0.5], [2.0, -3.0, -1.0, 0.5], [3.0, 1.0, -2.0, -0.5], [4.0, -2.0, 1.0, -0.5]])
    signs = torch.tensor([1.0, -1.0, -1.0, -1.0])  # votes 4, -2, 0, 0 with theta = 3
    assert robust_lr_signs(U, 3).tolist() == signs.tolist()
    avg = RobustLearningRate(theta=3, base="fedavg")(U, ctx_for(U))
    assert torch.allclose(avg.update, signs * torch.tensor([2.5, -1.25, 0.0, 0.0]))
    med = RobustLearningRate(theta=3, base="median")(U, ctx_for(U))
    assert torch.allclose(med.update, signs * torch.tensor([2.5, -1.5, 0.0, 0.0]))
    med_low = RobustLearningRate(theta=3, base="median", even="lower")(U, ctx_for(U))
    assert torch.allclose(med_low.update, signs * torch.tensor([2.0, -2.0, -1.0, -0.5]))
    sgn = RobustLearningRate(theta=3, base="sign")(U, ctx_for(U))
    assert sgn.update.tolist() == (signs * torch.tensor([1.0, -1.0, 0.0, 0.0])).tolist()  # ties -> 0


def test_u5_parity_for_ten_voters():
    g = torch.Generator().manual_seed(1)
    U = torch.randint(0, 2, (10, 2000), generator=g).float() * 2 - 1
    assert torch.equal(robust_lr_signs(U, 3), robust_lr_signs(U, 4))
    assert torch.equal(robust_lr_signs(U, 5), robust_lr_signs(U, 6))
    assert not torch.equal(robust_lr_signs(U, 4), robust_lr_signs(U, 6))
    # theta = 4 <=> at least 7 of 10 agree
    agree = torch.maximum((U > 0).sum(0), (U < 0).sum(0))
    assert torch.equal(robust_lr_signs(U, 4) > 0, agree >= 7)


def test_start_round_switches_rlr_on_late():
    U = u1_matrix()
    rlr = RobustLearningRate(theta=4, start_round=5)
    early = rlr(U, ctx_for(U, t=4))
    late = rlr(U, ctx_for(U, t=5))
    assert torch.allclose(early.update, U.mean(0)) and early.info["rlr_active"] == 0.0
    assert torch.allclose(late.update, late.info["lr_signs"] * U.mean(0)) and late.info["rlr_active"] == 1.0
    assert late.info["rlr_flipped_frac"] == pytest.approx(3 / 5)
    assert late.info["rlr_flipped_frac_nonzero"] == pytest.approx(2 / 4)


def test_faulty_rows_neither_crash_nor_give_nan_over_median():
    g = torch.Generator().manual_seed(0)
    U = torch.randn(10, 50, generator=g)
    U[0] = float("nan")
    U[1] = 1e30
    U[2, :10] = float("inf")
    out = RobustLearningRate(theta=4, base="median")(U, ctx_for(U))
    assert torch.isfinite(out.update).all()
    assert sign_votes(U[:1]).abs().sum() == 0  # a NaN row casts no vote


def test_validation_errors():
    with pytest.raises(ConfigError, match="defense.theta: must be <= the clients per round n = 10"):
        RobustLearningRate(theta=11).validate(10, 1)
    with pytest.raises(ConfigError, match="defense.theta: must be >= 0"):
        RobustLearningRate(theta=-1)
    with pytest.raises(ConfigError, match="defense.base: unknown defense 'avg'"):
        RobustLearningRate(base="avg")
    with pytest.raises(ConfigError, match="defense.even"):
        RobustLearningRate(base="median", even="upper")
    with pytest.raises(ConfigError, match="defense.trim: unknown parameter for defense 'fedavg'"):
        RobustLearningRate(base="fedavg", trim=2)


# ----------------------------------------------------------------- clipping and noise
def test_u6_server_clip_stage_bounds_norms():
    pipe = build_pipeline({"name": "fedavg", "clip": 2.0, "clip_at": "server"})
    g = torch.Generator().manual_seed(0)
    U = torch.randn(20, 100, generator=g) * torch.linspace(0.01, 1.0, 20).unsqueeze(1)
    clipped = pipe.pre[0](U, ctx_for(U))
    norms = U.norm(dim=1)
    assert (clipped.norm(dim=1) <= 2.0 + 1e-5).all()
    small = norms <= 2.0
    assert small.any() and (~small).any()
    assert torch.equal(clipped[small], U[small])
    assert torch.allclose(clipped[~small].norm(dim=1), torch.full((int((~small).sum()),), 2.0))


def test_u7_noise_std_is_sigma_times_m():
    d = 100_000
    agg = Aggregate(torch.zeros(d))
    U = torch.zeros(3, d)
    z = GaussianNoise(noise=0.01, clip=4.0)(agg, U, ctx_for(torch.zeros(3, 2), seed=3)).update
    assert z.std().item() == pytest.approx(0.04, rel=0.05) and abs(z.mean().item()) < 0.01 * 0.04 * 10
    # M = 0 (or unset): no noise even with sigma > 0, as the reference code
    assert torch.equal(GaussianNoise(noise=0.01, clip=0.0)(agg, U, ctx_for(U[:, :2])).update, agg.update)
    assert torch.equal(GaussianNoise(noise=0.01)(agg, U, ctx_for(U[:, :2])).update, agg.update)
    z = GaussianNoise(noise=0.02, noise_abs=True)(agg, U, ctx_for(torch.zeros(3, 2), seed=3)).update
    assert z.std().item() == pytest.approx(0.02, rel=0.05)
    with pytest.raises(ConfigError, match="defense.noise: must be >= 0"):
        GaussianNoise(noise=-1.0, clip=1.0)


def test_noise_enters_before_the_rlr_flip_and_votes_are_noise_free():
    U = u1_matrix()
    pipe = build_pipeline({"name": "rlr", "theta": 4, "clip": 100.0, "clip_at": "server", "noise": 0.5})
    assert [type(s).__name__ for s in pipe.pre] == ["NormClip"] and [type(s).__name__ for s in pipe.post] == [
        "GaussianNoise"
    ]
    out = pipe(U, ctx_for(U, seed=7))
    z = torch.randn(5, generator=torch.Generator().manual_seed(7)) * 50.0
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0, -1.0])
    assert torch.allclose(out.update, signs * (U.mean(0) + z), atol=1e-5)


def test_noise_composes_with_median_and_sign():
    U = u1_matrix()
    for name in ("median", "sign", "foolsgold"):
        pipe = build_pipeline({"name": name, "clip": 1.0, "noise": 0.1})
        out = pipe(U, ctx_for(U, seed=1))
        base = build_pipeline({"name": name})(U, ctx_for(U, seed=1))
        z = torch.randn(5, generator=torch.Generator().manual_seed(1)) * 0.1
        clipped = build_pipeline({"name": name, "clip": 1.0})(U, ctx_for(U, seed=1))
        assert torch.allclose(out.update, clipped.update + z, atol=1e-6)
        assert base.update.shape == out.update.shape


def test_u8_client_pgd_keeps_updates_in_the_ball():
    pipe = build_pipeline({"name": "rlr", "theta": 2, "clip": 0.05, "clip_at": "client"})
    recipe = pipe.client_recipe(TrainRecipe(lr=2.0, momentum=0.9, batch_size=8, epochs=2))
    assert recipe.project is not None
    torch.manual_seed(0)
    model = MODELS.get("mlp")((1, 8, 8), 10)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(60, 1, 8, 8, generator=g), torch.randint(0, 10, (60,), generator=g)
    index = [np.arange(0, 30), np.arange(30, 60)]
    sched = BatchSchedule.build([30, 30], recipe, [np.random.default_rng(i) for i in range(2)])
    U_seq, _ = train_sequential(model, params, x, y, index, sched, recipe)
    U_vec = train_vectorized(model, params, x, y, index, sched, recipe)
    for U in (U_seq, U_vec):
        assert (U.norm(dim=1) <= 0.05 + 1e-6).all() and (U.norm(dim=1) > 0.04).all()
    free = TrainRecipe(lr=2.0, momentum=0.9, batch_size=8, epochs=2)
    U_free, _ = train_sequential(model, params, x, y, index, sched, free)
    assert (U_free.norm(dim=1) > 0.05).all()


# ----------------------------------------------------------------- engine-level
BASE = [
    "data.dataset=digits",
    "fl.num_clients=10",
    "fl.rounds=40",
    "fl.local_epochs=2",
    "fl.batch_size=32",
    "fl.lr=0.1",
    "fl.momentum=0.9",
    "fl.grad_clip=10",
    "attack.name=backdoor",
    "attack.num_malicious=1",
    "attack.source=1",
    "attack.target=7",
    "attack.trigger=plus",
    "eval.every=40",
    "seed=0",
]


def test_rlr_removes_the_backdoor_at_small_accuracy_cost():
    fedavg = Simulation(load_config(None, BASE)).run().summary
    rlr = Simulation(load_config(None, BASE + ["defense.name=rlr", "defense.theta=4"])).run()
    s = rlr.summary
    assert fedavg["final_backdoor_acc"] >= 0.5
    assert s["final_backdoor_acc"] <= 0.05
    assert s["final_main_acc"] >= fedavg["final_main_acc"] - 0.03
    flips = [r["defense_rlr_flipped_frac_nonzero"] for r in rlr.rounds]
    assert 0.0 < flips[0] < flips[-1] < 1.0  # low consensus grows after warm-up (spec 2.3)


def test_config_errors_are_one_line():
    cfg = load_config(None, BASE + ["defense.name=rlr", "defense.theta=12"])
    with pytest.raises(ConfigError) as e:
        Simulation(cfg)
    assert str(e.value).startswith("defense.theta:")
    with pytest.raises(ConfigError, match="defense.base"):
        load_config(None, BASE + ["defense.name=rlr", "defense.base=nope"])


def test_u13_sampling_distinct_and_paired_across_defenses():
    cfg = BASE + ["fl.num_clients=20", "fl.clients_per_round=7"]
    a = Simulation(load_config(None, cfg))
    b = Simulation(load_config(None, cfg + ["defense.name=rlr", "defense.theta=4"]))
    for t in range(5):
        ca, cb = a.sample_clients(t), b.sample_clients(t)
        assert len(set(ca.tolist())) == 7 and np.array_equal(ca, cb)
    assert np.array_equal(a.malicious, b.malicious)


def test_u11_paper_model_sizes():
    fm = MODELS.get("fmnist-cnn")((1, 28, 28), 10)
    cf = MODELS.get("cifar-cnn")((3, 32, 32), 10)
    assert sum(p.numel() for p in fm.parameters()) == 1_199_882
    assert sum(p.numel() for p in cf.parameters()) == 537_610
    fm.eval(), cf.eval()
    assert fm(torch.zeros(2, 1, 28, 28)).shape == (2, 10) and cf(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
