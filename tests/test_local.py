"""Vectorized and sequential local training give the same updates."""

import numpy as np
import pytest
import torch

from fedarena.core.layout import ParamLayout
from fedarena.core.local import BatchSchedule, minibatch_gradients, train_sequential, train_vectorized
from fedarena.core.recipe import TrainRecipe
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


@pytest.mark.parametrize(
    "recipe",
    [
        TrainRecipe(lr=0.1, batch_size=8, epochs=2),
        TrainRecipe(lr=0.05, momentum=0.9, weight_decay=1e-3, batch_size=16, epochs=1, grad_clip=0.5),
        TrainRecipe(lr=0.1, batch_size=10, steps=5),
    ],
)
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


@pytest.mark.parametrize("strategy", ["vmap", "loop", "fold"])
@pytest.mark.parametrize(
    "recipe",
    [
        TrainRecipe(lr=0.05, momentum=0.9, weight_decay=1e-3, batch_size=16, epochs=1, grad_clip=0.5),
        TrainRecipe(lr=0.1, batch_size=8, epochs=2, momentum=0.5),
    ],
)
def test_both_strategies_equal_sequential(strategy, recipe):
    """Clients of unequal sizes (inactive clients in the last steps), chunks of 3."""
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10)
    x, y, index, params = _setup(model)
    sched = BatchSchedule.build([len(i) for i in index], recipe, [np.random.default_rng([2, i]) for i in range(4)])
    U_vec = train_vectorized(model, params, x, y, index, sched, recipe, chunk_size=3, strategy=strategy)
    U_seq, _ = train_sequential(model, params, x, y, index, sched, recipe)
    assert torch.allclose(U_vec, U_seq, atol=1e-5, rtol=1e-4)


def test_cnn_strategies_agree_and_auto_choice():
    from fedarena.core.local import auto_strategy

    torch.manual_seed(0)
    model = LeNet((1, 28, 28), 10)
    x, y, index, params = _setup(model, (9, 20, 5), shape=(1, 28, 28))
    assert auto_strategy(model, "cpu", x[0]) == "fold" and auto_strategy(model, "cpu") == "loop"
    assert auto_strategy(MLP((1, 8, 8), 10), "cpu", x[0]) == "vmap"
    recipe = TrainRecipe(lr=0.05, batch_size=8, epochs=1, momentum=0.5, weight_decay=1e-3)
    sched = BatchSchedule.build([len(i) for i in index], recipe, [np.random.default_rng(i) for i in range(3)])
    U_seq, _ = train_sequential(model, params, x, y, index, sched, recipe)
    for strategy, chunk in (("vmap", None), ("loop", 2), ("fold", 2), ("fold", None)):
        U = train_vectorized(model, params, x, y, index, sched, recipe, chunk_size=chunk, strategy=strategy)
        assert torch.allclose(U, U_seq, atol=1e-5, rtol=1e-4), strategy


def test_fold_resnet_with_groupnorm_equals_sequential():
    """Residual sums, GroupNorm, strided convolutions and global pooling fold over clients."""
    from fedarena.models.resnet import ResNet20

    torch.manual_seed(0)
    model = ResNet20((3, 8, 8), 10, norm="group").double()  # float64: GroupNorm over 8 values is ill-conditioned
    x, y, index, params = _setup(model, (6, 4), shape=(3, 8, 8))
    x = x.double()
    recipe = TrainRecipe(lr=0.05, batch_size=4, epochs=1)
    sched = BatchSchedule.build([len(i) for i in index], recipe, [np.random.default_rng(i) for i in range(2)])
    U_fold = train_vectorized(model, params, x, y, index, sched, recipe, strategy="fold")
    U_seq, _ = train_sequential(model, params, x, y, index, sched, recipe)
    assert torch.allclose(U_fold, U_seq, atol=1e-10, rtol=1e-8)


def test_fold_refuses_models_it_cannot_fold():
    """A forward that reshapes with a hard-coded feature size or reads shapes is not folded."""
    from fedarena.core.local import auto_strategy, fold_supported

    class Reshaper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)
            self.fc = torch.nn.Linear(2 * 6 * 6, 10)

        def forward(self, x):
            return self.fc(self.conv(x).view(-1, 2 * 6 * 6))

    model = Reshaper()
    assert not fold_supported(model, torch.rand(1, 8, 8))
    assert auto_strategy(model, "cpu", torch.rand(1, 8, 8)) == "loop"
    assert fold_supported(LeNet((1, 28, 28), 10), torch.rand(1, 28, 28))


def test_projection_hook_vectorized_equals_sequential():
    def project(p, g):  # L2 ball of radius 0.05 around the global model
        diff = {k: p[k] - g[k] for k in p}
        norm = torch.sqrt(sum((v**2).sum() for v in diff.values()))
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
    from fedarena.core.local import auto_chunk_size

    # 1M parameters: 16.8 MB per client of params/grads/momentum/update and activations -> 3 clients in 64 MB
    assert auto_chunk_size(10**6, 32, 784) == 64_000_000 // (4 * (4 * 10**6 + 8 * 32 * 784)) == 3
    # the 64-64-10 MLP on 8x8 digits: 141 KB per client -> a round of hundreds in one call
    assert auto_chunk_size(4810, 32, 64) == 449
    assert auto_chunk_size(10**9, 32, 784) == 1


@pytest.mark.parametrize("sizes", [[72] * 5, [72, 40, 72, 10], [64] * 3])
def test_precomputed_plan_equals_per_step_gather(sizes):
    """The chunk's schedule built once (_plan) is the per-step gather, step by step."""
    from fedarena.core.local import _gather, _plan

    sched = BatchSchedule.build(
        sizes, TrainRecipe(batch_size=32), [np.random.default_rng(i) for i in range(len(sizes))]
    )
    off = np.cumsum([0] + sizes)
    index = [np.arange(off[i], off[i + 1]) + 100 for i in range(len(sizes))]
    rows = list(range(len(sizes)))
    plan = _plan(sched, rows, index, 32)
    assert len(plan.full) == sched.max_steps
    for s in range(sched.max_steps):
        idx, mask, active = _gather(sched, s, rows, index, 32)
        assert (plan.idx[s] == idx).all() and (plan.mask[s] == mask).all() and (plan.active[s] == active).all()
        assert plan.full[s] == bool(mask.all())
