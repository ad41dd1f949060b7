"""FLDetector: L-BFGS Hessian-vector products, exact 1-D k-means, the gap statistic,
detection of persistent attackers on a synthetic quadratic, and its checkpointed history."""

import numpy as np
import pytest
import torch

from fedarena.defenses.base import RoundContext
from fedarena.defenses.fldetector import gap_statistic, kmeans_1d, lbfgs_hvp
from fedarena.registry import DEFENSES


def test_lbfgs_one_pair_hand_computed():
    # s = (1, 1), y = (2, 3): sigma = y.s / s.s = 5/2; B v = sigma v - sigma s s.v / s.s + y y.v / s.y
    # v = (1, 0): (2.5, 0) - (1.25, 1.25) + (2, 3) * 2/5 = (2.05, -0.05)
    S, Y = torch.tensor([[1.0], [1.0]]), torch.tensor([[2.0], [3.0]])
    assert lbfgs_hvp(S, Y, torch.tensor([1.0, 0.0])).tolist() == pytest.approx([2.05, -0.05])
    assert lbfgs_hvp(S, Y, torch.tensor([1.0, 1.0])).tolist() == pytest.approx([2.0, 3.0])  # secant: B s = y


def test_lbfgs_equals_the_recursive_bfgs_update():
    # independent value: B_0 = sigma I (sigma from the last pair), then for each pair in order
    # B <- B - B s s^T B / (s^T B s) + y y^T / (y^T s)
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 6, generator=g, dtype=torch.float64)
    H = A @ A.T + 6 * torch.eye(6, dtype=torch.float64)
    S = torch.randn(6, 4, generator=g, dtype=torch.float64)
    Y = H @ S
    sigma = float(Y[:, -1] @ S[:, -1] / (S[:, -1] @ S[:, -1]))
    B = sigma * torch.eye(6, dtype=torch.float64)
    for k in range(4):
        s, y = S[:, k], Y[:, k]
        Bs = B @ s
        B = B - torch.outer(Bs, Bs) / (s @ Bs) + torch.outer(y, y) / (y @ s)
    v = torch.randn(6, generator=g, dtype=torch.float64)
    assert lbfgs_hvp(S, Y, v).tolist() == pytest.approx((B @ v).tolist(), rel=1e-8)
    assert lbfgs_hvp(S, Y, S[:, -1]).tolist() == pytest.approx(Y[:, -1].tolist(), rel=1e-8)  # secant


def test_kmeans_1d_exact():
    # [0, .1, 5, 5.2] in 2 clusters: {0, .1} and {5, 5.2}, SSE .005 + .02 = .025
    sse, labels = kmeans_1d(np.array([5.0, 0.0, 5.2, 0.1]), 2)
    assert sse == pytest.approx(0.025)
    assert labels.tolist() == [1, 0, 1, 0]
    assert kmeans_1d(np.array([1.0, 2.0, 3.0]), 1)[0] == pytest.approx(2.0)  # (1 + 0 + 1)
    assert kmeans_1d(np.array([1.0, 2.0, 3.0]), 3)[0] == pytest.approx(0.0)


def test_gap_statistic_two_groups_vs_one():
    rng = np.random.default_rng(0)
    two = np.concatenate([rng.normal(0.1, 0.005, 16), rng.normal(0.3, 0.005, 4)])
    assert gap_statistic(two, 10, 20, np.random.default_rng(1)) >= 2
    one = rng.uniform(0.0, 1.0, 20)
    assert gap_statistic(one, 10, 20, np.random.default_rng(1)) == 1


def _quadratic_rounds(rule, rounds, n=10, m=2, d=20, seed=0):
    """Clients' updates are -lr * (H w + b_i + noise) on a fixed quadratic; the first m send
    Gaussian vectors of the benign norm every round. Returns the flag count per round."""
    g = torch.Generator().manual_seed(seed)
    H = torch.diag(torch.linspace(0.5, 2.0, d))
    b = 0.1 * torch.randn(n, d, generator=g)
    w = torch.randn(d, generator=g)
    flagged, lr = [], 0.1
    for t in range(rounds):
        U = -lr * ((H @ w).unsqueeze(0) + b + 0.01 * torch.randn(n, d, generator=g))
        U[:m] = torch.randn(m, d, generator=g) * U[m:].norm(dim=1).mean() / d**0.5
        ctx = RoundContext(
            t,
            None,
            torch.arange(n),
            torch.ones(n),
            f=m,
            global_params=w.clone(),
            generator=torch.Generator().manual_seed(100 + t),
        )
        a = rule(U, ctx)
        w = w + a.update
        flagged.append(list(rule.flagged))
    return flagged, a


def test_fldetector_flags_persistent_attackers_after_its_window():
    rule = DEFENSES.build("fldetector", {"window": 5})
    flagged, last = _quadratic_rounds(rule, 12)
    # errors are scored from round 2 (one L-BFGS pair and a previous update needed), so the window of
    # 5 fills at round 6: the paper's detection delay is the window size
    first = next(t for t, f in enumerate(flagged) if f)
    assert first == 6
    assert sorted(flagged[-1]) == [0, 1]
    assert last.weights.tolist() == [False, False] + [True] * 8
    assert torch.isfinite(last.info["client_scores"][:]).all()


def test_fldetector_every_round_mode_decides_each_round():
    rule = DEFENSES.build("fldetector", {"window": 5, "mode": "every-round"})
    flagged, last = _quadratic_rounds(rule, 12)
    assert sorted(flagged[-1]) == [0, 1]
    assert last.weights.tolist() == [False, False] + [True] * 8


def test_fldetector_flags_nobody_without_attackers():
    rule = DEFENSES.build("fldetector", {"window": 5})
    g = torch.Generator().manual_seed(1)
    n, d = 10, 20
    H = torch.diag(torch.linspace(0.5, 2.0, d))
    b = 0.1 * torch.randn(n, d, generator=g)
    w = torch.randn(d, generator=g)
    for t in range(12):
        U = -0.1 * ((H @ w).unsqueeze(0) + b + 0.01 * torch.randn(n, d, generator=g))
        a = rule(
            U,
            RoundContext(
                t,
                None,
                torch.arange(n),
                torch.ones(n),
                global_params=w.clone(),
                generator=torch.Generator().manual_seed(t),
            ),
        )
        w = w + a.update
    assert rule.flagged == []


def test_fldetector_history_resumes_from_a_checkpoint():
    a_rule = DEFENSES.build("fldetector", {"window": 3})
    _quadratic_rounds(a_rule, 4)
    state = a_rule.state_dict()
    b_rule = DEFENSES.build("fldetector", {"window": 3})
    b_rule.load_state_dict(state)
    assert b_rule.scores == a_rule.scores and len(b_rule.dW) == len(a_rule.dW)
    assert all(torch.equal(b_rule.last_rows[k], v) for k, v in a_rule.last_rows.items())
    g = torch.Generator().manual_seed(5)
    U = torch.randn(10, 20, generator=g)
    ctx = lambda: RoundContext(
        4,
        None,
        torch.arange(10),
        torch.ones(10),
        global_params=a_rule.w_prev.float() + 0.01,
        generator=torch.Generator().manual_seed(9),
    )
    ra, rb = a_rule(U, ctx()), b_rule(U, ctx())
    assert torch.equal(ra.update, rb.update) and torch.equal(ra.weights, rb.weights)


def test_fldetector_nan_row_is_rejected_and_not_remembered():
    rule = DEFENSES.build("fldetector", {})
    U = torch.ones(4, 3)
    U[2] = float("nan")
    a = rule(U, RoundContext(0, None, torch.arange(4), torch.ones(4), global_params=torch.zeros(3)))
    assert a.weights.tolist() == [True, True, False, True]
    assert a.update.tolist() == [1.0, 1.0, 1.0]
    assert 2 not in rule.last_rows


def _colluders_rounds(rule, rounds=3):
    """Hand-built: 7 clients, the global model never moves (so H (w_t - w_{t-1}) = 0 and the
    prediction of a row is the client's previous row). Clients 0, 1 collude and send (1, 1) every
    round; the benign 2..6 send (0, 0) in odd rounds and (2, 0) in even rounds."""
    out = []
    for t in range(rounds):
        U = torch.tensor([[1.0, 1.0]] * 2 + [[2.0 * (t % 2 == 0), 0.0]] * 5)
        out.append(
            rule(
                U,
                RoundContext(
                    t,
                    None,
                    torch.arange(7),
                    torch.ones(7),
                    f=2,
                    global_params=torch.zeros(2),
                    generator=torch.Generator().manual_seed(t),
                ),
            )
        )
    return out


def test_fldetector_flags_the_benign_majority_against_one_consistent_vector():
    # round 2 (window 1): errors ||g^t-1 - g^t|| = 0, 0, 2, 2, 2, 2, 2 -> normalised 0, 0, .2 x 5; two clusters,
    # the one of larger scores is the benign five: the paper's rule flags them and keeps only the colluders
    rule = DEFENSES.build("fldetector", {"window": 1})
    a = _colluders_rounds(rule)[-1]
    assert a.info["client_scores"].tolist() == pytest.approx([0, 0, 0.2, 0.2, 0.2, 0.2, 0.2])
    assert a.info["gap_clusters"] >= 2
    assert sorted(rule.flagged) == [2, 3, 4, 5, 6] and rule.detected_round == 2
    assert a.weights.tolist() == [True, True] + [False] * 5
    assert a.update.tolist() == [1.0, 1.0]  # the aggregate is the colluders' vector


@pytest.mark.parametrize("mode", ["once", "every-round"])
def test_fldetector_majority_guard_refuses_to_flag_the_majority(mode):
    # same rounds with the guard: 5 of 7 flagged > 7 / 2, refused; every row accepted and
    # the mean is (2 (1, 1) + 5 (2, 0)) / 7 = (12/7, 2/7)
    rule = DEFENSES.build("fldetector", {"window": 1, "majority_guard": True, "mode": mode})
    a = _colluders_rounds(rule)[-1]
    assert a.info["guard_refused"] == 1 and rule.flagged == [] and rule.detected_round is None
    assert a.weights.tolist() == [True] * 7
    assert a.update.tolist() == pytest.approx([12 / 7, 2 / 7])


def test_fldetector_majority_guard_keeps_a_minority_detection():
    # persistent Gaussian attackers 0, 1 of 10 (a minority): the guard changes nothing
    rule = DEFENSES.build("fldetector", {"window": 5, "majority_guard": True})
    flagged, last = _quadratic_rounds(rule, 12)
    assert next(t for t, f in enumerate(flagged) if f) == 6
    assert sorted(flagged[-1]) == [0, 1]
    assert last.weights.tolist() == [False, False] + [True] * 8
    assert "guard_refused" not in last.info


def test_fldetector_majority_guard_must_be_a_bool():
    from fedarena.errors import ConfigError

    with pytest.raises(ConfigError, match="defense.majority_guard"):
        DEFENSES.build("fldetector", {"majority_guard": "maybe"})
