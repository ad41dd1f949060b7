"""FoolsGold (Fung et al., RAID 2020, Algorithm 1; official deep-learning variant)."""

import math

import numpy as np
import pytest
import torch

from fedarena.defenses.base import RoundContext
from fedarena.defenses.foolsgold import FoolsGold, foolsgold_weights
from fedarena.defenses.pipeline import build_pipeline
from fedarena.core.layout import ParamLayout


def reference_weights(H: np.ndarray) -> np.ndarray:
    """Direct transcription of the algorithm with loops (the test's oracle)."""
    n = len(H)
    Hn = H / np.linalg.norm(H, axis=1, keepdims=True)
    cs = Hn @ Hn.T - np.eye(n)
    maxcs = np.max(cs, axis=1)
    for i in range(n):
        for j in range(n):
            if i != j and maxcs[i] < maxcs[j]:
                cs[i][j] = cs[i][j] * maxcs[i] / maxcs[j]
    wv = np.clip(1 - np.max(cs, axis=1), 0, 1)
    wv = wv / np.max(wv)
    wv[wv == 1] = 0.99
    with np.errstate(divide="ignore"):
        wv = np.log(wv / (1 - wv)) + 0.5
    wv[np.isinf(wv) & (wv > 0)] = 1
    return np.clip(wv, 0, 1)


def ctx(ids, d, names=None, ns=None):
    params = names or {"w": torch.zeros(d)}
    k = len(ids)
    return RoundContext(
        0,
        ParamLayout.from_params(params),
        torch.as_tensor(ids),
        torch.ones(k) if ns is None else torch.as_tensor(ns, dtype=torch.float32),
    )


def test_hand_computed_weights_with_pardoning():
    # cos(a,b) = 0.8, cos(a,c) = 0, cos(b,c) = 0.6; v = [0.8, 0.8, 0.6]
    # pardoning: cs_cb = 0.6 * 0.6/0.8 = 0.45 -> alpha = [0.2, 0.2, 0.55] / 0.55 = [4/11, 4/11, 1 -> 0.99]
    # logit: ln((4/11)/(7/11)) + 0.5 = -0.0596 -> 0 ; ln(99) + 0.5 -> 1
    H = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    assert foolsgold_weights(H).tolist() == [0.0, 0.0, 1.0]
    U = H.clone()
    out = FoolsGold(layers="all")(U, ctx([0, 1, 2], 2))
    assert torch.allclose(out.update, torch.tensor([0.0, 1 / 3]))  # sum alpha_i delta_i / n


def test_intermediate_weight():
    # alpha ratio r gives ln(r / (1 - r)) + 0.5 in (0, 1) for r in (0.378, 0.622)
    H = torch.tensor([[1.0, 0.0, 0.0], [math.cos(1.0), math.sin(1.0), 0.0], [0.0, 0.0, 1.0]])
    w = foolsgold_weights(H)
    # cs01 = cos(1) = 0.5403, others 0; v = [0.54, 0.54, 0]; alpha = [0.4597, 0.4597, 1] -> weight 0.338
    r = 1 - math.cos(1.0)
    expected = math.log(r / (1 - r)) + 0.5
    assert 0 < expected < 1
    assert w.tolist() == pytest.approx([expected, expected, 1.0], abs=1e-6) and 0.3 < expected < 0.4


def test_matches_loop_oracle_on_random_histories():
    rng = np.random.default_rng(0)
    for _ in range(20):
        base = rng.normal(size=(1, 6))
        H = base + rng.normal(size=(8, 6)) * rng.uniform(0.2, 2.0)
        assert np.allclose(foolsgold_weights(torch.from_numpy(H)).numpy(), reference_weights(H), atol=1e-9)


def test_sybils_get_zero_weight():
    rng = np.random.default_rng(1)
    honest = rng.normal(size=(6, 20))
    sybil = rng.normal(size=(1, 20))
    U = torch.from_numpy(np.concatenate([honest, sybil, sybil, sybil])).float()
    w = FoolsGold(layers="all")(U, ctx(list(range(9)), 20)).weights
    assert (w[6:] == 0).all() and (w[:6] > 0).all()


def test_history_accumulates_per_client_and_uses_last_layer():
    names = {"body.weight": torch.zeros(2), "head.weight": torch.zeros(2), "head.bias": torch.zeros(1)}
    fg = FoolsGold()
    # round 1: clients 0, 1 identical in the head; different in the body (ignored)
    U1 = torch.tensor([[9.0, 0.0, 1.0, 0.0, 5.0], [0.0, 9.0, 1.0, 0.0, -5.0], [0.0, 0.0, 0.0, 1.0, 0.0]])
    w1 = fg(U1, ctx([0, 1, 2], 5, names)).weights
    assert w1.tolist() == [0.0, 0.0, 1.0]
    # round 2: client 1 turns away; histories: c0 = (2, 0), c1 = (1, 1), c2 = (0, 1)
    U2 = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 0.0]])
    w2 = fg(U2, ctx([0, 1], 5, names)).weights
    assert w2.tolist() == foolsgold_weights(torch.tensor([[2.0, 0.0], [1.0, 1.0]])).float().tolist()
    assert torch.equal(fg.memory[1], torch.tensor([1.0, 1.0], dtype=torch.float64))
    assert torch.equal(fg.memory[2], torch.tensor([0.0, 1.0], dtype=torch.float64))
    fg.reset()
    assert fg.memory == {}


def test_faulty_rows_get_zero_weight_and_output_is_finite():
    rng = np.random.default_rng(2)
    U = torch.from_numpy(rng.normal(size=(6, 10))).float()
    U[0] = float("nan")
    U[1, 3] = float("inf")
    U[2] = 1e30
    fg = FoolsGold(layers="all")
    out = fg(U, ctx(list(range(6)), 10))
    assert out.weights[0] == 0 and out.weights[1] == 0
    assert torch.isfinite(out.update).all() and torch.isfinite(fg.memory[0]).all()


def test_weighted_uses_sample_counts():
    H = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # orthogonal: all weights 1
    out = FoolsGold(layers="all", weighted=True)(H, ctx([0, 1, 2], 3, ns=[1, 1, 2]))
    assert out.weights.tolist() == [1.0, 1.0, 1.0]
    assert torch.allclose(out.update, torch.tensor([0.25, 0.25, 0.5]))


def test_built_from_config():
    pipe = build_pipeline({"name": "foolsgold", "weighted": False, "history": False, "f": 1})
    assert isinstance(pipe.aggregator, FoolsGold) and pipe.aggregator.history is False
