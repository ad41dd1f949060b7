"""``fedarena bench``: how fast the engine trains clients and the robust rules aggregate.

Three measurements, in one process, on the same inputs (``benchmarks/README.md`` explains
how to read them):

1. **Local training** (``training.<workload>``): client-epochs per second of

   * the *engine*: :func:`fedarena.core.local.train_vectorized` with automatic chunk
     size and strategy (or :func:`~fedarena.core.local.train_sequential` for models
     with buffers, as the :class:`~fedarena.run.simulation.Simulation` does);
   * the *sequential* reference: a plain PyTorch loop, one model and one
     ``torch.optim.SGD`` per client, the way most FL code trains clients;
   * the *batched* bound: one model trained on all clients' batches stacked into one
     batch per step (same samples, same number of steps): the compute-bound ceiling of
     training these clients on this machine.

   plus ``speedup_vs_sequential``, ``fraction_of_batched_bound``, the FLOPs of one
   client-epoch (forward + backward, counted with ``torch.utils.flop_counter``), the
   measured GEMM peak (``gemm.gflops``) and ``fraction_of_gemm_peak``. The engine's
   updates are also compared with the sequential reference (``max_abs_diff_vs_sequential``).
2. **Aggregators** (``aggregators.<rule>``): seconds per call of every registered robust
   rule for ``n`` updates of ``d`` coordinates, and of a straightforward reference written
   here (NumPy median / sort, pairwise-loop Krum, per-client loops for Weiszfeld and
   centered clipping), ``speedup_vs_reference`` (at the largest ``n x d`` measured), plus
   the physical yardsticks ``yardsticks``: one memory pass (the mean) and one Gram GEMM.
3. **End-to-end** (``end_to_end``): 100 rounds of Fashion-MNIST through the Simulation.
4. **Lockstep** (``lockstep``, :mod:`fedarena.bench_lockstep`): studies played one run after
   another vs in lockstep (a fall-of-cc subset and a 64-run digits sweep), as ratios.
5. **Flower** (``flower``, :mod:`fedarena.bench_flower`): the same LeNet workload through
   fedarena and Flower's Ray simulation, alternating (when ``flwr`` is installed).

Timings are the best of a few repetitions, the three training variants interleaved, so
ratios measured in one run are meaningful on a shared machine even when absolute numbers
move. Nothing here changes what the library computes.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

#: ByzFL 0.0.11 at n=100, d=1e6 on the project's 2-core CPU (seconds per call; issue #6).
BYZFL_SECONDS = {"krum": 0.97, "multi-krum": 1.18, "trimmed-mean": 2.40, "median": 2.49, "rfa": 1.43, "cc": 0.33}
#: what ``only`` may name
SECTIONS = ("training", "memory", "aggregators", "lockstep", "flower", "end_to_end", "constrained_epoch")
ROBUST_RULES = ("median", "trimmed-mean", "krum", "multi-krum", "bulyan", "rfa", "cc", "sign",
                "mda", "monna", "meamed", "caf", "smea", "dnc", "signguard", "clipped-clustering", "fldetector", "lasa")


# ----------------------------------------------------------------------------- plan
@dataclass
class Workload:
    name: str
    model: str
    input_shape: tuple[int, ...]
    clients: int
    samples: int
    batch_size: int = 32
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    reps: Optional[int] = None  # repetitions after the warm-up (None: the plan's)


@dataclass
class BenchPlan:
    training: list[Workload]
    agg_configs: list[tuple[int, int]]  # (n, d)
    reps: int
    gemm_size: int
    memory: bool
    end_to_end: bool
    lockstep: str = "off"  # off | tiny | quick | default
    flower: bool = False


def make_plan(quick: bool, scale: str = "default") -> BenchPlan:
    """The workloads of a run. ``scale="tiny"`` is the test-suite's seconds-long version."""
    mlp = Workload("mlp-digits", "mlp", (1, 8, 8), 20, 72, note="mlp 64-64-10, 20 clients x 72 samples")
    cnn = Workload("cnn-fmnist", "cnn", (1, 28, 28), 10, 600, note="LeNet-5, 10 clients x 600 samples")
    if scale == "tiny":
        return BenchPlan([Workload("mlp-digits", "mlp", (1, 8, 8), 6, 72),
                          Workload("cnn-fmnist", "cnn", (1, 28, 28), 2, 64)],
                         [(25, 10_000)], 1, 128, False, False, lockstep="tiny")
    if quick:
        return BenchPlan([mlp, cnn], [(25, 100_000), (100, 100_000)], 3, 512, False, False, lockstep="quick")
    wide = dict(hidden=(200,))
    scaling = [Workload(f"clients-{k}", "mlp", (1, 28, 28), k, 60, model_kwargs=wide,
                        note=f"mlp 784-200-10, {k} clients x 60 samples") for k in (10, 100, 1000)]
    resnet = Workload("resnet18-cifar", "resnet18", (3, 32, 32), 4, 16, batch_size=16,
                      model_kwargs={"norm": "group"}, reps=1,
                      note="ResNet-18 with GroupNorm (BatchNorm models train on the sequential path), 4 clients x 16 samples")
    return BenchPlan([mlp, cnn, resnet, *scaling],
                     [(25, 100_000), (25, 1_000_000), (100, 100_000), (100, 1_000_000)], 3, 1024, True, True,
                     lockstep="default", flower=True)


# ----------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


def gemm_peak(size: int, device: torch.device, reps: int = 5) -> dict[str, float]:
    """Best GFLOP/s of a square float32 matrix product (``2 n^3`` FLOPs)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device)
    b = torch.randn(size, size, generator=g).to(device)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b), device)[0] for _ in range(reps))
    return {"size": size, "seconds": best, "gflops": 2 * size**3 / best / 1e9}


# ----------------------------------------------------------------------------- training
def _build_model(w: Workload) -> Optional[torch.nn.Module]:
    from .registry import MODELS

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


def sequential_reference(template: torch.nn.Module, state: dict, x: torch.Tensor, y: torch.Tensor,
                         index: list[np.ndarray], schedule, lr: float) -> torch.Tensor:
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


def batched_bound(template: torch.nn.Module, state: dict, x: torch.Tensor, y: torch.Tensor,
                  index: list[np.ndarray], schedule, lr: float, channels_last: bool = False) -> None:
    """One model, one SGD step per schedule step on all clients' batches stacked together.

    ``channels_last``: model and inputs in channels-last memory format (the layout the
    engine's fold strategy uses for convolutions), a second, higher ceiling for CNNs."""
    model = copy.deepcopy(template)
    model.load_state_dict(state)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    steps = [torch.from_numpy(np.concatenate([index[i][c[s]] for i, c in enumerate(schedule.batches) if s < len(c)]))
             .to(x.device) for s in range(schedule.max_steps)]
    for idx in steps:
        xb = x[idx]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), y[idx]).backward()
        opt.step()


def bench_training(w: Workload, device: torch.device, reps: int, peak_gflops: float, log=None) -> dict[str, Any]:
    from .core.local import (BatchSchedule, auto_chunk_size, auto_strategy, has_buffers, train_sequential,
                               train_vectorized)
    from .core.recipe import TrainRecipe

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
    sched = BatchSchedule.build([w.samples] * w.clients, recipe, [np.random.default_rng([7, i]) for i in range(w.clients)])

    if has_buffers(model):  # BatchNorm: the Simulation trains such models on the sequential path
        path, chunk = "sequential (model has buffers)", None
        engine = lambda: train_sequential(model, params, x, y, index, sched, recipe, None,  # noqa: E731
                                          {n: b for n, b in model.named_buffers()})[0]
    else:
        chunk = auto_chunk_size(d, recipe.batch_size, x[0].numel())
        strategy = "loop" if min(chunk, w.clients) <= 1 else auto_strategy(model, device, x[0])
        path = f"vectorized ({strategy}, chunk {min(chunk, w.clients)})"
        engine = lambda: train_vectorized(model, params, x, y, index, sched, recipe)  # noqa: E731
    seq = lambda: sequential_reference(model, state, x, y, index, sched, recipe.lr)  # noqa: E731
    bat = lambda: batched_bound(model, state, x, y, index, sched, recipe.lr)  # noqa: E731
    variants = [("engine", engine), ("sequential", seq), ("batched", bat)]
    conv = x.dim() == 4 and any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
    if conv:
        variants.append(("batched_channels_last",
                         lambda: batched_bound(model, state, x, y, index, sched, recipe.lr, channels_last=True)))

    # warm-up (also the correctness check), then interleaved repetitions
    _, U_engine = _timed(engine, device)
    _, U_seq = _timed(seq, device)
    for _, fn in variants[2:]:
        _timed(fn, device)
    times: dict[str, list[float]] = {k: [] for k, _ in variants}
    for _ in range(reps):
        for key, fn in variants:
            times[key].append(_timed(fn, device)[0])
    best = {k: min(v) for k, v in times.items()}
    rate = {k: w.clients / v for k, v in best.items()}
    fps = flops_per_sample(model, w.input_shape, w.batch_size, device)
    flops_ce = fps * w.samples
    engine_gflops = rate["engine"] * flops_ce / 1e9
    out = {
        "model": w.model, "model_kwargs": w.model_kwargs, "params": d, "input_shape": list(w.input_shape),
        "clients": w.clients, "samples_per_client": w.samples, "batch_size": w.batch_size, "local_epochs": 1,
        "note": w.note,
        "engine": {"client_epochs_per_s": rate["engine"], "seconds": best["engine"], "path": path, "chunk_size": chunk},
        "sequential": {"client_epochs_per_s": rate["sequential"], "seconds": best["sequential"]},
        "batched": {"client_epochs_per_s": rate["batched"], "seconds": best["batched"]},
        "speedup_vs_sequential": rate["engine"] / rate["sequential"],
        "fraction_of_batched_bound": rate["engine"] / rate["batched"],
        "batched_channels_last": ({"client_epochs_per_s": rate["batched_channels_last"],
                                   "seconds": best["batched_channels_last"]} if conv else None),
        "fraction_of_channels_last_bound": rate["engine"] / rate["batched_channels_last"] if conv else None,
        "flops_per_client_epoch": flops_ce,
        "engine_gflops": engine_gflops,
        "fraction_of_gemm_peak": engine_gflops / peak_gflops if peak_gflops > 0 else None,
        "max_abs_diff_vs_sequential": float((U_engine.cpu() - U_seq.cpu()).abs().max()),
        "all_seconds": times,
    }
    if log:
        log(f"  {w.name}: engine {rate['engine']:.1f}, sequential {rate['sequential']:.1f}, batched "
            f"{rate['batched']:.1f} client-epochs/s ({path})")
    return out


# ----------------------------------------------------------------------------- memory
def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def memory_child(clients: int, hidden: tuple[int, ...]) -> dict[str, Any]:
    """Runs in a fresh process: one round of ``clients`` clients of an MLP; peak RSS."""
    import resource

    from .core.local import BatchSchedule, auto_chunk_size, train_vectorized
    from .core.recipe import TrainRecipe
    from .models.simple import MLP

    torch.manual_seed(0)
    shape, samples = (1, 28, 28), 32
    model = MLP(shape, 10, hidden=hidden)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    d = sum(p.numel() for p in params.values())
    g = torch.Generator().manual_seed(1)
    x = torch.rand(clients * samples, *shape, generator=g)
    y = torch.randint(0, 10, (clients * samples,), generator=g)
    index = [np.arange(i * samples, (i + 1) * samples) for i in range(clients)]
    recipe = TrainRecipe(lr=0.01, batch_size=32, steps=1)
    sched = BatchSchedule.build([samples] * clients, recipe, [np.random.default_rng(i) for i in range(clients)])
    before = _rss_mb()
    t = time.perf_counter()
    U = train_vectorized(model, params, x, y, index, sched, recipe)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    u_mb = U.numel() * U.element_size() / 2**20
    return {"clients": clients, "params": d, "chunk_size": auto_chunk_size(d, 32, 784),
            "update_matrix_mb": u_mb, "rss_before_mb": before, "peak_rss_mb": peak,
            "working_set_mb": peak - before - u_mb, "seconds": wall, "finite": bool(torch.isfinite(U).all())}


def bench_memory(clients: int = 1000, hidden: tuple[int, ...] = (1024, 256)) -> dict[str, Any]:
    code = ("import json, torch; torch.set_num_threads(%d); from fedarena.bench import memory_child; "
            "print(json.dumps(memory_child(%d, %r)))" % (torch.get_num_threads(), clients, tuple(hidden)))
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return {"skipped": "timed out after 900 s"}
    if res.returncode != 0:
        return {"skipped": f"child failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- aggregator references
def _pairwise_loop(A: np.ndarray) -> np.ndarray:
    """Squared distances the straightforward way: a Python loop over pairs."""
    n = len(A)
    D = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            diff = A[i] - A[j]
            D[i, j] = D[j, i] = float(np.dot(diff, diff))
    return D


def _krum_scores(D: np.ndarray, f: int, active: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(active)
    m = len(idx) - f - 2
    scores = np.full(len(D), np.inf)
    for i in idx:
        others = np.sort(np.delete(D[i, idx], np.flatnonzero(idx == i)))
        scores[i] = others[:m].sum()
    return scores


def ref_krum(A: np.ndarray, f: int, D: np.ndarray) -> np.ndarray:
    return A[int(np.argmin(_krum_scores(D, f, np.ones(len(A), bool))))]


def ref_multi_krum(A: np.ndarray, f: int, D: np.ndarray) -> np.ndarray:
    scores = _krum_scores(D, f, np.ones(len(A), bool))
    return A[np.argsort(scores, kind="stable")[: len(A) - f]].mean(0)


def ref_bulyan(A: np.ndarray, f: int, D: np.ndarray) -> np.ndarray:
    n = len(A)
    theta, beta = n - 2 * f, n - 4 * f
    active = np.ones(n, bool)
    chosen = []
    for _ in range(theta):
        i = int(np.argmin(_krum_scores(D, f, active)))
        chosen.append(i)
        active[i] = False
    S = A[chosen]
    med = np.median(S, axis=0)
    nearest = np.argsort(np.abs(S - med), axis=0, kind="stable")[:beta]
    return np.take_along_axis(S, nearest, axis=0).mean(0)


def ref_rfa(A: np.ndarray, iters: int = 3, nu: float = 0.1) -> np.ndarray:
    """Smoothed Weiszfeld from 0, per-client loop (Pillutla et al. 2022, Algorithm 2)."""
    z = np.zeros(A.shape[1], dtype=A.dtype)
    for _ in range(iters):
        w = np.array([1.0 / max(nu, float(np.linalg.norm(a - z))) for a in A])
        w = w / w.sum()
        z = sum(wi * a for wi, a in zip(w, A))
    return z


def ref_cc(A: np.ndarray, tau: float = 1.0, iterations: int = 1) -> np.ndarray:
    """Centered clipping from center 0, per-client loop (Karimireddy et al. 2021, Eq. 2)."""
    v = np.zeros(A.shape[1], dtype=A.dtype)
    for _ in range(iterations):
        acc = np.zeros_like(v)
        for a in A:
            diff = a - v
            acc += diff * min(1.0, tau / (float(np.linalg.norm(diff)) + 1e-12))
        v = v + acc / len(A)
    return v


def references(f: int) -> dict[str, tuple[Callable[..., np.ndarray], bool]]:
    """rule -> (reference, needs the pairwise-distance loop)."""
    return {
        "median": (lambda A, D: np.median(A, axis=0), False),
        "trimmed-mean": (lambda A, D: np.sort(A, axis=0)[f: len(A) - f].mean(0), False),
        "krum": (lambda A, D: ref_krum(A, f, D), True),
        "multi-krum": (lambda A, D: ref_multi_krum(A, f, D), True),
        "bulyan": (lambda A, D: ref_bulyan(A, f, D), True),
        "rfa": (lambda A, D: ref_rfa(A), False),
        "cc": (lambda A, D: ref_cc(A), False),
        "sign": (lambda A, D: np.sign(np.sign(A).sum(0)), False),
    }


def bench_aggregators(configs: list[tuple[int, int]], device: torch.device, reps: int, log=None) -> tuple[dict, dict]:
    from .defenses.base import RoundContext
    from .core.layout import ParamLayout
    from .registry import DEFENSES

    rules = [r for r in ROBUST_RULES if r in DEFENSES]
    out: dict[str, Any] = {r: {"seconds": {}, "reference_seconds": {}, "speedup": {}, "max_abs_diff_vs_reference": {}}
                           for r in rules}
    yard: dict[str, Any] = {}
    for n, d in configs:
        key = f"n={n},d={d:.0e}".replace("+0", "")
        f = n // 5
        g = torch.Generator().manual_seed(n * 7 + d)
        U = torch.randn(n, d, generator=g).to(device)
        A = U.cpu().numpy()
        ctx = RoundContext(round=0, layout=ParamLayout.from_params({"w": torch.zeros(d)}),
                           client_ids=torch.arange(n), num_samples=torch.ones(n, dtype=torch.long), f=f,
                           global_params=torch.zeros(d, device=device), generator=torch.Generator().manual_seed(0))
        mean_s = min(_timed(lambda: U.mean(0), device)[0] for _ in range(reps + 2))
        gram_s = min(_timed(lambda: U @ U.T, device)[0] for _ in range(reps + 2))
        pair_s, D = _timed(lambda: _pairwise_loop(A), torch.device("cpu"))
        yard[key] = {"n": n, "d": d, "f": f, "mean_seconds": mean_s, "gram_seconds": gram_s,
                     "reference_pairwise_loop_seconds": pair_s}
        refs = references(f)
        for r in rules:
            rule = DEFENSES.build(r, {})
            try:
                rule.validate(n, f)
            except Exception as e:  # noqa: BLE001 - recorded, not fatal
                out[r]["seconds"][key] = None
                out[r].setdefault("notes", []).append(f"{key}: {e}")
                continue
            call = lambda: rule.aggregate(U, ctx)  # noqa: E731
            if hasattr(rule, "reset"):
                rule.reset()
            t0, agg = _timed(call, device)
            ts = [t0]
            for _ in range(reps - 1 if t0 > 1.0 else reps):
                rule.reset()
                ts.append(_timed(call, device)[0])
            sec = min(ts)
            out[r]["seconds"][key] = sec
            out[r].setdefault("over_gram", {})[key] = sec / gram_s
            if r not in refs:  # no reference implementation: timed only
                if log:
                    log(f"  {r:13s} {key}: {sec:.4f} s")
                continue
            ref_fn, pairwise = refs[r]
            ref_s, ref_out = _timed(lambda: ref_fn(A, D), torch.device("cpu"))
            if pairwise:
                ref_s += pair_s  # the reference computes its distances with the pairwise loop
            out[r]["seconds"][key] = sec
            out[r]["reference_seconds"][key] = ref_s
            out[r]["speedup"][key] = ref_s / sec
            out[r]["max_abs_diff_vs_reference"][key] = float(np.abs(agg.update.detach().cpu().numpy() - ref_out).max())
            out[r].setdefault("over_gram", {})[key] = sec / gram_s
            if log:
                log(f"  {r:13s} {key}: {sec:.4f} s (reference {ref_s:.3f} s, x{ref_s / sec:.1f})")
    last = max(configs, key=lambda c: c[0] * c[1])
    last_key = f"n={last[0]},d={last[1]:.0e}".replace("+0", "")
    for r in rules:
        s = out[r]["speedup"].get(last_key)
        out[r]["speedup_vs_reference"] = s
        out[r]["at"] = last_key
        if r in BYZFL_SECONDS and last == (100, 1_000_000) and out[r]["seconds"].get(last_key):
            out[r]["speedup_vs_byzfl"] = BYZFL_SECONDS[r] / out[r]["seconds"][last_key]
    return out, yard


# ----------------------------------------------------------------------------- end to end
def find_data_root(data_root: Optional[str]) -> Optional[str]:
    """``data_root``, else the first of ``$FEDARENA_DATA``, ``../shared/data`` and the cache
    that holds Fashion-MNIST (:func:`fedarena.reproduce.quick.find_fashion_mnist`)."""
    from .reproduce.quick import find_fashion_mnist

    return data_root or find_fashion_mnist()


def bench_end_to_end(data_root: Optional[str], device: torch.device, rounds: int = 100, log=None) -> dict[str, Any]:
    from .config import from_tree
    from .run.simulation import Simulation
    from .errors import ConfigError, DataNotFoundError

    root = find_data_root(data_root)
    tree = {"name": "bench-fmnist", "seed": 0,
            "data": {"dataset": "fashion-mnist", "root": root, "download": False},
            "model": {"name": "cnn"},
            "fl": {"num_clients": 100, "clients_per_round": 10, "rounds": rounds, "local_epochs": 1,
                   "batch_size": 32, "device": device.type},
            "defense": {"name": "fedavg"}, "eval": {"every": 10}}
    try:
        t = time.perf_counter()
        sim = Simulation(from_tree(tree))
        setup = time.perf_counter() - t
    except (ConfigError, DataNotFoundError) as e:
        return {"skipped": f"Fashion-MNIST not available ({e}); pass data.root"}
    result = sim.run()
    wall = result.summary["wall_time_s"]
    out = {"rounds": rounds, "clients": 100, "clients_per_round": 10, "model": "cnn", "defense": "fedavg",
           "eval_every": 10, "setup_seconds": setup, "wall_seconds": wall, "rounds_per_s": rounds / wall,
           "final_main_acc": result.summary.get("final_main_acc"), "data_root": root}
    if log:
        log(f"  {rounds} rounds in {wall:.1f} s ({rounds / wall:.2f} rounds/s), accuracy {out['final_main_acc']}")
    return out


# ----------------------------------------------------------------------------- report
def bench_constrained(reps: int = 3, samples: int = 160) -> dict[str, Any]:
    """AutoAdapt's cost (``reproduce autoadapt``'s model: an MLP 784-64-10, batch 16):
    seconds of one epoch of plain local SGD vs one epoch under the box-7 objective (the
    constraints' forward and backward every step plus their evaluation after the step),
    for cos over the whole model and cos + l2 per layer; best of ``reps``."""
    from .attacks.autoadapt import Constraints, LoopConfig, make_net, train_loop
    from .core.distances import metric_values
    from .core.layout import ParamLayout
    from .core.recipe import TrainRecipe
    from .models.simple import MLP

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
            net = make_net(model, params, {})
            t0 = time.perf_counter()
            train_loop(net, x, y, np.arange(samples), None, recipe, np.random.default_rng(0), cfg, cons)
            best[k] = min(best[k], time.perf_counter() - t0)
    out["epoch_seconds"] = best
    out["constrained_over_unconstrained"] = {k: best[k] / best["unconstrained"] for k in variants if k != "unconstrained"}
    return out


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and a verdict."""
    rows = []
    tr = res.get("training", {})

    def add(name, value, ok, goal):
        rows.append({"target": name, "goal": goal, "measured": value, "met": ok})

    m = tr.get("mlp-digits", {})
    if "speedup_vs_sequential" in m:
        add("mlp-digits speedup vs sequential", m["speedup_vs_sequential"], m["speedup_vs_sequential"] >= 5, ">= 5")
    c = tr.get("cnn-fmnist", {})
    if "fraction_of_batched_bound" in c:
        add("cnn-fmnist fraction of batched bound", c["fraction_of_batched_bound"], c["fraction_of_batched_bound"] >= 0.9,
            ">= 0.9")
    fl = res.get("flower", {})
    if fl.get("vectorized_over_flower") is not None:
        v = fl["vectorized_over_flower"]
        add("LeNet workload vs Flower's simulation (same model, data, clients)", v, v >= 2, ">= 2x")
    ls = res.get("lockstep", {})
    for key, goal in (("fall-of-cc", 5), ("digits", 10)):
        if "speedup" in ls.get(key, {}):
            v = ls[key]["speedup"]
            add(f"lockstep {key} ({ls[key]['runs']} runs) vs one after another (wall)", v, v >= goal, f">= {goal}x")
            v = ls[key]["speedup_cpu_time"]
            add(f"lockstep {key} ({ls[key]['runs']} runs) vs one after another (CPU time)", v, v >= goal, f">= {goal}x")
            v = ls[key].get("speedup_bound")
            if v is not None:
                add(f"lockstep {key}: bound if unbatched phases were free", v, v >= goal, f">= {goal}x")
    sp = [v["speedup_vs_sequential"] for v in tr.values() if "speedup_vs_sequential" in v]
    if sp:
        add("never slower than sequential (min speedup, all workloads)", min(sp), min(sp) >= 1.0, ">= 1")
    ag = res.get("aggregators", {})
    for r in ("krum", "multi-krum"):
        og = ag.get(r, {}).get("over_gram", {}).get("n=100,d=1e6")
        if og is not None:
            add(f"{r} time / Gram GEMM time (n=100, d=1e6)", og, og <= 2, "<= 2")
    byz = [ag[r]["speedup_vs_byzfl"] for r in BYZFL_SECONDS if "speedup_vs_byzfl" in ag.get(r, {})]
    if len(byz) == len(BYZFL_SECONDS):
        gm = math.exp(sum(math.log(b) for b in byz) / len(byz))
        add("six rules vs ByzFL, geometric mean speedup", gm, gm >= 3, ">= 3")
    e2e = res.get("end_to_end", {})
    if "wall_seconds" in e2e:
        add("100-round Fashion-MNIST wall time (s)", e2e["wall_seconds"], e2e["wall_seconds"] < 180, "< 180")
    mem = res.get("memory", {})
    if "working_set_mb" in mem:
        add("1,000 clients x 1M params: peak RSS beyond U and the data (MB)", mem["working_set_mb"],
            mem["working_set_mb"] < 1024, "bounded (< 1 GB)")
    return rows


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0 or math.isnan(v):
            return f"{v:g}"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}"
    return str(v)


def to_markdown(res: dict[str, Any]) -> str:
    lines = [f"# fedarena bench ({'quick' if res['quick'] else 'full'})", "",
             f"{res['timestamp']} | {res['device']} | torch {res['torch']} | {res['threads']} threads | "
             f"GEMM peak {res['gemm']['gflops']:.1f} GFLOP/s (n={res['gemm']['size']}) | total {res['seconds']:.0f} s | "
             f"load average at start {res.get('load_average_start')}, at end {res.get('load_average_end')}", "",
             "## Local training (client-epochs/s; best of the repetitions, variants interleaved)", "",
             "| workload | params | clients | engine | sequential loop | batched bound | speedup vs sequential "
             "| fraction of batched bound | (channels-last bound) | engine GFLOP/s | fraction of GEMM peak | engine path "
             "| max abs diff |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for name, t in res.get("training", {}).items():
        if "skipped" in t:
            lines.append(f"| {name} | skipped: {t['skipped']} ||||||||||||")
            continue
        lines.append(f"| {name} | {t['params']:,} | {t['clients']} | {_fmt(t['engine']['client_epochs_per_s'])} | "
                     f"{_fmt(t['sequential']['client_epochs_per_s'])} | {_fmt(t['batched']['client_epochs_per_s'])} | "
                     f"{_fmt(t['speedup_vs_sequential'])} | {_fmt(t['fraction_of_batched_bound'])} | "
                     f"{_fmt(t.get('fraction_of_channels_last_bound'))} | "
                     f"{_fmt(t['engine_gflops'])} | {_fmt(t['fraction_of_gemm_peak'])} | {t['engine']['path']} | "
                     f"{t['max_abs_diff_vs_sequential']:.1e} |")
    ag, yard = res.get("aggregators", {}), res.get("yardsticks", {})
    if ag:
        keys = list(yard)
        lines += ["", "## Aggregators (seconds per call; reference speed-up in parentheses)", "",
                  "| rule | " + " | ".join(keys) + " | x Gram (largest) | vs ByzFL (n=100, d=1e6) |",
                  "|---|" + "---:|" * len(keys) + "---:|---:|"]
        for r, v in ag.items():
            cells = []
            for k in keys:
                s = v["seconds"].get(k)
                cells.append("-" if s is None else f"{s:.4f} ({_fmt(v['speedup'].get(k), 2)}x)")
            og = v.get("over_gram", {}).get(v.get("at"))
            lines.append(f"| {r} | " + " | ".join(cells) + f" | {_fmt(og, 2)} | {_fmt(v.get('speedup_vs_byzfl'), 2)} |")
        lines.append("| *mean (one memory pass)* | " + " | ".join(f"{yard[k]['mean_seconds']:.4f}" for k in keys) + " | | |")
        lines.append("| *Gram GEMM U U^T* | " + " | ".join(f"{yard[k]['gram_seconds']:.4f}" for k in keys) + " | | |")
        lines.append("| *reference pairwise loop* | " + " | ".join(f"{yard[k]['reference_pairwise_loop_seconds']:.3f}"
                                                                for k in keys) + " | | |")
        lines += ["", "f = n // 5 declared attackers; U ~ N(0, 1). References: NumPy median / sort, pairwise-loop "
                  "distances for Krum, Multi-Krum and Bulyan, per-client loops for RFA and CC, NumPy sign vote."]
    lines += _lockstep_markdown(res.get("lockstep")) + _flower_markdown(res.get("flower"))
    for title, key in (("End-to-end", "end_to_end"), ("Memory", "memory"),
                       ("AutoAdapt: constrained vs unconstrained epoch", "constrained_epoch")):
        sec = res.get(key)
        if sec:
            lines += ["", f"## {title}", ""] + [f"- {k}: {_fmt(v)}" for k, v in sec.items()]
    tg = res.get("targets", [])
    if tg:
        lines += ["", "## Targets", "", "| target | goal | measured | met |", "|---|---|---:|---|"]
        lines += [f"| {t['target']} | {t['goal']} | {_fmt(t['measured'])} | {_fmt(t['met'])} |" for t in tg]
    for note in res.get("notes", []):
        lines.append(f"\n> {note}")
    return "\n".join(lines) + "\n"


def _lockstep_markdown(ls: Optional[dict]) -> list[str]:
    if not ls:
        return []
    lines = ["", "## Lockstep (one run after another vs in lockstep, same process, alternating)", "",
             "| workload | runs x rounds | groups | one after another (s) | lockstep (s) | speed-up (wall) "
             "| speed-up (CPU time) | ms per run-round (after / lockstep) | max abs diff | GPU util % (after / lockstep) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for key in ("fall-of-cc", "digits"):
        w = ls.get(key)
        if not w:
            continue
        gpu = w.get("gpu_utilization_pct")
        gpu_s = f"{_fmt(gpu.get('sequential'))} / {_fmt(gpu.get('lockstep'))}" if gpu else "-"
        lines.append(f"| {key} | {w['runs']} x {'/'.join(str(r) for r in w['rounds'])} | {w['lockstep_groups']} | "
                     f"{w['sequential_seconds']:.1f} | {w['lockstep_seconds']:.1f} | **{w['speedup']:.2f}x** | "
                     f"{w['speedup_cpu_time']:.2f}x | "
                     f"{w['sequential_ms_per_run_round']:.1f} / {w['lockstep_ms_per_run_round']:.1f} | "
                     f"{w['max_abs_diff_final_metrics']:.1e} | {gpu_s} |")
    for key in ("fall-of-cc", "digits"):
        if ls.get(key, {}).get("workload"):
            lines.append(f"\n- {key}: {ls[key]['workload']}" + (f"; data: {ls[key]['data']}" if ls[key].get("data") else ""))
    if ls.get("process_startup_s") is not None:
        lines.append(f"- one process's start-up (import of the run stack): {ls['process_startup_s']:.2f} s, paid once per "
                     "run when runs are separate processes (not included above)")
    if any(ls.get(k, {}).get("phase_ms_per_run_round") for k in ("fall-of-cc", "digits")):
        from .run.lockstep import PHASES
        cols = ("setup",) + PHASES
        lines += ["", "### Where a run-round's time goes (ms per run-round, one after another / lockstep)", "",
                  "Training (b) and evaluation (d) are batched over runs; set-up, planning (a), concluding (c: "
                  "attack, defense, step, checks) and records are each run's own in both ways. `bound` is the "
                  "speed-up the lockstep would reach if everything but its batched phases cost nothing: one after "
                  "another's total over lockstep's training + evaluation.", "",
                  "| workload | " + " | ".join(cols) + " | bound |", "|---|" + "---:|" * (len(cols) + 1)]
        for key in ("fall-of-cc", "digits"):
            w = ls.get(key, {})
            ms = w.get("phase_ms_per_run_round")
            if not ms:
                continue
            cells = [f"{ms['sequential'].get(c, 0.0):.2f} / {ms['lockstep'].get(c, 0.0):.2f}" for c in cols]
            lines.append(f"| {key} | " + " | ".join(cells) + f" | {_fmt(w.get('speedup_bound'))}x |")
    return lines


def _flower_markdown(fl: Optional[dict]) -> list[str]:
    if not fl:
        return []
    if "skipped" in fl:
        return ["", "## Flower", "", f"skipped: {fl['skipped']}"]
    r = fl["client_epochs_per_s"]
    lines = ["", f"## Flower (flwr {fl['flwr']}, Ray, {fl['ray_actors']} actor(s)), alternating runs", "",
             fl["workload"], "", "| path | client-epochs/s |", "|---|---:|",
             f"| fedarena, vectorized | {_fmt(r['fedarena_vectorized'])} |",
             f"| fedarena, sequential | {_fmt(r['fedarena_sequential'])} |",
             f"| Flower simulation | {_fmt(r['flower'])} |", "",
             f"fedarena (vectorized) is {_fmt(fl['vectorized_over_flower'])}x Flower's simulation; sequential "
             f"{_fmt(fl['sequential_over_flower'])}x."]
    return lines


# ----------------------------------------------------------------------------- entry
def _loadavg() -> Optional[list[float]]:
    """1/5/15-minute load averages: how busy the machine was (other processes skew timings)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run_bench(quick: bool = False, out: Path | str = "benchmarks/results/latest", console=None, *,
              scale: str = "default", device: Optional[str] = None, data_root: Optional[str] = None,
              only: Optional[list[str]] = None) -> dict[str, Any]:
    """Run the benchmark; write ``out/bench.json`` and ``out/bench.md``; return the results.

    ``only``: the sections to run (of :data:`SECTIONS`; default all the plan has).

    ``device``: ``None`` uses CUDA when available, else the CPU. ``data_root``: where
    Fashion-MNIST lives for the end-to-end run (default ``$FEDARENA_DATA`` or the shared
    data folder when present); the run is skipped with a note when the files are absent.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    log = (lambda msg: console.print(msg, highlight=False)) if console is not None else None
    plan = make_plan(quick, scale)
    bad = [o for o in only or [] if o not in SECTIONS]
    if bad:
        from .errors import ConfigError

        raise ConfigError("--only", f"unknown section {bad[0]!r}", ", ".join(SECTIONS))
    want = (lambda sec: True) if not only else (lambda sec: sec in only)
    t_start = time.perf_counter()
    res: dict[str, Any] = {
        "quick": quick, "scale": scale, "timestamp": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "platform": platform.platform(), "load_average_start": _loadavg(), "notes": [],
    }
    if log:
        log("GEMM peak ...")
    res["gemm"] = gemm_peak(plan.gemm_size, dev)
    if log:
        log(f"  {res['gemm']['gflops']:.1f} GFLOP/s\nlocal training ...")
    res["training"] = {}
    for w in (plan.training if want("training") else []):
        r = bench_training(w, dev, w.reps or plan.reps, res["gemm"]["gflops"], log)
        res["training"][w.name] = r
        if "skipped" in r:
            res["notes"].append(f"training.{w.name} skipped: {r['skipped']}")
    if plan.memory and want("memory"):
        if log:
            log("memory: 1,000 clients x 1M parameters (a child process) ...")
        res["memory"] = bench_memory()
        if log:
            log(f"  {res['memory']}")
    if log and want("aggregators"):
        log("aggregators ...")
    res["aggregators"], res["yardsticks"] = (bench_aggregators(plan.agg_configs, dev, plan.reps, log)
                                             if want("aggregators") else ({}, {}))
    missing = [r for r in ROBUST_RULES if r not in res["aggregators"]] if want("aggregators") else []
    if missing:
        res["notes"].append("robust rules not registered, not measured: " + ", ".join(missing))
    if plan.lockstep != "off" and want("lockstep"):
        from .bench_lockstep import bench_lockstep

        if log:
            log("lockstep: runs one after another vs in lockstep ...")
        res["lockstep"] = bench_lockstep(plan.lockstep, dev, find_data_root(data_root), log)
    if plan.flower and want("flower"):
        from .bench_flower import bench_flower

        if log:
            log("flower: the LeNet workload through fedarena and Flower's simulation ...")
        res["flower"] = bench_flower(dev, log=log)
        if "skipped" in res["flower"]:
            res["notes"].append("flower skipped: " + res["flower"]["skipped"])
    if plan.end_to_end and want("end_to_end"):
        if log:
            log("end-to-end: 100 rounds of Fashion-MNIST ...")
        res["end_to_end"] = bench_end_to_end(data_root, dev, log=log)
        if "skipped" in res["end_to_end"]:
            res["notes"].append("end_to_end skipped: " + res["end_to_end"]["skipped"])
    elif not plan.end_to_end:
        res["notes"].append("quick run: resnet18, 10/100/1,000 clients, the memory round and the end-to-end run are "
                            "skipped (run without --quick)")
    if want("constrained_epoch"):
        if log:
            log("constrained (AutoAdapt) epoch vs unconstrained ...")
        res["constrained_epoch"] = bench_constrained(reps=2 if quick else 5)
    if only:
        res["notes"].append("sections run: " + ", ".join(only) + " (the others were not run; see the other result folders)")
    res["only"] = only
    res["targets"] = targets(res)
    res["seconds"] = time.perf_counter() - t_start
    res["load_average_end"] = _loadavg()
    (out / "bench.json").write_text(json.dumps(res, indent=2, default=str))
    (out / "bench.md").write_text(to_markdown(res))
    return res


__all__ = ["run_bench", "make_plan", "gemm_peak", "bench_training", "bench_aggregators", "bench_end_to_end", "bench_constrained",
           "bench_memory", "sequential_reference", "batched_bound", "to_markdown", "targets"]
