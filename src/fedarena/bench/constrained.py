"""``fedarena bench``, section ``constrained_epoch``: the cost of AutoAdapt's constrained
local epoch against a plain one.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch


def bench_constrained(reps: int = 3, samples: int = 160) -> dict[str, Any]:
    """AutoAdapt's cost (``reproduce autoadapt``'s model: an MLP 784-64-10, batch 16):
    seconds of one epoch of plain local SGD vs one epoch under the box-7 objective (the
    constraints' forward and backward every step plus their evaluation after the step),
    for cos over the whole model and cos + l2 per layer; best of ``reps``. Both run on core's
    trainer (:func:`fedarena.attacks.autoadapt.train_constrained`)."""
    from ..attacks.autoadapt import Constraints, LoopConfig, train_constrained
    from ..core.distances import metric_values
    from ..core.layout import ParamLayout
    from ..core.recipe import TrainRecipe
    from ..models.simple import MLP

    torch.manual_seed(0)
    model = MLP((1, 28, 28), 10)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    lay = ParamLayout.from_module(model)
    g = lay.flatten(params)
    x, y = torch.rand(samples, 1, 28, 28), torch.randint(0, 10, (samples,))
    recipe = TrainRecipe(lr=0.02, momentum=0.9, weight_decay=0.005, batch_size=16, epochs=1)
    out: dict[str, Any] = {"model": "mlp 784-64-10", "samples": samples, "batch": 16}
    variants = {"unconstrained": None, "cos/whole": (["cos"], "whole"), "cos+l2/layers": (["cos", "l2"], "layers")}
    best = {k: math.inf for k in variants}
    for _ in range(reps):
        for k, spec in variants.items():
            cons = None
            if spec is not None:
                v, labels = metric_values(g, g, lay, spec[0], spec[1])
                cons = Constraints(lay, g, spec[0], spec[1], False, v - 1.0, v - 0.5, labels)  # always violated
            cfg = LoopConfig(mode="none") if spec is None else LoopConfig(mode="autoadapt", activate_epoch=1)
            t0 = time.perf_counter()
            train_constrained(
                model, params, {}, x, y, np.arange(samples), None, recipe, np.random.default_rng(0), cfg, cons
            )
            best[k] = min(best[k], time.perf_counter() - t0)
    out["epoch_seconds"] = best
    out["constrained_over_unconstrained"] = {
        k: best[k] / best["unconstrained"] for k in variants if k != "unconstrained"
    }
    return out


__all__ = ["bench_constrained"]
