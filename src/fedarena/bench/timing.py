"""Timing for ``fedarena bench``: wall seconds of a call (the device synchronized before
and after) and the measured GEMM peak.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def gemm_peak(size: int, device: torch.device, reps: int = 5) -> dict[str, float]:
    """Best GFLOP/s of a square float32 matrix product (``2 n^3`` FLOPs)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device)
    b = torch.randn(size, size, generator=g).to(device)
    torch.mm(a, b)
    best = min(timed(lambda: torch.mm(a, b), device)[0] for _ in range(reps))
    return {"size": size, "seconds": best, "gflops": 2 * size**3 / best / 1e9}


__all__ = ["gemm_peak", "sync", "timed"]
