"""Attacks that peers ship: SignFlip and Inf (ByzFL, Blades, FLPoison) and Blades'
adaptive attacks on ClippedClustering and SignGuard. ByzFL values: LPD-EPFL/byzfl,
PyPI ``byzfl`` 0.0.11 (snapshot 2025-06-06, commit 69bd1ac), ``byzfl/attacks/attacks.py``
docstrings, on ``[[1, 2, 3], [4, 5, 6], [7, 8, 9]]``."""

import math

import pytest
import torch

from fedarena.attacks.base import RoundView, ServerView
from fedarena.attacks.blades_adaptive import chain_directions
from fedarena.attacks.optimize import OptimizedAttack
from fedarena.core.layout import ParamLayout
from fedarena.defenses.base import DefensePipeline, RoundContext
from fedarena.registry import ATTACKS, DEFENSES

X3 = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]


def make_view(benign, own=None, m=2, seed=0, pipeline=None, f=1):
    benign = torch.as_tensor(benign, dtype=torch.float32)
    d, k = benign.shape[1], len(benign) + m
    own = torch.zeros(m, d) if own is None else torch.as_tensor(own, dtype=torch.float32)
    layout = ParamLayout.from_params({"w": torch.zeros(d)})
    server = None
    if pipeline is not None:
        ctx = RoundContext(
            round=0,
            layout=layout,
            client_ids=torch.arange(k),
            num_samples=torch.ones(k),
            f=f,
            generator=torch.Generator().manual_seed(7),
        )
        server = ServerView(pipeline, ctx, torch.arange(len(benign), k), step=lambda u: u)
    return RoundView(
        round=0,
        layout=layout,
        global_params=torch.zeros(d),
        prev_update=None,
        malicious_ids=torch.arange(100, 100 + m),
        num_clients=k,
        own_updates=own,
        benign_updates=benign,
        lr=1.0,
        algorithm="fedavg",
        generator=torch.Generator().manual_seed(seed),
        server=server,
    )


# ----------------------------------------------------------------------------- SignFlip, Inf
def test_signflip_matches_byzfl():
    # byzfl.SignFlipping()(X3) = [-4, -5, -6]: minus the honest mean
    out = ATTACKS.build("signflip", {}).craft(make_view(X3, m=2))
    assert out.tolist() == [[-4.0, -5.0, -6.0]] * 2


def test_signflip_own_base_negates_each_own_update():
    a = ATTACKS.build("signflip", {"base": "own", "scale": 2.0})
    assert a.threat.knowledge == "own" and a.trains
    out = a.craft(make_view(X3, own=[[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]]))
    assert out.tolist() == [[-2.0, 0.0, 2.0], [-1.0, -1.0, -1.0]]
    b = ATTACKS.build("signflip", {})
    assert b.threat.knowledge == "benign" and not b.trains


def test_inf_matches_byzfl_and_a_robust_rule_survives_it():
    # byzfl.Inf()(X3) = [inf, inf, inf]
    out = ATTACKS.build("inf", {}).craft(make_view(X3, m=1))
    assert out.tolist() == [[math.inf] * 3]
    assert ATTACKS.build("inf", {"magnitude": 5.0}).craft(make_view(X3, m=1)).tolist() == [[5.0] * 3]
    U = torch.cat([torch.tensor(X3), out])
    for name in ("median", "mda", "caf", "dnc", "signguard", "clipped-clustering", "lasa"):
        rule = DEFENSES.build(name, {})
        a = rule(U, RoundContext(0, None, torch.arange(4), torch.ones(4), f=1, global_params=torch.zeros(3)))
        assert torch.isfinite(a.update).all(), name


# ----------------------------------------------------------------------------- Blades' adaptive attacks
def test_chain_directions_hand_computed():
    # rows (1,0), (1,1), (1,2): mean (1,1) -> e at 45 deg; angles from e: 45, 0, 18.43 deg -> start at (1,0),
    # theta = pi/4; pairwise angles 45, 18.43, 63.43 deg -> min 0.32175 rad, step 0.22175 rad;
    # row j points at 45 deg - (45 deg + j step) = -j step: j = 1 -> (cos .22175, -sin .22175) = (.97551, -.22004)
    B = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
    dirs, info = chain_directions(B, 2)
    assert info["theta"] == pytest.approx(math.pi / 4)
    assert info["min_benign_angle"] == pytest.approx(math.atan(2) - math.pi / 4)
    step = math.atan(2) - math.pi / 4 - 0.1
    assert dirs[0].tolist() == pytest.approx([math.cos(step), -math.sin(step)])
    assert dirs[1].tolist() == pytest.approx([math.cos(2 * step), -math.sin(2 * step)])
    # past pi from e the row is -e: pi/4 + j * .22175 >= pi from j = 11
    far = chain_directions(B, 11)[0]
    assert far[10].tolist() == pytest.approx([-math.sqrt(0.5), -math.sqrt(0.5)])
    assert far[9].tolist() != pytest.approx(far[10].tolist())


def test_chain_row_equals_blades_decomposition():
    # Blades writes the next row as a e + b u with u the previous unit row at angle theta from e:
    # a = cos(theta + step) - sin(theta + step) / tan(theta), b = cos(step) + sin(step) / tan(theta).
    # Same case: theta = pi/4 (tan = 1), step = .22175, theta + step = 1.00715:
    # a = cos 1.00715 - sin 1.00715 = .53427 - .84531 = -.31104, b = cos .22175 + sin .22175 = .97551 + .21994
    # = 1.19545; u = (1, 0), e = (.70711, .70711): a e + b u = (-.21994 + 1.19545, -.21994) = (.97551, -.21994)
    # = (cos .22175, -sin .22175): the unit row at angle theta + step from e
    B = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
    step = math.atan(2) - math.pi / 4 - 0.1
    th = math.pi / 4
    a = math.cos(th + step) - math.sin(th + step) / math.tan(th)
    b = math.cos(step) + math.sin(step) / math.tan(th)
    assert a == pytest.approx(-0.31104, abs=1e-5) and b == pytest.approx(1.19545, abs=1e-5)
    e = torch.tensor([math.sqrt(0.5), math.sqrt(0.5)])
    dirs, _ = chain_directions(B, 2)
    assert dirs[0].tolist() == pytest.approx((a * e + b * torch.tensor([1.0, 0.0])).tolist(), abs=1e-6)
    # the second row: the same decomposition from the first row (unit, at theta + step), theta advanced by step
    th2 = th + step
    a2 = math.cos(th2 + step) - math.sin(th2 + step) / math.tan(th2)
    b2 = math.cos(step) + math.sin(step) / math.tan(th2)
    assert dirs[1].tolist() == pytest.approx((a2 * e + b2 * dirs[0].double()).tolist(), abs=1e-6)
    assert math.acos(float(dirs[1].double() @ e.double())) == pytest.approx(th + 2 * step)  # 1.45065 rad


def test_cc_chain_rows_have_the_benign_mean_norm():
    B = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
    out = ATTACKS.build("cc-chain", {}).craft(make_view(B, m=2))
    r = (1 + math.sqrt(2) + math.sqrt(5)) / 3  # mean benign norm 1.55009
    assert torch.linalg.vector_norm(out, dim=1).tolist() == pytest.approx([r, r], rel=1e-6)
    assert ATTACKS.build("cc-chain", {"norm": "absolute", "scale": 10.0}).craft(
        make_view(B, m=1)
    ).norm().item() == pytest.approx(10.0, rel=1e-6)


def test_signguard_mimic_copies_the_sign_counts():
    g = torch.Generator().manual_seed(0)
    B = torch.randn(6, 1000, generator=g) + 0.2
    B[:, :100] = 0.0  # 100 zero coordinates in the mean
    out = ATTACKS.build("signguard-mimic", {"counts": "mean"}).craft(make_view(B, m=3))  # Blades' counts
    mean = B.mean(0)
    for row in out:
        assert int((row > 0).sum()) == int((mean > 0).sum())
        assert int((row < 0).sum()) == int((mean < 0).sum())
        assert int((row == 0).sum()) == 100
    assert torch.equal(out[0], out[2])  # colluding: one vector
    assert out[0].norm().item() == pytest.approx(B.norm(dim=1).mean().item(), rel=1e-5)
    rows = ATTACKS.build("signguard-mimic", {}).craft(make_view(B, m=1))[0]  # the rows' average counts
    assert int((rows > 0).sum()) == round(float((B > 0).sum(1).float().mean()))
    assert int((rows < 0).sum()) == round(float((B < 0).sum(1).float().mean()))


def test_signguard_mimic_passes_signguard_where_signflip_is_caught():
    g = torch.Generator().manual_seed(1)
    B = 0.1 * torch.randn(8, 2000, generator=g) + 0.05
    for name, caught in (("signflip", True), ("signguard-mimic", False)):
        rows = ATTACKS.build(name, {}).craft(make_view(B, m=2))
        U = torch.cat([B, rows])
        a = DEFENSES.build("signguard", {})(
            U, RoundContext(0, None, torch.arange(10), torch.ones(10), f=2, generator=torch.Generator().manual_seed(3))
        )
        assert (not bool(a.weights[8:].any())) is caught, name


# ----------------------------------------------------------------------------- attack.optimize can search them
@pytest.mark.parametrize("name", ["signflip", "inf", "cc-chain", "signguard-mimic"])
def test_new_attacks_declare_a_searchable_strength(name):
    inner = ATTACKS.build(name, {})
    assert inner.strength is not None
    pipe = DefensePipeline([], DEFENSES.build("median", {}), [])
    g = torch.Generator().manual_seed(2)
    B = torch.randn(6, 8, generator=g) + 1.0
    a = OptimizedAttack(inner, search="grid", evals=6)
    out = a.craft(make_view(B, m=2, pipeline=pipe, f=2))
    d = a.diagnostics()
    assert out.shape == (2, 8) and d["strength_param"] == inner.strength.name
    assert d["objective"] >= d["objective_default"] or d["objective_default"] == -math.inf
