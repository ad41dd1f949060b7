"""``fedarena bench``, section ``end_to_end``: 100 rounds of Fashion-MNIST through the
Simulation (skipped with a note when the data files are absent).
"""

from __future__ import annotations

import time
from typing import Any, Optional

import torch


def find_data_root(data_root: Optional[str]) -> Optional[str]:
    """``data_root``, else the first of ``$FEDARENA_DATA``, ``../shared/data`` and the cache
    that holds Fashion-MNIST (:func:`fedarena.reproduce.quick.find_fashion_mnist`)."""
    from ..reproduce.quick import find_fashion_mnist

    return data_root or find_fashion_mnist()


def bench_end_to_end(data_root: Optional[str], device: torch.device, rounds: int = 100, log=None) -> dict[str, Any]:
    from ..config import from_tree
    from ..errors import ConfigError, DataNotFoundError
    from ..run.simulation import Simulation

    root = find_data_root(data_root)
    tree = {
        "name": "bench-fmnist",
        "seed": 0,
        "data": {"dataset": "fashion-mnist", "root": root, "download": False},
        "model": {"name": "cnn"},
        "fl": {
            "num_clients": 100,
            "clients_per_round": 10,
            "rounds": rounds,
            "local_epochs": 1,
            "batch_size": 32,
            "device": device.type,
        },
        "defense": {"name": "fedavg"},
        "eval": {"every": 10},
    }
    try:
        t = time.perf_counter()
        sim = Simulation(from_tree(tree))
        setup = time.perf_counter() - t
    except (ConfigError, DataNotFoundError) as e:
        return {"skipped": f"Fashion-MNIST not available ({e}); pass data.root"}
    result = sim.run()
    wall = result.summary["wall_time_s"]
    out = {
        "rounds": rounds,
        "clients": 100,
        "clients_per_round": 10,
        "model": "cnn",
        "defense": "fedavg",
        "eval_every": 10,
        "setup_seconds": setup,
        "wall_seconds": wall,
        "rounds_per_s": rounds / wall,
        "final_main_acc": result.summary.get("final_main_acc"),
        "data_root": root,
    }
    if log:
        log(f"  {rounds} rounds in {wall:.1f} s ({rounds / wall:.2f} rounds/s), accuracy {out['final_main_acc']}")
    return out


__all__ = ["bench_end_to_end", "find_data_root"]
