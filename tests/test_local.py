"""Vectorized and sequential local training give the same updates."""

import numpy as np
import pytest
import torch

from fedarena.engine.layout import ParamLayout
from fedarena.engine.local import BatchSchedule, minibatch_gradients, train_sequential, train_vectorized
from fedarena.engine.recipe import TrainRecipe
from fedarena.models.simple import MLP, LeNet


def _setup(model, n_per_client=(13, 40, 7, 25), shape=(1, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    n = sum(n_per_client)
    x = torch.rand(n, *shape, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    bounds = np.cumsum((0,) + tuple(n_per_client))
    index = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(n_per_client))]
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    return x, y, index, params


@pytest.mark.parametrize("recipe", [
    TrainRecipe(lr=0.1, batch_size=8, epochs=2),
    TrainRecipe(lr=0.05, momentum=0.9, weight_decay=1e-3, batch_size=16, epochs=1, grad_clip=0.5),
    TrainRecipe(lr=0.1, batch_size=10, steps=5),
])
def test_vectorized_equals_sequential_mlp(recipe):
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10)
    x, y, index, params = _setup(model)
    rngs = lambda: [np.random.default_rng([1, i]) for i in range(len(index))]
    sched = BatchSchedule.build([len(i) for i in index], recipe, rngs())
    U_vec = train_vectorized(model, params, x, y, index, sched, recipe, chunk_size=3)
    U_seq, _ = train_sequential(model, params, x, y, index, sched, recipe)
    assert U_vec.shape == (4, ParamLayout.from_params(params).dim)
    assert torch.allclose(U_vec, U_seq, atol=1e-5, rtol=1e-4)
    assert (U_vec.norm(dim=1) > 0).all()


def test_vectorized_equals_sequential_cnn():
    torch.manual_seed(0)
    model = LeNet((1, 28, 28), 10)
    x, y, index, params = _setup(model, (9, 20, 5), shape=(1, 28, 28))
    recipe = TrainRecipe(lr=0.05, batch_size=8, epochs=1, momentum=0.5)
    sched = BatchSchedule.build([len(i) for i in index], recipe, [np.random.default_rng(i) for i in range(3)])
    U_vec = train_vectorized(model, params, x, y, index, sched, recipe)
    U_seq, _ = train_sequential(model, params, x, y, index, sched, recipe)
    assert torch.allclose(U_vec, U_seq, atol=1e-5, rtol=1e-4)


def test_sequential_matches_torch_optimizer():
    """The functional SGD step is PyTorch's SGD (momentum, weight decay)."""
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10)
    x, y, index, params = _setup(model, (30,))
    recipe = TrainRecipe(lr=0.1, momentum=0.9, weight_decay=1e-2, batch_size=8, epochs=1)
    sched = BatchSchedule.build([30], recipe, [np.random.default_rng(0)])
    U_seq, _ = train_sequential(model, params, x, y, index, sched, recipe)
    ref = MLP((1, 8, 8), 10)
    ref.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    for b in sched.batches[0]:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(x[b]), y[b]).backward()
        opt.step()
    delta = torch.cat([(p.detach() - params[n]).reshape(-1) for n, p in ref.named_parameters()])
    assert torch.allclose(U_seq[0], delta, atol=1e-6)


def test_schedule_epochs_cover_every_sample_once_per_epoch():
    recipe = TrainRecipe(batch_size=4, epochs=2)
    sched = BatchSchedule.build([10], recipe, [np.random.default_rng(0)])
    assert [len(b) for b in sched.batches[0]] == [4, 4, 2, 4, 4, 2]
    first = np.concatenate(sched.batches[0][:3])
    assert sorted(first.tolist()) == list(range(10))


def test_fedsgd_gradients_vectorized_equals_loop():
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10)
    x, y, index, params = _setup(model)
    recipe = TrainRecipe(batch_size=8, steps=1, weight_decay=0.01)
    sched = BatchSchedule.build([len(i) for i in index], recipe, [np.random.default_rng(i) for i in range(4)])
    G1 = minibatch_gradients(model, params, x, y, index, sched, recipe, vectorized=True)
    G2 = minibatch_gradients(model, params, x, y, index, sched, recipe, vectorized=False)
    assert torch.allclose(G1, G2, atol=1e-6)


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
@pytest.mark.parametrize("recipe", [
    TrainRecipe(lr=0.05, momentum=0.9, weight_decay=1e-3, batch_size=16, epochs=1, grad_clip=0.5),
    TrainRecipe(lr=0.1, batch_size=8, epochs=2, momentum=0.5),
])
def test_both_strategies_equal_sequential(strategy, recipe):
    """Clients of unequal sizes (inactive clients in the last steps), chunks of 3."""
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10)
    x, y, index, params = _setup(model)
    sched = BatchSchedule.build([len(i) for i in index], recipe, [np.random.default_rng([2, i]) for i in range(4)])
    U_vec = train_vectorized(model, params, x, y, index, sched, recipe, chunk_size=3, strategy=strategy)
    U_seq, _ = train_sequential(model, params, x, y, index, sched, recipe)
    assert torch.allclose(U_vec, U_seq, atol=1e-5, rtol=1e-4)


def test_loop_strategy_cnn_and_auto_choice():
    from fedarena.engine.local import auto_strategy

    torch.manual_seed(0)
    model = LeNet((1, 28, 28), 10)
    assert auto_strategy(model, "cpu") == "loop" and auto_strategy(MLP((1, 8, 8), 10), "cpu") == "vmap"
    x, y, index, params = _setup(model, (9, 20, 5), shape=(1, 28, 28))
    recipe = TrainRecipe(lr=0.05, batch_size=8, epochs=1, momentum=0.5)
    sched = BatchSchedule.build([len(i) for i in index], recipe, [np.random.default_rng(i) for i in range(3)])
    U_vmap = train_vectorized(model, params, x, y, index, sched, recipe, strategy="vmap")
    U_loop = train_vectorized(model, params, x, y, index, sched, recipe, chunk_size=2, strategy="loop")
    assert torch.allclose(U_vmap, U_loop, atol=1e-5, rtol=1e-4)


def test_projection_hook_vectorized_equals_sequential():
    def project(p, g):  # L2 ball of radius 0.05 around the global model
        diff = {k: p[k] - g[k] for k in p}
        norm = torch.sqrt(sum((v ** 2).sum() for v in diff.values()))
        s = torch.clamp(0.05 / (norm + 1e-12), max=1.0)
        return {k: g[k] + s * diff[k] for k in p}

    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10)
    x, y, index, params = _setup(model)
    recipe = TrainRecipe(lr=0.1, batch_size=8, epochs=1, project=project)
    sched = BatchSchedule.build([len(i) for i in index], recipe, [np.random.default_rng(i) for i in range(4)])
    U_vec = train_vectorized(model, params, x, y, index, sched, recipe)
    U_seq, _ = train_sequential(model, params, x, y, index, sched, recipe)
    assert torch.allclose(U_vec, U_seq, atol=1e-5, rtol=1e-4)
    assert torch.allclose(U_vec.norm(dim=1), torch.full((4,), 0.05), atol=1e-4)


def test_auto_chunk_size_bounds_working_set():
    from fedarena.engine.local import auto_chunk_size

    # 1M parameters: 16 MB per client of params/grads/momentum/update -> 15 clients in 256 MB
    assert auto_chunk_size(10**6, 32, 784) == 256_000_000 // (4 * (4 * 10**6 + 8 * 32 * 784))
    assert auto_chunk_size(10**9, 32, 784) == 1
