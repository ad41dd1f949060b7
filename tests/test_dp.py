"""DP-FL (defense.dp): clipping, Gaussian noise (local / central) and the accountant."""

from __future__ import annotations

import math

import pytest
import torch

from fedarena.config import load_config
from fedarena.core.layout import ParamLayout
from fedarena.defenses.base import RoundContext
from fedarena.defenses.dp import DifferentialPrivacy, dp_epsilon
from fedarena.defenses.pipeline import build_pipeline
from fedarena.errors import ConfigError
from fedarena.run.simulation import Simulation

pytest.importorskip("dp_accounting")


def ctx(n, d, q=0.1, seed=0):
    return RoundContext(
        round=0,
        layout=ParamLayout.from_params({"w": torch.zeros(d)}),
        client_ids=torch.arange(n),
        num_samples=torch.ones(n),
        generator=torch.Generator().manual_seed(seed),
        extras={"sampling_rate": q},
    )


def test_accountant_matches_dp_accountings_own_test_value():
    # dp-accounting's pld_privacy_accountant_test.test_poisson_subsampled_gaussian:
    # q = 0.2, sigma = 0.5, 3 steps -> (epsilon = 1, delta = 0.15594)
    assert dp_epsilon(0.5, 0.2, 3, 0.15594, "pld") == pytest.approx(1.0, abs=1e-3)
    rdp = dp_epsilon(0.5, 0.2, 3, 0.15594, "rdp")
    assert 1.0 <= rdp < 5.0  # RDP is an upper bound on the exact PLD epsilon
    # more noise or fewer rounds spend less
    assert dp_epsilon(2.0, 0.2, 10, 1e-5) < dp_epsilon(1.0, 0.2, 10, 1e-5) < dp_epsilon(1.0, 0.2, 50, 1e-5)
    assert dp_epsilon(0.0, 0.2, 3, 1e-5) == math.inf and dp_epsilon(1.0, 0.2, 0, 1e-5) == 0.0


def test_local_dp_clips_then_noises_each_row():
    stage = DifferentialPrivacy(dp="local", dp_clip=1.0, dp_sigma=0.0)
    U = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    assert torch.allclose(stage.client_upload(U, None), torch.tensor([[0.6, 0.8], [0.3, 0.4]]))
    stage = DifferentialPrivacy(dp="local", dp_clip=2.0, dp_sigma=0.5)
    out = stage.client_upload(torch.zeros(4, 20000), torch.Generator().manual_seed(0))
    assert float(out.std()) == pytest.approx(1.0, rel=0.02)  # sigma * C
    assert torch.equal(stage(out, ctx(4, 20000)), out)  # the server leaves local-DP rows alone


def test_central_dp_clips_rows_and_noises_the_sum():
    pipe = build_pipeline({"name": "fedavg", "dp": "central", "dp_clip": 1.0, "dp_sigma": 0.0})
    U = torch.tensor([[3.0, 4.0], [0.0, 0.5]])
    out = pipe(U, ctx(2, 2))
    assert torch.allclose(out.update, torch.tensor([0.3, 0.65]))  # mean of (0.6, 0.8) and (0, 0.5)
    assert "dp_epsilon" not in out.info  # sigma = 0: no privacy
    pipe = build_pipeline({"name": "fedavg", "dp": "central", "dp_clip": 2.0, "dp_sigma": 1.0})
    n, d = 4, 40000
    out = pipe(torch.zeros(n, d), ctx(n, d, q=0.2))
    assert float(out.update.std()) == pytest.approx(2.0 * 1.0 / n, rel=0.02)  # N(0, sigma^2 C^2) / n
    assert out.info["dp_epsilon"] == pytest.approx(dp_epsilon(1.0, 0.2, 1, 1e-5))
    assert out.info["dp_delta"] == 1e-5
    out2 = pipe(torch.zeros(n, d), ctx(n, d, q=0.2, seed=1))
    assert out2.info["dp_epsilon"] == pytest.approx(dp_epsilon(1.0, 0.2, 2, 1e-5))
    assert out2.info["dp_epsilon"] > out.info["dp_epsilon"]


def test_bad_dp_options():
    with pytest.raises(ConfigError, match="defense.dp"):
        DifferentialPrivacy(dp="global")
    with pytest.raises(ConfigError, match="defense.dp_clip"):
        DifferentialPrivacy(dp="local", dp_clip=0)
    with pytest.raises(ConfigError, match="defense.dp_sigma"):
        build_pipeline({"name": "fedavg", "dp_sigma": 1.0})  # dp off: its options are an error


@pytest.mark.usefixtures("one_thread")
def test_run_reports_epsilon_per_round_in_metrics():
    cfg = load_config(
        None,
        [
            "data.dataset=digits",
            "fl.num_clients=20",
            "fl.clients_per_round=5",
            "fl.rounds=3",
            "fl.local_steps=2",
            "defense.name=fedavg",
            "defense.dp=local",
            "defense.dp_clip=1.0",
            "defense.dp_sigma=1.0",
        ],
    )
    res = Simulation(cfg).run()
    eps = [m["defense_dp_epsilon"] for m in res.metrics]
    assert eps == pytest.approx([dp_epsilon(1.0, 0.25, t, 1e-5) for t in (1, 2, 3)])
    assert all(m["defense_dp_delta"] == 1e-5 for m in res.metrics)
    # every honest upload was clipped to C and noised: norm ~ sigma C sqrt(d)
    norms = [c["norm"] for c in res.clients]
    assert min(norms) > 10  # sqrt(4810) ~ 69 for the digits MLP; far above C = 1
