"""Split a training set among clients. Each partition returns one sorted index array per client.

Signature: ``partition(labels, num_clients, rng, **params) -> list[np.ndarray]``. The
arrays are disjoint (no sample is given to two clients). All partitions are deterministic
given ``rng`` (the run's partition stream), so runs that differ only in the attack or the
defense see the same split.

``data.partition`` picks one: ``iid``, ``dirichlet`` (``data.alpha``), ``shards``
(``data.classes_per_client``), ``dominant-class`` (``data.q``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..errors import ConfigError
from ..registry import PARTITIONS


def _check_clients(labels: np.ndarray, num_clients: int, per_client: int = 1) -> None:
    n = len(labels)
    if num_clients < 1 or num_clients * per_client > n:
        top = n // per_client
        raise ConfigError(
            "fl.num_clients",
            f"must be between 1 and {top} for a training set of {n} samples (got {num_clients})",
            f"1..{top}",
        )


@PARTITIONS.register("iid")
def iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random permutation cut into equal shares (the first ``N mod K`` clients get one more)."""
    _check_clients(labels, num_clients)
    return [np.sort(p) for p in np.array_split(rng.permutation(len(labels)), num_clients)]


@PARTITIONS.register("dirichlet")
def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    *,
    alpha: float = 0.5,
    min_size: int = 2,
    dirichlet_variant: Literal["per-class", "per-client"] = "per-class",
) -> list[np.ndarray]:
    """Label-skewed Dirichlet split: smaller ``alpha`` (``data.alpha``) gives more skewed clients.

    ``dirichlet_variant="per-class"`` (default; Hsu, Qi & Brown 2019, "Measuring the Effects of
    Non-Identical Data Distribution"): for each class c, draw ``p_c ~ Dir(alpha * 1_K)`` over
    the K clients and cut the class's shuffled samples at the cumulative proportions, so
    every sample is used and client sizes vary.

    ``dirichlet_variant="per-client"`` (the Fall-of-CC / ROP library's ``dirichlet_dist``, spec
    ``rop-centered-clipping.md`` section 1.4): draw one ``q_i ~ Dir(alpha * 1_C)`` per
    client; class c's samples go to clients in proportion ``q_ic / sum_j q_jc`` (rounded
    down); the leftovers are shuffled and handed out one at a time, cycling through the
    clients from the fewest samples up (our reading of "in chunks, first to the clients
    with the fewest samples").

    Both: redrawn until every client has at least ``min_size`` samples (at most 100 tries;
    then the smallest clients take samples from the largest).
    """
    if not alpha > 0:
        raise ConfigError("data.alpha", f"must be > 0 (got {alpha})", "alpha > 0, e.g. 0.5 or 1")
    if dirichlet_variant not in ("per-class", "per-client"):
        raise ConfigError("data.dirichlet_variant", f"unknown value {dirichlet_variant!r}", "per-class, per-client")
    _check_clients(labels, num_clients)
    if num_clients * min_size > len(labels):
        top = len(labels) // num_clients
        raise ConfigError(
            "data.min_size",
            f"{num_clients} clients of at least {min_size} samples need "
            f"{num_clients * min_size} samples; the training set has {len(labels)}",
            f"0..{top}",
        )
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    for _ in range(100):
        parts = _dirichlet_draw(by_class, num_clients, rng, alpha, dirichlet_variant)
        if min(len(p) for p in parts) >= min_size:
            break
    else:  # give the smallest clients samples from the largest
        for i in np.argsort([len(p) for p in parts]):
            while len(parts[i]) < min_size:
                big = int(np.argmax([len(p) for p in parts]))
                parts[i].append(parts[big].pop())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _dirichlet_draw(
    by_class: list[np.ndarray], k: int, rng: np.random.Generator, alpha: float, variant: str
) -> list[list[int]]:
    parts: list[list[int]] = [[] for _ in range(k)]
    if variant == "per-class":
        for idx in by_class:
            idx = rng.permutation(idx)
            q = rng.dirichlet(np.full(k, alpha))
            cuts = (np.cumsum(q)[:-1] * len(idx)).astype(int)
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].extend(chunk.tolist())
        return parts
    q = rng.dirichlet(np.full(len(by_class), alpha), size=k)  # (K, C): one class mix per client
    share = q / q.sum(0, keepdims=True)
    leftover: list[int] = []
    for c, idx in enumerate(by_class):
        idx = rng.permutation(idx)
        counts = np.floor(share[:, c] * len(idx)).astype(int)
        start = 0
        for i, m in enumerate(counts):
            parts[i].extend(idx[start : start + m].tolist())
            start += m
        leftover.extend(idx[start:].tolist())
    leftover = rng.permutation(np.asarray(leftover, dtype=np.int64)).tolist()
    order = np.argsort([len(p) for p in parts], kind="stable")
    for j, s in enumerate(leftover):
        parts[order[j % k]].append(s)
    return parts


@PARTITIONS.register("shards")
def shards(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator, *, classes_per_client: int = 2
) -> list[np.ndarray]:
    """Pathological non-IID (McMahan et al. 2017, Sec. 3): each client gets ``classes_per_client`` label shards.

    The label-sorted data are cut into ``K * classes_per_client`` shards that never cross a
    class boundary (class c gets ``s_c >= 1`` shards, ``s_c`` roughly proportional to its
    size: highest-averages allocation), and each client receives ``classes_per_client``
    random shards. A client therefore holds at most ``classes_per_client`` classes. With
    balanced classes and ``K * classes_per_client`` a multiple of C this is exactly
    McMahan et al.'s split (e.g. MNIST: 200 shards of 300 for 100 clients).
    """
    if classes_per_client < 1:
        raise ConfigError("data.classes_per_client", f"must be >= 1 (got {classes_per_client})", ">= 1")
    classes, counts = np.unique(labels, return_counts=True)
    total = num_clients * classes_per_client
    if total < len(classes):
        need = -(-len(classes) // num_clients)
        raise ConfigError(
            "data.classes_per_client",
            f"num_clients * classes_per_client = {total} shards cannot cover {len(classes)} classes",
            f">= {need} with {num_clients} clients",
        )
    if total > len(labels):
        raise ConfigError(
            "data.classes_per_client",
            f"num_clients * classes_per_client = {total} shards exceeds the {len(labels)} training samples",
            f"<= {len(labels) // num_clients}",
        )
    per_class = np.ones(len(classes), dtype=np.int64)
    for _ in range(total - len(classes)):  # highest averages: give the next shard to the class with the largest shards
        per_class[np.argmax(counts / per_class)] += 1
    pieces: list[np.ndarray] = []
    for c, s in zip(classes, per_class):
        pieces += np.array_split(np.flatnonzero(labels == c), int(s))
    assign = rng.permutation(len(pieces))
    return [
        np.sort(np.concatenate([pieces[j] for j in assign[i * classes_per_client : (i + 1) * classes_per_client]]))
        for i in range(num_clients)
    ]


@PARTITIONS.register("dominant-class")
def dominant_class(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    *,
    q: float = 0.5,
    q_rest: Literal["all", "others"] = "all",
) -> list[np.ndarray]:
    """AutoAdapt's "1-class non-IID" with ratio ``q`` (``data.q``): each client has a main class.

    Client i's main class is ``classes[i mod C]``; each client gets ``N // K`` samples.
    Default ``q_rest="all"`` (the spec's recommendation, ``autoadapt.md`` section 10 item 15,
    which matches the paper's footnote 12): each sample comes from the main class with
    probability q and otherwise from a uniformly chosen class (main included), so the main
    class's expected share is ``q + (1 - q) / C``, q = 0 is IID and q = 1 a single class.
    ``q_rest="others"``: the literal reading of the paper's sentence, exactly
    ``round(q * N/K)`` main-class samples and the rest uniformly from the other classes.

    Samples are drawn without replacement; when a class runs out (possible when K is not a
    multiple of C), the draw falls back to the class with the most samples left.
    """
    if not 0.0 <= q <= 1.0:
        raise ConfigError("data.q", f"must be in [0, 1] (got {q})", "0 <= q <= 1")
    if q_rest not in ("all", "others"):
        raise ConfigError("data.q_rest", f"unknown value {q_rest!r}", "all, others")
    _check_clients(labels, num_clients)
    classes = np.unique(labels)
    C = len(classes)
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in classes]
    per_client = len(labels) // num_clients
    parts = []
    for i in range(num_clients):
        main = i % C
        if q_rest == "all":
            p = np.full(C, (1.0 - q) / C)
            p[main] += q
            counts = rng.multinomial(per_client, p / p.sum())
        else:
            n_main = int(round(q * per_client)) if C > 1 else per_client
            others = np.delete(np.arange(C), main)
            counts = np.zeros(C, dtype=np.int64)
            counts[main] = n_main
            if C > 1:
                counts[others] = rng.multinomial(per_client - n_main, np.full(C - 1, 1.0 / (C - 1)))
        chosen: list[int] = []
        for c, m in enumerate(counts):
            take = min(int(m), len(pools[c]))
            chosen += pools[c][len(pools[c]) - take :]
            del pools[c][len(pools[c]) - take :]
            for _ in range(int(m) - take):  # class c ran out
                pool = max(pools, key=len)
                if pool:
                    chosen.append(pool.pop())
        parts.append(np.sort(np.asarray(chosen, dtype=np.int64)))
    return parts


@PARTITIONS.register("per-class-sample")
def per_class_sample(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator, *, per_class: int = 32
) -> list[np.ndarray]:
    """Each client draws ``per_class`` samples of every class (``data.per_class``), without
    replacement inside a client and independently across clients, so client datasets may
    overlap: the AutoAdapt paper's "2560 samples consisting of 256 samples randomly selected
    from each class" (20 x 2560 > 50,000 CIFAR-10 images; spec decision 16). The only
    partition whose shares are not disjoint."""
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    small = min(len(b) for b in by_class)
    if not 1 <= per_class <= small:
        raise ConfigError(
            "data.per_class",
            f"must be between 1 and the smallest class's size {small} (got {per_class})",
            f"1..{small}",
        )
    return [
        np.sort(np.concatenate([rng.choice(b, per_class, replace=False) for b in by_class])) for _ in range(num_clients)
    ]
