"""``fedarena bench``, section ``training``: client-epochs per second of the engine's local
training vs a plain PyTorch loop per client (the sequential reference) vs one model trained
on all clients' batches stacked (the batched bound), with FLOPs and the GEMM-peak fraction.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import numpy as np
import torch

from .plan import Workload
from .timing import timed


def _build_model(w: Workload) -> Optional[torch.nn.Module]:
    from ..registry import MODELS

    if w.model not in MODELS:
        return None
    return MODELS.get(w.model)(w.input_shape, 10, **w.model_kwargs)


def flops_per_sample(model: torch.nn.Module, input_shape: tuple[int, ...], batch: int, device: torch.device) -> float:
    """Forward + backward FLOPs of one training sample (matrix products and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    m = copy.deepcopy(model).to(device)
    x = torch.rand(batch, *input_shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    with FlopCounterMode(display=False) as fc:
        torch.nn.functional.cross_entropy(m(x), y).backward()
    return fc.get_total_flops() / batch


def sequential_reference(
    template: torch.nn.Module,
    state: dict,
    x: torch.Tensor,
    y: torch.Tensor,
    index: list[np.ndarray],
    schedule,
    lr: float,
) -> torch.Tensor:
    """The peers' way: per client a fresh model and ``torch.optim.SGD``, a Python loop over batches."""
    rows = []
    for i in range(len(index)):
        model = copy.deepcopy(template)
        model.load_state_dict(state)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for b in schedule.batches[i]:
            idx = torch.from_numpy(index[i][b]).to(x.device)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        rows.append(torch.cat([(p.detach() - state[n]).reshape(-1) for n, p in model.named_parameters()]))
    return torch.stack(rows)


def batched_bound(
    template: torch.nn.Module,
    state: dict,
    x: torch.Tensor,
    y: torch.Tensor,
    index: list[np.ndarray],
    schedule,
    lr: float,
    channels_last: bool = False,
) -> None:
    """One model, one SGD step per schedule step on all clients' batches stacked together.

    ``channels_last``: model and inputs in channels-last memory format (the layout the
    engine's fold strategy uses for convolutions), a second, higher ceiling for CNNs."""
    model = copy.deepcopy(template)
    model.load_state_dict(state)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    steps = [
        torch.from_numpy(np.concatenate([index[i][c[s]] for i, c in enumerate(schedule.batches) if s < len(c)])).to(
            x.device
        )
        for s in range(schedule.max_steps)
    ]
    for idx in steps:
        xb = x[idx]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), y[idx]).backward()
        opt.step()


def bench_training(w: Workload, device: torch.device, reps: int, peak_gflops: float, log=None) -> dict[str, Any]:
    from ..core.local import (
        BatchSchedule,
        auto_chunk_size,
        auto_strategy,
        has_buffers,
        train_sequential,
        train_vectorized,
    )
    from ..core.recipe import TrainRecipe

    torch.manual_seed(0)
    model = _build_model(w)
    if model is None:
        return {"skipped": f"model {w.model!r} is not registered in this installation"}
    model = model.to(device)
    g = torch.Generator().manual_seed(1)
    n_total = w.clients * w.samples
    x = torch.rand(n_total, *w.input_shape, generator=g).to(device)
    y = torch.randint(0, 10, (n_total,), generator=g).to(device)
    index = [np.arange(i * w.samples, (i + 1) * w.samples) for i in range(w.clients)]
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = {n: t.detach().clone() for n, t in model.state_dict().items()}
    d = sum(p.numel() for p in params.values())
    recipe = TrainRecipe(lr=0.01, batch_size=w.batch_size, epochs=1)
    sched = BatchSchedule.build(
        [w.samples] * w.clients, recipe, [np.random.default_rng([7, i]) for i in range(w.clients)]
    )

    if has_buffers(model):  # BatchNorm: the Simulation trains such models on the sequential path
        path, chunk = "sequential (model has buffers)", None
        engine = lambda: train_sequential(
            model,
            params,
            x,
            y,
            index,
            sched,
            recipe,
            prepare=None,
            buffers={n: b for n, b in model.named_buffers()},
        )[0]
    else:
        chunk = auto_chunk_size(d, recipe.batch_size, x[0].numel())
        strategy = "loop" if min(chunk, w.clients) <= 1 else auto_strategy(model, device, x[0])
        path = f"vectorized ({strategy}, chunk {min(chunk, w.clients)})"
        engine = lambda: train_vectorized(model, params, x, y, index, sched, recipe)
    seq = lambda: sequential_reference(model, state, x, y, index, sched, recipe.lr)
    bat = lambda: batched_bound(model, state, x, y, index, sched, recipe.lr)
    variants = [("engine", engine), ("sequential", seq), ("batched", bat)]
    if not has_buffers(model):  # the engine's own one-client-at-a-time path (custom recipes, attackers' training)
        variants.append(
            (
                "engine_sequential",
                lambda: train_sequential(model, params, x, y, index, sched, recipe, prepare=None)[0],
            )
        )
    conv = x.dim() == 4 and any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
    if conv:
        variants.append(
            (
                "batched_channels_last",
                lambda: batched_bound(model, state, x, y, index, sched, recipe.lr, channels_last=True),
            )
        )

    # warm-up (also the correctness check), then interleaved repetitions
    _, U_engine = timed(engine, device)
    _, U_seq = timed(seq, device)
    for _, fn in variants[2:]:
        timed(fn, device)
    times: dict[str, list[float]] = {k: [] for k, _ in variants}
    for _ in range(reps):
        for key, fn in variants:
            times[key].append(timed(fn, device)[0])
    best = {k: min(v) for k, v in times.items()}
    rate = {k: w.clients / v for k, v in best.items()}
    fps = flops_per_sample(model, w.input_shape, w.batch_size, device)
    flops_ce = fps * w.samples
    engine_gflops = rate["engine"] * flops_ce / 1e9
    out = {
        "model": w.model,
        "model_kwargs": w.model_kwargs,
        "params": d,
        "input_shape": list(w.input_shape),
        "clients": w.clients,
        "samples_per_client": w.samples,
        "batch_size": w.batch_size,
        "local_epochs": 1,
        "note": w.note,
        "engine": {"client_epochs_per_s": rate["engine"], "seconds": best["engine"], "path": path, "chunk_size": chunk},
        "sequential": {"client_epochs_per_s": rate["sequential"], "seconds": best["sequential"]},
        "batched": {"client_epochs_per_s": rate["batched"], "seconds": best["batched"]},
        "speedup_vs_sequential": rate["engine"] / rate["sequential"],
        "fraction_of_batched_bound": rate["engine"] / rate["batched"],
        "batched_channels_last": (
            {"client_epochs_per_s": rate["batched_channels_last"], "seconds": best["batched_channels_last"]}
            if conv
            else None
        ),
        "fraction_of_channels_last_bound": rate["engine"] / rate["batched_channels_last"] if conv else None,
        # core's sequential path (train_sequential) against the plain loop, same clients and batches
        "engine_sequential": (
            {
                "client_epochs_per_s": rate["engine_sequential"],
                "seconds": best["engine_sequential"],
                "vs_sequential_loop": rate["engine_sequential"] / rate["sequential"],
            }
            if "engine_sequential" in rate
            else None
        ),
        "flops_per_client_epoch": flops_ce,
        "engine_gflops": engine_gflops,
        "fraction_of_gemm_peak": engine_gflops / peak_gflops if peak_gflops > 0 else None,
        "max_abs_diff_vs_sequential": float((U_engine.cpu() - U_seq.cpu()).abs().max()),
        "all_seconds": times,
    }
    if log:
        log(
            f"  {w.name}: engine {rate['engine']:.1f}, sequential {rate['sequential']:.1f}, batched "
            f"{rate['batched']:.1f} client-epochs/s ({path})"
        )
    return out


__all__ = ["batched_bound", "bench_training", "flops_per_sample", "sequential_reference"]
