"""What a step hook sees and may do on both training paths: the step's loss
(``HookStep.loss``) and ending a client's training early (``HookStep.stop``)."""

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch.func import functional_call

from fedarena.core.local import BatchSchedule, train_sequential, train_vectorized
from fedarena.core.recipe import HookStep, StepHook, TrainRecipe, cross_entropy
from fedarena.models.simple import MLP

SIZES = (13, 40, 7, 25)  # batch 8, 2 epochs: 4, 10, 2 and 8 steps


def _task():
    """Client ``i`` holds ``SIZES[i]`` samples, all of label ``i`` (so a hook can tell clients apart)."""
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(sum(SIZES), 1, 8, 8, generator=g)
    y = torch.cat([torch.full((n,), i) for i, n in enumerate(SIZES)])
    bounds = np.cumsum((0,) + SIZES)
    index = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(SIZES))]
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    return model, params, x, y, index


@dataclass(frozen=True)
class StopAfter(StepHook):
    """Ends client ``c``'s training after ``limits[c]`` steps (``c``: its label)."""

    limits: tuple[int, ...]

    def init(self, names, params):
        return {"n": torch.zeros(params[0].shape[0], dtype=torch.long)}

    def __call__(self, s: HookStep):
        s.state["n"] += (s.active > 0).long()
        for j in range(len(s.active)):
            if s.active[j] > 0 and int(s.state["n"][j]) >= self.limits[int(s.y[j, 0])]:
                s.stop[j] = True
        return s.bufs


@dataclass(frozen=True)
class LossLog(StepHook):
    """Records ``(client, step, loss)`` of every active client's step."""

    log: list = field(default_factory=list, compare=False, hash=False)

    def init(self, names, params):
        return {"step": 0}

    def __call__(self, s: HookStep):
        for j in range(len(s.active)):
            if s.active[j] > 0:
                self.log.append((int(s.y[j, 0]), s.state["step"], float(s.loss[j])))
        s.state["step"] += 1
        return s.bufs


RECIPE = TrainRecipe(lr=0.1, momentum=0.9, weight_decay=1e-3, batch_size=8, epochs=2)


def _truncated(schedule: BatchSchedule, limits) -> BatchSchedule:
    return BatchSchedule(
        [b[:limit] for b, limit in zip(schedule.batches, limits)], schedule.epoch_start, schedule.seeds
    )


@pytest.mark.parametrize("limits", [(3, 5, 9, 1), (1, 1, 1, 1), (99, 99, 99, 99)])
def test_stop_ends_a_clients_training_on_both_paths(limits):
    # client c takes min(limits[c], its steps) steps: the same update as a schedule cut there
    model, params, x, y, index = _task()
    sched = BatchSchedule.build(list(SIZES), RECIPE, [np.random.default_rng([1, i]) for i in range(4)])
    want, _ = train_sequential(model, params, x, y, index, _truncated(sched, limits), RECIPE)
    hooked = RECIPE.with_(step_hook=StopAfter(limits))
    seq, _ = train_sequential(model, params, x, y, index, sched, hooked)
    assert torch.equal(seq, want)
    for strategy, chunk in (("vmap", 4), ("loop", 4), ("vmap", 3)):
        vec = train_vectorized(model, params, x, y, index, sched, hooked, chunk_size=chunk, strategy=strategy)
        assert torch.allclose(vec, want, atol=1e-5, rtol=1e-4), (strategy, chunk)
    full, _ = train_sequential(model, params, x, y, index, sched, RECIPE)
    steps = [len(b) for b in sched.batches]  # (4, 10, 2, 8)
    for c in range(4):  # clients cut short differ from full training, the others do not
        assert torch.equal(full[c], want[c]) == (limits[c] >= steps[c])


def test_the_hook_sees_each_steps_loss_on_both_paths():
    # the loss of a step is taken at the parameters before it: at step 0 the initial model's mean
    # cross-entropy on the client's first batch plus the extra loss (0.5 * sum of the first
    # tensor's squares, the same for every client at the shared start)
    model, params, x, y, index = _task()
    first = next(iter(params))
    recipe = RECIPE.with_(extra_loss=lambda p, g: 0.5 * (p[first] ** 2).sum())
    sched = BatchSchedule.build(list(SIZES), recipe, [np.random.default_rng([2, i]) for i in range(4)])
    logs = {}
    for path in ("sequential", "vmap", "loop"):
        hook = LossLog()
        r = recipe.with_(step_hook=hook)
        if path == "sequential":
            train_sequential(model, params, x, y, index, sched, r)
        else:
            train_vectorized(model, params, x, y, index, sched, r, chunk_size=4, strategy=path)
        logs[path] = {(c, s): v for c, s, v in hook.log}
    extra = 0.5 * float((params[first] ** 2).sum())
    for c in range(4):
        b = torch.from_numpy(index[c][sched.batches[c][0]])
        ce = float(cross_entropy(functional_call(model, (params, {}), (x[b],)), y[b]).mean())
        assert logs["sequential"][(c, 0)] == pytest.approx(ce + extra, rel=1e-6)
    assert set(logs["sequential"]) == set(logs["vmap"]) == set(logs["loop"])
    assert len(logs["sequential"]) == sum(len(b) for b in sched.batches)  # every step of every client
    for key, v in logs["sequential"].items():
        assert logs["vmap"][key] == pytest.approx(v, rel=1e-4) and logs["loop"][key] == pytest.approx(v, rel=1e-4)


def test_a_hook_does_not_change_the_sequential_arithmetic():
    # with a hook the sequential path takes the gradient and the loss in one call: same updates, bit for bit
    model, params, x, y, index = _task()
    sched = BatchSchedule.build(list(SIZES), RECIPE, [np.random.default_rng([3, i]) for i in range(4)])
    plain, _ = train_sequential(model, params, x, y, index, sched, RECIPE)
    hooked, _ = train_sequential(model, params, x, y, index, sched, RECIPE.with_(step_hook=LossLog()))
    assert torch.equal(plain, hooked)


def test_stop_on_the_fold_path():
    # a CNN folded over clients (the CPU path for convolutional models): the same cut as the schedule's
    from fedarena.models.simple import LeNet

    torch.manual_seed(0)
    model = LeNet((1, 28, 28), 10)
    sizes = (9, 20, 5)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(sum(sizes), 1, 28, 28, generator=g)
    y = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    bounds = np.cumsum((0,) + sizes)
    index = [np.arange(bounds[i], bounds[i + 1]) for i in range(3)]
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    recipe = TrainRecipe(lr=0.05, batch_size=4, epochs=1, momentum=0.5)
    sched = BatchSchedule.build(list(sizes), recipe, [np.random.default_rng(i) for i in range(3)])
    limits = (2, 3, 9)
    want, _ = train_sequential(model, params, x, y, index, _truncated(sched, limits), recipe)
    got = train_vectorized(
        model, params, x, y, index, sched, recipe.with_(step_hook=StopAfter(limits)), strategy="fold"
    )
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)
