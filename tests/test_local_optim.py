"""Local SGD (momentum), Adam and AdamW: vectorized == sequential == torch.optim, with the
optimizer state reset every round or persisting across a client's participations."""

import numpy as np
import pytest
import torch

from fedarena.core.local import BatchSchedule, train_sequential, train_vectorized
from fedarena.core.optim import OptState
from fedarena.core.recipe import TrainRecipe
from fedarena.models.simple import MLP

SIZES = (13, 40, 7, 25)  # unequal: clients stop at different steps (inactive-client masking)

RECIPES = {
    "sgd-momentum": TrainRecipe(lr=0.05, momentum=0.9, weight_decay=1e-2, batch_size=8),
    "adam": TrainRecipe(optimizer="adam", lr=0.01, weight_decay=1e-2, batch_size=8, betas=(0.8, 0.99)),
    "adamw": TrainRecipe(optimizer="adamw", lr=0.01, weight_decay=0.1, batch_size=8, grad_clip=1.0),
}


def _torch_opt(recipe: TrainRecipe, params):
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    cls = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=recipe.lr, betas=recipe.betas, eps=recipe.eps, weight_decay=recipe.weight_decay)


def _data():
    g = torch.Generator().manual_seed(0)
    n = sum(SIZES)
    x, y = torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)
    off = np.cumsum((0,) + SIZES)
    return x, y, [np.arange(off[i], off[i + 1]) for i in range(len(SIZES))]


def _torch_reference(model, recipe, x, y, index, globals_, scheds, persistent):
    """Each client with its own torch.optim optimizer: created once (persistent) or every round."""
    out = []
    for i in range(len(index)):
        ref = MLP((1, 8, 8), 10)
        opt = None
        rows = []
        for g, sched in zip(globals_, scheds):
            with torch.no_grad():
                for n, p in ref.named_parameters():
                    p.copy_(g[n])
            if opt is None or not persistent:
                opt = _torch_opt(recipe, ref.parameters())
            for b in sched.batches[i]:
                opt.zero_grad()
                rows_b = torch.from_numpy(index[i][b])
                torch.nn.functional.cross_entropy(ref(x[rows_b]), y[rows_b]).backward()
                if recipe.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(ref.parameters(), recipe.grad_clip)
                opt.step()
            rows.append(torch.cat([(p.detach() - g[n]).reshape(-1) for n, p in ref.named_parameters()]))
        out.append(torch.stack(rows))
    return torch.stack(out, dim=1)  # (rounds, k, d)


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("name", list(RECIPES))
def test_vectorized_equals_sequential_equals_torch_optim(name, persistent):
    recipe = RECIPES[name]
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10)
    x, y, index = _data()
    g0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    g1 = {n: p + 0.05 * torch.randn_like(p) for n, p in g0.items()}  # the next round's global model
    scheds = [
        BatchSchedule.build(list(SIZES), recipe, [np.random.default_rng([r, i]) for i in range(4)]) for r in range(2)
    ]
    states_vec = [None] * 4 if persistent else None
    states_seq = [None] * 4 if persistent else None
    got_vec, got_seq = [], []
    for g, sched in zip((g0, g1), scheds):
        got_vec.append(
            train_vectorized(model, g, x, y, index, sched, recipe, chunk_size=3, strategy="vmap", opt_states=states_vec)
        )
        got_seq.append(train_sequential(model, g, x, y, index, sched, recipe, opt_states=states_seq)[0])
    want = _torch_reference(model, recipe, x, y, index, (g0, g1), scheds, persistent)
    for r in range(2):
        assert torch.allclose(got_vec[r], got_seq[r], atol=1e-5, rtol=1e-4), r
        assert torch.allclose(got_seq[r], want[r], atol=1e-5, rtol=1e-4), r
    if persistent:  # step counts: both rounds' steps of each client
        steps = [len(scheds[0].batches[i]) + len(scheds[1].batches[i]) for i in range(4)]
        assert [int(s["step"]) for s in states_vec] == steps == [int(s["step"]) for s in states_seq]
        assert (
            set(states_vec[0]) == {"step", "momentum_buffer"}
            if name.startswith("sgd")
            else {"step", "exp_avg", "exp_avg_sq"}
        )
    # persistence changes the second round (and only the second)
    fresh = train_vectorized(model, g1, x, y, index, scheds[1], recipe, chunk_size=3, strategy="vmap")
    assert torch.allclose(fresh, got_vec[1], atol=1e-6) != persistent


def test_adam_first_step_is_sign_times_lr():
    """Hand value: Adam's first step is ``lr * g / (|g| + eps')`` ~ ``lr * sign(g)``."""
    p = [torch.zeros(2, 3)]
    g = [torch.tensor([[1.0, -2.0, 0.5], [3.0, -0.1, -1.0]])]
    state = OptState.load(TrainRecipe(optimizer="adam"), p)
    from fedarena.core.optim import step_

    step_(p, g, state, TrainRecipe(optimizer="adam", lr=0.1, eps=0.0))
    want = -0.1 * torch.sign(g[0])
    assert torch.allclose(p[0], want)
    assert state.step.tolist() == [1.0, 1.0]
    # an inactive client keeps parameters, moments and step count
    step_(p, g, state, TrainRecipe(optimizer="adam", lr=0.1), active=torch.tensor([0.0, 1.0]))
    assert state.step.tolist() == [1.0, 2.0] and torch.allclose(p[0][0], want[0])
    assert torch.allclose(state.tensors["exp_avg"][0][0], 0.1 * g[0][0])


def test_run_keeps_each_clients_adam_state_between_participations():
    from fedarena.config import load_config
    from fedarena.run.simulation import Simulation

    over = [
        "fl.num_clients=6",
        "fl.clients_per_round=3",
        "fl.rounds=3",
        "fl.local_steps=2",
        "fl.optimizer=adam",
        "fl.lr=0.01",
        "fl.client_state=persistent",
        "eval.every=3",
    ]
    sim = Simulation(load_config(None, over))
    seen: dict[int, int] = {}
    for t in range(3):
        for c in sim.sample_clients(t):
            seen[int(c)] = seen.get(int(c), 0) + 1
        sim.run_round(t)
    assert {c: int(s["step"]) for c, s in sim.client_opt_state.items()} == {c: 2 * n for c, n in seen.items()}
    a = Simulation(load_config(None, over)).run().summary["final_main_acc"]
    b = Simulation(load_config(None, over[:-2] + ["eval.every=3"])).run().summary["final_main_acc"]
    assert a == Simulation(load_config(None, over)).run().summary["final_main_acc"]  # deterministic
    assert a > 0.3 and b > 0.3


@pytest.mark.parametrize(
    "over, key",
    [
        (["fl.optimizer=adam", "fl.momentum=0.9"], "fl.momentum"),
        (["fl.algorithm=fedsgd", "fl.optimizer=adamw"], "fl.optimizer"),
        (["fl.algorithm=fedsgd", "fl.client_state=persistent"], "fl.client_state"),
        (["fl.optimizer=adam", "fl.adam_betas=[0.9, 1.0]"], "fl.adam_betas"),
        (["fl.optimizer=rmsprop"], "fl.optimizer"),
    ],
)
def test_optimizer_config_errors_name_the_key(over, key):
    from fedarena.config import load_config
    from fedarena.errors import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, over)
