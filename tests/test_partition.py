"""Partitions: sizes, disjointness, class mix, determinism, parameter errors."""

import numpy as np
import pytest

from fedarena.data.partition import dirichlet, dominant_class, iid, shards
from fedarena.errors import ConfigError
from fedarena.registry import PARTITIONS

LABELS = np.repeat(np.arange(10), 100)  # 1,000 samples, 100 per class
UNEVEN = np.concatenate([np.full(n, c) for c, n in enumerate([130, 70, 100, 100, 55, 145, 100, 100, 90, 110])])

CASES = [
    (iid, {}),
    (dirichlet, {"alpha": 0.5}),
    (dirichlet, {"alpha": 0.5, "dirichlet_variant": "per-client"}),
    (shards, {"classes_per_client": 2}),
    (dominant_class, {"q": 0.5}),
    (dominant_class, {"q": 0.5, "q_rest": "others"}),
]


def _check_disjoint(parts, n):
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx)  # no sample twice
    assert allidx.min() >= 0 and allidx.max() < n
    assert all(np.all(np.diff(p) > 0) for p in parts)  # sorted


@pytest.mark.parametrize("labels", [LABELS, UNEVEN], ids=["balanced", "uneven"])
@pytest.mark.parametrize("fn,kw", CASES, ids=lambda c: getattr(c, "__name__", None) or str(c))
def test_sizes_disjoint_deterministic(fn, kw, labels):
    parts = fn(labels, 20, np.random.default_rng(7), **kw)
    assert len(parts) == 20
    _check_disjoint(parts, len(labels))
    total = sum(len(p) for p in parts)
    if fn is dominant_class:
        assert all(len(p) == len(labels) // 20 for p in parts)
    else:
        assert total == len(labels)
    again = fn(labels, 20, np.random.default_rng(7), **kw)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = fn(labels, 20, np.random.default_rng(8), **kw)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_iid_equal_sizes():
    parts = iid(LABELS, 7, np.random.default_rng(0))
    assert [len(p) for p in parts] == [143] * 6 + [142]  # 1000 = 6*143 + 142


@pytest.mark.parametrize("labels", [LABELS, UNEVEN], ids=["balanced", "uneven"])
@pytest.mark.parametrize("cpc", [1, 2, 3])
def test_shards_class_limit(cpc, labels):
    parts = shards(labels, 20, np.random.default_rng(0), classes_per_client=cpc)
    assert all(len(np.unique(labels[p])) <= cpc for p in parts)
    assert sum(len(p) for p in parts) == len(labels)


def test_shards_mcmahan_sizes():
    # 10 balanced classes, 20 clients x 2 shards = 40 shards of 25: every client holds 50 samples
    parts = shards(LABELS, 20, np.random.default_rng(0), classes_per_client=2)
    assert [len(p) for p in parts] == [50] * 20


def test_dominant_class_share():
    y = np.repeat(np.arange(10), 600)
    for q in (0.0, 0.5, 0.8, 1.0):
        parts = dominant_class(y, 20, np.random.default_rng(1), q=q)
        share = np.mean([np.mean(y[p] == i % 10) for i, p in enumerate(parts)])
        # spec rule: main class with probability q, else uniform over all 10 classes
        assert share == pytest.approx(q + (1 - q) / 10, abs=0.02)
    parts = dominant_class(y, 20, np.random.default_rng(1), q=1.0)
    assert all(set(np.unique(y[p])) == {i % 10} for i, p in enumerate(parts))
    # literal variant: exactly q of the samples from the main class (no class runs out here)
    parts = dominant_class(y, 10, np.random.default_rng(1), q=0.5, q_rest="others")
    shares = [np.mean(y[p] == i) for i, p in enumerate(parts)]
    assert np.mean(shares) == pytest.approx(0.5, abs=0.02)


def _mean_max_share(parts, labels):
    return np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in parts])


@pytest.mark.parametrize("variant", ["per-class", "per-client"])
def test_dirichlet_alpha_controls_skew(variant):
    y = np.repeat(np.arange(10), 300)
    skewed = _mean_max_share(dirichlet(y, 10, np.random.default_rng(0), alpha=0.05, dirichlet_variant=variant), y)
    flat = _mean_max_share(dirichlet(y, 10, np.random.default_rng(0), alpha=100.0, dirichlet_variant=variant), y)
    assert skewed > 0.45  # IID would give about 0.1-0.15
    assert flat < 0.2  # close to the IID 0.1 (+ sampling noise)


def test_dirichlet_min_size():
    parts = dirichlet(LABELS, 50, np.random.default_rng(0), alpha=0.01, min_size=5)
    assert min(len(p) for p in parts) >= 5
    _check_disjoint(parts, len(LABELS))


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda: dirichlet(LABELS, 4, np.random.default_rng(0), alpha=0.0), "data.alpha"),
        (lambda: dirichlet(LABELS, 4, np.random.default_rng(0), dirichlet_variant="lib"), "data.dirichlet_variant"),
        (lambda: shards(LABELS, 4, np.random.default_rng(0), classes_per_client=0), "data.classes_per_client"),
        (lambda: shards(LABELS, 4, np.random.default_rng(0), classes_per_client=2), "data.classes_per_client"),
        (lambda: dominant_class(LABELS, 4, np.random.default_rng(0), q=1.5), "data.q"),
        (lambda: iid(LABELS, 1001, np.random.default_rng(0)), "fl.num_clients"),
    ],
)
def test_bad_params_one_line(call, field):
    with pytest.raises(ConfigError) as e:
        call()
    msg = str(e.value)
    assert msg.startswith(field + ": ") and "\n" not in msg and "(valid: " in msg


def test_registry_names():
    assert set(PARTITIONS.names()) >= {"iid", "dirichlet", "shards", "dominant-class"}
