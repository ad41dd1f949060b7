"""Split a training set among clients. Each partition returns one index array per client.

All partitions are deterministic given the ``rng`` (the run's partition stream), so
runs that differ only in the attack or defense see the same split.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..registry import PARTITIONS


@PARTITIONS.register("iid")
def iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random permutation cut into equal shares (the first ``N mod K`` clients get one more)."""
    return [np.sort(p) for p in np.array_split(rng.permutation(len(labels)), num_clients)]


@PARTITIONS.register("dirichlet")
def dirichlet(labels: np.ndarray, num_clients: int, rng: np.random.Generator, *, alpha: float = 0.5, min_size: int = 2) -> list[np.ndarray]:
    """Per-class Dirichlet split (Hsu et al. 2019): class c goes to clients in proportions
    ``q_c ~ Dir(alpha * 1_K)``. Redrawn until every client has at least ``min_size`` samples
    (at most 100 tries, then the smallest clients get samples from the largest)."""
    if alpha <= 0:
        raise ConfigError("data.alpha", f"must be > 0 (got {alpha})", "alpha > 0, e.g. 0.5 or 1")
    classes = np.unique(labels)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            q = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(q)[:-1] * len(idx)).astype(int)
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            break
    else:  # give the smallest clients samples from the largest
        for i in np.argsort([len(p) for p in parts]):
            while len(parts[i]) < min_size:
                big = int(np.argmax([len(p) for p in parts]))
                parts[i].append(parts[big].pop())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


@PARTITIONS.register("shards")
def shards(labels: np.ndarray, num_clients: int, rng: np.random.Generator, *, classes_per_client: int = 2) -> list[np.ndarray]:
    """Pathological non-IID (McMahan et al. 2017): sort by label, cut into
    ``num_clients * classes_per_client`` shards, give each client ``classes_per_client``
    random shards."""
    if classes_per_client < 1:
        raise ConfigError("data.classes_per_client", f"must be >= 1 (got {classes_per_client})", ">= 1")
    order = np.argsort(labels, kind="stable")
    pieces = np.array_split(order, num_clients * classes_per_client)
    assign = rng.permutation(len(pieces))
    return [
        np.sort(np.concatenate([pieces[j] for j in assign[i * classes_per_client : (i + 1) * classes_per_client]]))
        for i in range(num_clients)
    ]


@PARTITIONS.register("dominant-class")
def dominant_class(labels: np.ndarray, num_clients: int, rng: np.random.Generator, *, q: float = 0.5) -> list[np.ndarray]:
    """AutoAdapt's non-IID: client i's main class is ``i mod C``; a share ``q`` of its samples
    comes from that class and the rest uniformly from the other classes. Each client gets
    ``N // K`` samples, drawn without replacement while a class has samples left."""
    if not 0.0 <= q <= 1.0:
        raise ConfigError("data.q", f"must be in [0, 1] (got {q})", "0 <= q <= 1")
    classes = np.unique(labels)
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in classes}
    per_client = len(labels) // num_clients
    parts = []
    for i in range(num_clients):
        main = classes[i % len(classes)]
        n_main = int(round(q * per_client))
        others = [c for c in classes if c != main]
        draws = [main] * n_main + list(rng.choice(others, size=per_client - n_main)) if others else [main] * per_client
        chosen = []
        for c in draws:
            pool = pools[c] if pools[c] else max(pools.values(), key=len)
            if pool:
                chosen.append(pool.pop())
        parts.append(np.sort(np.asarray(chosen, dtype=np.int64)))
    return parts
