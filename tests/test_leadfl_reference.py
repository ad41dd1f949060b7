"""The LeadFL reference code's pieces: the MGDA attacker (backdoor-mgda), the code's
"Bulyan" (bulyan-ref), the paper's CNN with BatchNorm and its statistics aggregated over
the clients the server rule selected (fl.buffers=selected)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fedarena.attacks.mgda import MGDAStep, mgda_weights, min_norm_2
from fedarena.config import load_config
from fedarena.core.local import BatchSchedule, train_sequential, train_vectorized
from fedarena.core.recipe import TrainRecipe
from fedarena.data.poison import make_trigger
from fedarena.defenses.base import RoundContext
from fedarena.defenses.bulyan_ref import BulyanRef
from fedarena.errors import ConfigError
from fedarena.models.leadfl_cnn import LeadFLCNN
from fedarena.run.simulation import Simulation, selected_buffers


# ------------------------------------------------------------------ MGDA min-norm weights
@pytest.mark.parametrize(
    "v11, v12, v22, want",
    [
        (1.0, 0.0, 1.0, 0.5),  # orthogonal, equal norms: (1 - 0) / (1 + 1 - 0)
        (4.0, 0.0, 1.0, 0.2),  # (1 - 0) / (4 + 1 - 0)
        (4.0, 1.0, 2.0, 0.25),  # (2 - 1) / (4 + 2 - 2)
        (1.0, 2.0, 5.0, 0.999),  # v12 >= v11: the backdoor gradient alone is the min-norm point
        (5.0, 2.0, 1.0, 0.001),  # v12 >= v22: the normal gradient alone
    ],
)
def test_min_norm_weight_hand_computed(v11, v12, v22, want):
    got = min_norm_2(
        torch.tensor(v11, dtype=torch.float64),
        torch.tensor(v12, dtype=torch.float64),
        torch.tensor(v22, dtype=torch.float64),
    )
    assert float(got) == pytest.approx(want, abs=1e-12)


def test_min_norm_weight_minimises_the_norm_on_the_segment():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        a, b = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
        gamma = float(min_norm_2(a @ a, a @ b, b @ b))
        grid = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
        norms = ((grid[:, None] * a + (1 - grid[:, None]) * b) ** 2).sum(1)
        best = float(((gamma * a + (1 - gamma) * b) ** 2).sum())
        assert best <= float(norms.min()) + 1e-9


def test_loss_normalisation_of_the_weights():
    # g_b = (2, 0), g_n = (0, 1) as two parameter tensors of one client (k = 1)
    gb = [torch.tensor([[2.0]]), torch.tensor([[0.0]])]
    gn = [torch.tensor([[0.0]]), torch.tensor([[1.0]])]
    one = torch.tensor([1.0])
    # equal losses 1: the normaliser (1 + 1e-5) cancels; v11 = 4, v22 = 1, v12 = 0 -> 1 / 5
    assert float(mgda_weights(gb, gn, one, one)) == pytest.approx(0.2, rel=1e-6)
    # L_b = 2: g^_b = (2, 0) / 2 = (1, 0) (up to 1e-5) -> v11 = v22 = 1 -> 0.5
    assert float(mgda_weights(gb, gn, 2 * one, one)) == pytest.approx(0.5, rel=1e-4)
    # L_b = 20 is capped at 10: g^_b = (0.2, 0), v11 = 0.04 -> 1 / 1.04
    assert float(mgda_weights(gb, gn, 20 * one, one)) == pytest.approx(1 / 1.04, rel=1e-4)


# ------------------------------------------------------------------ the MGDA step
def _toy(k: int = 2, n: int = 16, d: int = 16):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, 3))
    x = torch.rand(k * n, 1, 4, 4)
    y = torch.randint(0, 3, (k * n,))
    index = [np.arange(i * n, (i + 1) * n) for i in range(k)]
    return model, x, y, index


def _manual_mgda(model, params, xb, yb, trig, target, lr, mu, steps_batches):
    """The reference loop for one client: per batch the two losses, MGDA's weight, one SGD step."""
    p = {n: v.clone() for n, v in params.items()}
    buf = {n: torch.zeros_like(v) for n, v in p.items()}
    for b in steps_batches:
        xc, yc = xb[b], yb[b]
        xt, yt = trig.apply(xc), torch.full_like(yc, target)
        q = {n: v.clone().requires_grad_(True) for n, v in p.items()}
        ln = torch.nn.functional.cross_entropy(torch.func.functional_call(model, q, (xc,)), yc)
        lb = torch.nn.functional.cross_entropy(torch.func.functional_call(model, q, (xt,)), yt)
        gn = torch.autograd.grad(ln, list(q.values()))
        gb = torch.autograd.grad(lb, list(q.values()))
        gamma = float(
            mgda_weights(
                [g.unsqueeze(0) for g in gb],
                [g.unsqueeze(0) for g in gn],
                lb.detach().reshape(1),
                ln.detach().reshape(1),
            )
        )
        for (name, v), a, c in zip(p.items(), gb, gn):
            g = gamma * a + (1 - gamma) * c
            buf[name] = mu * buf[name] + g
            p[name] = v - lr * buf[name]
    return torch.cat([(p[n] - params[n]).reshape(-1) for n in p])


@pytest.mark.parametrize("mu", [0.0, 0.1])
def test_mgda_step_equals_the_reference_loop_on_both_paths(mu):
    model, x, y, index = _toy()
    trig = make_trigger("square", (1, 4, 4), 1.0, 2, "top-left", None)
    recipe = TrainRecipe(lr=0.1, momentum=mu, batch_size=4, epochs=1, step_hook=MGDAStep(trig, 2))
    sched = BatchSchedule.build([16, 16], recipe, [np.random.default_rng(i) for i in range(2)])
    gp = {n: p.detach().clone() for n, p in model.named_parameters()}
    want = torch.stack(
        [_manual_mgda(model, gp, x[index[i]], y[index[i]], trig, 2, 0.1, mu, sched.batches[i]) for i in range(2)]
    )
    vec = train_vectorized(model, gp, x, y, index, sched, recipe, strategy="vmap")
    seq, _ = train_sequential(model, gp, x, y, index, sched, recipe)
    assert torch.allclose(vec, want, atol=1e-5) and torch.allclose(seq, want, atol=1e-5)
    plain = train_vectorized(model, gp, x, y, index, sched, recipe.with_(step_hook=None), strategy="vmap")
    assert not torch.allclose(plain, want, atol=1e-4)  # the hook changed the steps


def test_mgda_refuses_other_optimizers():
    from fedarena.attacks.mgda import MGDABackdoor

    a = MGDABackdoor(target=1, trigger="square")
    with pytest.raises(ConfigError, match="fl.optimizer"):
        a.recipe(TrainRecipe(optimizer="adam"), 0)
    with pytest.raises(ConfigError, match="fl.grad_clip"):
        a.recipe(TrainRecipe(grad_clip=1.0), 0)


def _digits(attack: dict, rounds: int = 15, model: str = "mlp") -> dict:
    tree = {
        "seed": 0,
        "data": {"dataset": "digits"},
        "model": {"name": model, **({"hidden": [32]} if model == "mlp" else {})},
        "fl": {
            "num_clients": 20,
            "clients_per_round": 10,
            "rounds": rounds,
            "local_epochs": 2,
            "batch_size": 8,
            "lr": 0.05,
            "momentum": 0.1,
            "sampling": "fixed-malicious",
        },
        "attack": {"num_malicious": 6, "target": 8, "trigger": "badnets", **attack},
        "defense": {"name": "fedavg"},
    }
    return Simulation(load_config(None, [], base=tree)).run().summary


@pytest.mark.usefixtures("one_thread")
def test_mgda_attacker_implants_where_plain_poisoning_does():
    """Digits, 3 of 10 attackers every round, FedAvg, 15 rounds; backdoor accuracy on the
    held-out triggered test images (never trained on). Measured: MGDA 0.85, data poisoning
    0.98, attackers poisoning nothing 0.015."""
    mgda = _digits({"name": "backdoor-mgda"})["ba_final"]
    plain = _digits({"name": "backdoor", "poison_frac": 0.5})["ba_final"]
    clean = _digits({"name": "backdoor", "poison_frac": 0.0})["ba_final"]
    assert clean < 0.1 and plain > 0.8
    assert mgda > 0.6 and mgda > clean + 0.5


# ------------------------------------------------------------------ bulyan-ref
def _ctx(n: int) -> RoundContext:
    return RoundContext(
        round=0,
        layout=None,
        client_ids=torch.arange(n),
        num_samples=torch.ones(n),
        f=1,
        global_params=torch.zeros(1),
        prev_update=None,
        generator=torch.Generator(),
    )


def test_bulyan_ref_hand_computed():
    # rows 0, 1, 2, 3, 4, 5, 6, 20 (1-D). Score = sum of the 6 smallest squared distances to others:
    # 0: 1+4+9+16+25+36 = 91; 1: 1+1+4+9+16+25 = 56; 2: 4+1+1+4+9+16 = 35; 3: 9+4+1+1+4+9 = 28;
    # 4: 35; 5: 56; 6: 91; 20: 196+225+256+289+324+361 = 1651.
    # Sorted (stable): 3, 2, 4, 1, 5, 0, 6, 7 -> drop the best (row 3), mean of rows 2, 4, 1 = 7/3.
    U = torch.tensor([0.0, 1, 2, 3, 4, 5, 6, 20]).reshape(-1, 1)
    agg = BulyanRef().aggregate(U, _ctx(8))
    assert float(agg.update) == pytest.approx(7 / 3)
    assert agg.weights.tolist() == [False, True, True, False, True, False, False, False]
    # Multi-Krum on the same rows would keep row 3; the reference's variant drops it
    assert agg.info["dropped_best"] == 3


def test_bulyan_ref_faulty_row_and_bad_config():
    U = torch.tensor([0.0, 1, 2, 3, 4, 5, 6, float("nan")]).reshape(-1, 1)
    agg = BulyanRef().aggregate(U, _ctx(8))
    assert torch.isfinite(agg.update).all() and not bool(agg.weights[7])
    with pytest.raises(ConfigError, match="fl.clients_per_round"):
        BulyanRef().validate(6, 1)
    with pytest.raises(ConfigError, match="defense.keep"):
        BulyanRef(keep=0)


# ------------------------------------------------------------------ the CNN and its BatchNorm statistics
def test_leadfl_cnn_parameters():
    m = LeadFLCNN((1, 28, 28), 10)
    assert sum(p.numel() for p in m.parameters()) == 29034  # 416 + 32 + 12832 + 64 + 15690
    assert sum(b.numel() for n, b in m.named_buffers() if "running" in n) == 96
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_selected_buffers_hand_computed():
    nb = [
        {"m": torch.tensor([1.0]), "n": torch.tensor(5)},
        {"m": torch.tensor([2.0]), "n": torch.tensor(7)},
        {"m": torch.tensor([6.0]), "n": torch.tensor(9)},
    ]
    # the engine appended the buffers job by job: job A trained rows 2, 0; job B row 1
    plan = SimpleNamespace(
        jobs=[SimpleNamespace(rows=[2, 0]), SimpleNamespace(rows=[1])], new_buffers=nb, cohort=np.arange(3)
    )
    g = {"m": torch.tensor([0.0]), "n": torch.tensor(0)}
    # accept rows 0 and 1: buffers of rows 0 (nb[1] = 2) and 1 (nb[2] = 6) -> 4; counter max(7, 9)
    out = selected_buffers(g, plan, torch.tensor([True, True, False]))
    assert float(out["m"]) == pytest.approx(4.0) and int(out["n"]) == 9
    # weights 0.5 / 0.25 / 0.25 on rows 0 / 1 / 2: 0.5 * 2 + 0.25 * 6 + 0.25 * 1 = 2.75
    out = selected_buffers(g, plan, torch.tensor([0.5, 0.25, 0.25]))
    assert float(out["m"]) == pytest.approx(2.75)
    assert float(selected_buffers(g, plan, None)["m"]) == pytest.approx(3.0)  # no decision: all rows


@pytest.mark.usefixtures("one_thread")
def test_buffers_follow_the_server_selection_end_to_end():
    """Digits, the CNN, Multi-Krum: with fl.buffers=selected the global statistics are the
    mean of the 5 selected clients' (recomputed from the round's plan), not of all 10."""
    base = {
        "seed": 0,
        "data": {"dataset": "digits"},
        "model": {"name": "leadfl-cnn"},
        "fl": {
            "num_clients": 20,
            "clients_per_round": 10,
            "rounds": 1,
            "local_steps": 2,
            "batch_size": 8,
            "lr": 0.05,
            "buffers": "selected",
        },
        "attack": {"name": "backdoor-mgda", "num_malicious": 6, "target": 8, "trigger": "badnets"},
        "defense": {"name": "multi-krum", "f": 1, "m": 5},
    }
    sim = Simulation(load_config(None, [], base=base))
    plan = sim.plan_round(0)
    from fedarena.run.training import train_round

    train_round([(sim, plan)], sim._solo())
    rec = sim.conclude_round(plan)
    rows = [r for job in plan.jobs for r in job.rows]
    chosen = [nb for r, nb in zip(rows, plan.new_buffers) if bool(rec["agg"].weights[r])]
    everyone = torch.stack([nb["features.1.running_mean"] for nb in plan.new_buffers]).mean(0)
    want = torch.stack([nb["features.1.running_mean"] for nb in chosen]).mean(0)
    assert len(chosen) == 5
    assert torch.allclose(sim.buffers["features.1.running_mean"], want, atol=1e-6)
    assert not torch.allclose(want, everyone, atol=1e-6)
