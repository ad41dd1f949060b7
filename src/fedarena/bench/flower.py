"""``fedarena bench``, section ``flower``: fedarena vs Flower's simulation on one workload.

The same LeNet (fedarena's ``cnn``, 44,426 parameters), the same synthetic 28x28 data
(100 clients x 600 samples), 10 of 100 clients per round, batch 32, one local epoch,
plain SGD, FedAvg. Three paths, run alternately:

* ``fedarena_vectorized``: a :class:`~fedarena.run.simulation.Simulation` (the engine's
  vectorized local training);
* ``fedarena_sequential``: the same with ``fl.vectorize=false`` (one client after another);
* ``flower``: Flower's Ray simulation (``flwr.simulation.start_simulation``), one actor
  per CPU thread the bench uses, each client a ``NumPyClient`` training the LeNet with
  ``torch.optim.SGD``.

Each path's rate is client-epochs per second over the rounds after the first (timed
from the end of round 1 to the end of the last round), so start-up (Ray, actors, data)
is not counted for any of them. Skipped when ``flwr`` or ``ray`` is not installed
(``pip install "fedarena[flower]"``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from typing import Any, Optional

import numpy as np
import torch

CLIENTS, PER_ROUND, SAMPLES, BATCH = 100, 10, 600, 32


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 28x28 images in [0, 1] and labels, the same for every path."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(CLIENTS * SAMPLES, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (CLIENTS * SAMPLES,), generator=g)
    return x, y


def _fedarena(x: torch.Tensor, y: torch.Tensor, rounds: int, vectorize: bool, device: str) -> list[float]:
    """Round end times (perf_counter) of a Simulation on the shared tensors."""
    from ..config import from_tree
    from ..data.datasets import TensorDataset
    from ..run.simulation import Simulation

    data = TensorDataset("bench-synthetic", x, y, x[:200], y[:200], 10)
    cfg = from_tree(
        {
            "name": "bench-flower",
            "seed": 0,
            "model": {"name": "cnn"},
            "data": {"dataset": "synthetic"},
            "fl": {
                "num_clients": CLIENTS,
                "clients_per_round": PER_ROUND,
                "rounds": rounds,
                "batch_size": BATCH,
                "local_epochs": 1,
                "lr": 0.01,
                "vectorize": vectorize,
                "device": device,
            },
            "eval": {"every": 10**6},
        }
    )
    sim = Simulation(cfg, data=data)
    ends: list[float] = []
    sim.run(progress=lambda t, ev: ends.append(time.perf_counter()))
    return ends


def _flower(x: torch.Tensor, y: torch.Tensor, rounds: int, actors: int) -> list[float]:
    """Round end times of Flower's legacy Ray simulation on the same data and model."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    import flwr
    from flwr.server.strategy import FedAvg

    from ..models.simple import LeNet

    xs, ys = x.numpy(), y.numpy()
    torch.manual_seed(0)
    init = [p.detach().numpy().copy() for p in LeNet((1, 28, 28), 10).state_dict().values()]

    class Client(flwr.client.NumPyClient):
        def __init__(self, cid: int):
            self.cid = cid

        def fit(self, parameters, config):
            torch.set_num_threads(1)
            model = LeNet((1, 28, 28), 10)
            model.load_state_dict({k: torch.from_numpy(v) for k, v in zip(model.state_dict(), parameters)})
            lo = self.cid * SAMPLES
            cx, cy = torch.from_numpy(xs[lo : lo + SAMPLES]), torch.from_numpy(ys[lo : lo + SAMPLES])
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            perm = torch.from_numpy(np.random.default_rng(self.cid).permutation(SAMPLES))
            for i in range(0, SAMPLES, BATCH):
                b = perm[i : i + BATCH]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(cx[b]), cy[b]).backward()
                opt.step()
            return [v.detach().numpy() for v in model.state_dict().values()], SAMPLES, {}

    def client_fn(context):
        cid = int(context.node_config["partition-id"]) if hasattr(context, "node_config") else int(context)
        return Client(cid).to_client()

    ends: list[float] = []

    class Timed(FedAvg):
        def aggregate_fit(self, server_round, results, failures):
            out = super().aggregate_fit(server_round, results, failures)
            ends.append(time.perf_counter())
            return out

    strategy = Timed(
        fraction_fit=PER_ROUND / CLIENTS,
        fraction_evaluate=0.0,
        min_fit_clients=PER_ROUND,
        min_evaluate_clients=0,
        min_available_clients=CLIENTS,
        initial_parameters=flwr.common.ndarrays_to_parameters(init),
    )
    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
    flwr.simulation.start_simulation(
        client_fn=client_fn,
        num_clients=CLIENTS,
        config=flwr.server.ServerConfig(num_rounds=rounds),
        strategy=strategy,
        client_resources={"num_cpus": 1, "num_gpus": 0.0},
        ray_init_args={
            "num_cpus": actors,
            "include_dashboard": False,
            "ignore_reinit_error": True,
            "log_to_driver": False,
        },
    )
    return ends


def _rate(ends: list[float]) -> Optional[float]:
    """Client-epochs per second from round 2 to the last round."""
    if len(ends) < 2 or ends[-1] <= ends[0]:
        return None
    return PER_ROUND * (len(ends) - 1) / (ends[-1] - ends[0])


def bench_flower(device: torch.device, rounds: int = 4, reps: int = 2, log=None) -> dict[str, Any]:
    """The ``flower`` section (skipped with a note when flwr or ray is missing)."""
    missing = [m for m in ("flwr", "ray") if importlib.util.find_spec(m) is None]
    if missing:
        return {"skipped": f'{" and ".join(missing)} not installed (pip install "fedarena[flower]")'}
    import flwr

    x, y = _data()
    actors = max(1, torch.get_num_threads())
    rates: dict[str, list[float]] = {"fedarena_vectorized": [], "fedarena_sequential": [], "flower": []}
    notes = []
    for rep in range(reps):
        for key in rates:
            try:
                if key == "flower":
                    ends = _flower(x, y, rounds, actors)
                else:
                    ends = _fedarena(x, y, rounds, key == "fedarena_vectorized", device.type)
            except Exception as e:  # noqa: BLE001 - a failing peer is reported, not fatal
                notes.append(f"{key}: {type(e).__name__}: {e}")
                continue
            r = _rate(ends)
            if r is not None:
                rates[key].append(r)
            if log:
                log(f"  {key} (rep {rep + 1}/{reps}): {r if r is None else round(r, 1)} client-epochs/s")
    best = {k: (max(v) if v else None) for k, v in rates.items()}
    out: dict[str, Any] = {
        "workload": f"LeNet (cnn), synthetic 1x28x28, {CLIENTS} clients x {SAMPLES} samples, {PER_ROUND} per round, "
        f"batch {BATCH}, 1 epoch, SGD lr 0.01, {rounds} rounds (rate from round 2 on)",
        "flwr": flwr.__version__,
        "ray_actors": actors,
        "client_epochs_per_s": best,
        "all_rates": rates,
        "vectorized_over_flower": (
            best["fedarena_vectorized"] / best["flower"] if best["fedarena_vectorized"] and best["flower"] else None
        ),
        "sequential_over_flower": (
            best["fedarena_sequential"] / best["flower"] if best["fedarena_sequential"] and best["flower"] else None
        ),
    }
    if notes:
        out["notes"] = notes
    return out


__all__ = ["bench_flower"]
