"""``fedarena bench``, section ``memory``: peak resident memory of one round of 1,000
clients of a 1M-parameter MLP, measured in a fresh child process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch


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

    from ..core.local import BatchSchedule, auto_chunk_size, train_vectorized
    from ..core.recipe import TrainRecipe
    from ..models.simple import MLP

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
    return {
        "clients": clients,
        "params": d,
        "chunk_size": auto_chunk_size(d, 32, 784),
        "update_matrix_mb": u_mb,
        "rss_before_mb": before,
        "peak_rss_mb": peak,
        "working_set_mb": peak - before - u_mb,
        "seconds": wall,
        "finite": bool(torch.isfinite(U).all()),
    }


def bench_memory(clients: int = 1000, hidden: tuple[int, ...] = (1024, 256)) -> dict[str, Any]:
    code = (
        "import json, torch; torch.set_num_threads(%d); from fedarena.bench.memory import memory_child; "
        "print(json.dumps(memory_child(%d, %r)))" % (torch.get_num_threads(), clients, tuple(hidden))
    )
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return {"skipped": "timed out after 900 s"}
    if res.returncode != 0:
        return {
            "skipped": f"child failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}"
        }
    return json.loads(res.stdout.strip().splitlines()[-1])


__all__ = ["bench_memory", "memory_child"]
