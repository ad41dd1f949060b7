"""Core trainer extensions for attacks that own their objective: a recipe's ``batch_loss``
(the loss of a whole batch, with the batch's positions and a layer's input features) and
``trainable`` (the other parameters frozen). Sequential path only; the vectorized paths
refuse such a recipe and the dispatch sends it to the sequential one."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedarena.core.local import (
    BatchSchedule,
    minibatch_gradients,
    train_clients,
    train_sequential,
    train_vectorized,
)
from fedarena.core.recipe import HookStep, LossBatch, StepHook, TrainRecipe, cross_entropy


class Scalars(nn.Module):
    """Two scalar parameters; the output does not matter to the hand-computed losses below."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(2.0))
        self.c = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return x.reshape(len(x), -1)[:, :2] * self.a + self.c


def _half_square(b: LossBatch) -> torch.Tensor:
    return 0.5 * (b.params["a"] ** 2 + b.params["c"] ** 2)


def _mlp_case(sizes=(10, 7)):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randn(sum(sizes), 6)
    y = torch.randint(0, 3, (sum(sizes),))
    bounds = np.cumsum((0,) + tuple(sizes))
    index = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(sizes))]
    return model, params, x, y, index


def _schedule(index, recipe, seed=0):
    return BatchSchedule.build(
        [len(i) for i in index], recipe, [np.random.default_rng(seed + j) for j in range(len(index))]
    )


def test_frozen_parameter_does_not_move_under_weight_decay_and_momentum():
    # loss 0.5 (a^2 + c^2), only a trains; lr 0.1, wd 0.5, momentum 0.9, two steps (4 samples, batches of 2):
    #   step 1: g = a + wd a = 1.5 * 2 = 3; b = 3; a = 2 - 0.1 * 3 = 1.7
    #   step 2: g = 1.5 * 1.7 = 2.55; b = 0.9 * 3 + 2.55 = 5.25; a = 1.7 - 0.525 = 1.175
    # c keeps 1 and its momentum buffer 0 (trained, c would be 1 - 0.1 * 1.5 * 1 = 0.85 after step 1)
    model = Scalars()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.ones(4, 2), torch.zeros(4, dtype=torch.long)
    recipe = TrainRecipe(
        lr=0.1, momentum=0.9, weight_decay=0.5, batch_size=2, epochs=1, batch_loss=_half_square, trainable={"a"}
    )
    states = [None]
    rows, _ = train_sequential(
        model, params, x, y, [np.arange(4)], _schedule([np.arange(4)], recipe), recipe, opt_states=states
    )
    assert rows[0, 1].item() == 0.0  # c: exactly unchanged
    assert rows[0, 0].item() == pytest.approx(1.175 - 2.0, abs=1e-6)
    assert states[0]["momentum_buffer"].tolist() == pytest.approx([5.25, 0.0], abs=1e-6)
    assert states[0]["step"].item() == 2
    # without the freeze c moves: the same two steps give c = 0.85 - 0.1 * (0.9 * 1.5 + 1.5 * 0.85) = 0.5875
    free = recipe.with_(trainable=None)
    rows, _ = train_sequential(model, params, x, y, [np.arange(4)], _schedule([np.arange(4)], free), free)
    assert rows[0].tolist() == pytest.approx([1.175 - 2.0, 0.5875 - 1.0], abs=1e-6)


def test_frozen_parameter_keeps_its_adam_moments_and_hook_sees_zero_gradients():
    model = Scalars()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.ones(4, 2), torch.zeros(4, dtype=torch.long)
    seen: list[list[float]] = []

    class Record(StepHook):
        def __call__(self, s: HookStep):
            seen.append([float(g.reshape(-1)[0]) for g in s.grads])
            return s.bufs

    recipe = TrainRecipe(
        optimizer="adamw",
        lr=0.1,
        weight_decay=0.5,
        batch_size=2,
        batch_loss=_half_square,
        trainable=["a"],
        step_hook=Record(),
    )
    states = [None]
    rows, _ = train_sequential(
        model, params, x, y, [np.arange(4)], _schedule([np.arange(4)], recipe), recipe, opt_states=states
    )
    assert rows[0, 1].item() == 0.0 and rows[0, 0].item() < 0
    assert states[0]["exp_avg"][1].item() == 0.0 and states[0]["exp_avg_sq"][1].item() == 0.0
    assert states[0]["exp_avg"][0].item() != 0.0
    # the hook sees a's gradient (a = 2 at step 1: dL/da = 2) and a zero one for c (dL/dc would be 1)
    assert seen[0] == pytest.approx([2.0, 0.0]) and all(g[1] == 0.0 for g in seen)


@pytest.mark.parametrize("momentum, wd", [(0.0, 0.0), (0.9, 0.01)])
def test_batch_loss_equal_to_the_per_sample_loss_gives_the_same_updates(momentum, wd):
    model, params, x, y, index = _mlp_case()
    recipe = TrainRecipe(lr=0.1, momentum=momentum, weight_decay=wd, batch_size=4, epochs=2)
    ref, ref_bufs = train_sequential(model, params, x, y, index, _schedule(index, recipe), recipe)

    def same_formula(b: LossBatch) -> torch.Tensor:  # the default: (per-sample CE * w).sum() / w.sum(), w = 1
        w = torch.ones(len(b.y))
        return (cross_entropy(b.logits, b.y) * w).sum() / w.sum().clamp_min(1.0)

    got, _ = train_sequential(
        model, params, x, y, index, _schedule(index, recipe), recipe.with_(batch_loss=same_formula)
    )
    assert torch.equal(got, ref)
    # every parameter named trainable: the partial-gradient path, bit for bit the default
    every = recipe.with_(trainable=list(params))
    got, _ = train_sequential(model, params, x, y, index, _schedule(index, every), every)
    assert torch.equal(got, ref)
    # torch's mean cross-entropy: the same up to float rounding
    mean_ce = recipe.with_(batch_loss=lambda b: F.cross_entropy(b.logits, b.y))
    got, _ = train_sequential(model, params, x, y, index, _schedule(index, mean_ce), mean_ce)
    assert torch.allclose(got, ref, atol=1e-6)


def test_batch_loss_sees_the_batch_positions_targets_and_features():
    model, params, x, y, index = _mlp_case(sizes=(10, 7))
    calls: list[tuple[int, list[int], list[int], tuple, bool]] = []
    gp = params

    def recording(b: LossBatch) -> torch.Tensor:
        pos = b.positions.tolist()
        # features: the input of the last Linear, relu(W1 x + b1); at a client's first step params = global
        expected = torch.relu(x[index[b.client][pos]] @ gp["1.weight"].T + gp["1.bias"])
        first = not any(c[0] == b.client for c in calls)
        calls.append(
            (
                b.client,
                pos,
                b.y.tolist(),
                tuple(b.features.shape),
                bool(torch.allclose(b.features, expected)) if first else True,
            )
        )
        return F.cross_entropy(b.logits, b.y)

    recipe = TrainRecipe(lr=0.1, batch_size=4, epochs=2, batch_loss=recording, feature_layer="3")
    sched = _schedule(index, recipe)
    train_sequential(model, params, x, y, index, sched, recipe)
    expected_calls = [(i, b.tolist()) for i in range(len(index)) for b in sched.batches[i]]
    assert [(c[0], c[1]) for c in calls] == expected_calls  # 2 clients x 2 epochs x (3 | 2 batches), in order
    assert len(calls) == 2 * 3 + 2 * 2
    for client, pos, ys, shape, ok in calls:
        assert ys == y[index[client][pos]].tolist()
        assert shape == (len(pos), 5)
        assert ok


def test_positions_look_up_per_sample_flags():
    # a batch loss that counts the flagged samples of each batch: the flags are those of the batch's positions
    model, params, x, y, index = _mlp_case(sizes=(9,))
    flags = torch.zeros(9, dtype=torch.bool)
    flags[[1, 4, 7]] = True
    counts: list[int] = []

    def loss(b: LossBatch) -> torch.Tensor:
        counts.append(int(flags[b.positions].sum()))
        return F.cross_entropy(b.logits, b.y)

    recipe = TrainRecipe(lr=0.1, batch_size=4, batch_loss=loss)
    sched = _schedule(index, recipe)
    train_sequential(model, params, x, y, index, sched, recipe)
    assert counts == [int(np.isin(b, [1, 4, 7]).sum()) for b in sched.batches[0]]
    assert sum(counts) == 3


def test_vectorized_paths_refuse_and_the_dispatch_trains_sequentially():
    model, params, x, y, index = _mlp_case()
    head = TrainRecipe(lr=0.1, batch_size=4, trainable=["3.weight", "3.bias"])
    assert head.vectorize is False and head.sequential_only and head.with_(lr=0.2).vectorize is False
    assert TrainRecipe().sequential_only is False and TrainRecipe().vectorize is True
    sched = _schedule(index, head)
    with pytest.raises(ValueError, match="train_vectorized cannot train a recipe with batch_loss or trainable"):
        train_vectorized(model, params, x, y, index, sched, head)
    with pytest.raises(ValueError, match="minibatch_gradients"):
        minibatch_gradients(model, params, x, y, index, sched, head)
    seq, _ = train_sequential(model, params, x, y, index, sched, head)
    got, _ = train_clients(model, params, x, y, index, sched, head, algorithm="fedavg", vectorized=True)
    assert torch.equal(got, seq)
    d_enc = sum(params[n].numel() for n in ("1.weight", "1.bias"))
    assert torch.count_nonzero(seq[:, :d_enc]) == 0 and torch.count_nonzero(seq[:, d_enc:]) > 0
    stacked = {n: v.unsqueeze(0) for n, v in params.items()}
    with pytest.raises(ValueError, match="no owner"):
        train_clients(model, stacked, x, y, index, sched, head, algorithm="fedavg", owner=[0, 0])


def test_bad_extension_arguments_are_clear_errors():
    model, params, x, y, index = _mlp_case()
    with pytest.raises(ValueError, match="feature_layer is read by batch_loss only"):
        TrainRecipe(feature_layer="3")
    with pytest.raises(TypeError, match="not one string"):
        TrainRecipe(trainable="3.weight")
    for bad, msg in (({"3.wieght"}, r"does not have: \['3.wieght'\]"), (set(), "is empty")):
        r = TrainRecipe(batch_size=4, trainable=bad)
        with pytest.raises(ValueError, match=msg):
            train_sequential(model, params, x, y, index, _schedule(index, r), r)


def test_params_out_continue_a_client_exactly():
    # plain SGD has no state: epoch 1 then epoch 2 from the exact parameters params_out returns is one 2-epoch call
    model, params, x, y, index = _mlp_case(sizes=(10,))
    recipe = TrainRecipe(lr=0.3, batch_size=4, epochs=2, trainable=["1.weight", "3.weight"])
    sched = _schedule(index, recipe)
    whole, _ = train_sequential(model, params, x, y, index, sched, recipe)
    half = len(sched.batches[0]) // 2
    ends: list = []
    train_sequential(model, params, x, y, index, BatchSchedule([sched.batches[0][:half]]), recipe, params_out=ends)
    assert len(ends) == 1 and ends[0].keys() == params.keys()
    again: list = []
    train_sequential(model, ends[0], x, y, index, BatchSchedule([sched.batches[0][half:]]), recipe, params_out=again)
    flat = torch.cat([(again[0][n] - params[n]).reshape(-1) for n in params])
    assert torch.equal(flat, whole[0])
    assert torch.equal(again[0]["1.bias"], params["1.bias"])  # frozen in both calls
