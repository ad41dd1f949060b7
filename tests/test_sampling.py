"""Participation schedules (run/sampling.py): the LeadFL spec's U1 (hypergeometric attacker
counts under uniform sampling) and U2 (the periodic schedule S2), counts, forced rounds."""

import numpy as np
import pytest
from scipy.stats import hypergeom

from fedarena.config import load_config
from fedarena.core.seeds import SeedStreams
from fedarena.errors import ConfigError
from fedarena.run.sampling import attacker_count, draw_cohort

N, M, K = 100, 25, 10
MAL = np.arange(M) * 4  # any fixed attacker set
IS_MAL = np.zeros(N, dtype=bool)
IS_MAL[MAL] = True


def counts_of(schedule: str, rounds: int, seed: int = 0, **kw) -> np.ndarray:
    streams = SeedStreams(seed)
    out = []
    for t in range(rounds):
        m = attacker_count(t, schedule, K, N, M, **kw)
        cohort = draw_cohort(streams.numpy("sampling", t), K, N, MAL, IS_MAL, m)
        assert len(np.unique(cohort)) == K
        out.append(int(IS_MAL[cohort].sum()))
    return np.asarray(out)


def test_u1_hypergeometric_table_values():
    """The spec's exact tail (its Sec. 1.3), from scipy's closed form."""
    rv = hypergeom(N, M, K)
    assert rv.sf(5) == pytest.approx(0.014493, abs=5e-7)  # P(X >= 6)
    assert rv.sf(4) == pytest.approx(0.067466, abs=5e-7)  # P(X >= 5)
    assert 1 - rv.cdf(5) ** 80 == pytest.approx(0.6890, abs=5e-5)
    assert 1 - rv.cdf(5) ** 40 == pytest.approx(0.4423, abs=5e-5)


def test_u1_uniform_sampler_matches_the_hypergeometric_pmf_and_tail():
    rounds = 20_000
    x = counts_of("uniform", rounds)
    rv = hypergeom(N, M, K)
    for k in range(8):
        p = rv.pmf(k)
        emp = float(np.mean(x == k))
        assert abs(emp - p) <= 4 * np.sqrt(p * (1 - p) / rounds) + 1e-9, (k, emp, p)
        tail = rv.sf(k - 1)
        emp_tail = float(np.mean(x >= k))
        assert abs(emp_tail - tail) <= 4 * np.sqrt(tail * (1 - tail) / rounds) + 1e-9, (k, emp_tail, tail)


def test_u2_periodic_schedule_s2_exact_for_80_rounds():
    x = counts_of("periodic", 80, period=10, spike_rounds=2, spike_malicious=6)
    want = np.array([6 if t % 10 in (0, 1) else 0 for t in range(80)])
    np.testing.assert_array_equal(x, want)


def test_counts_schedule_is_cyclic_and_forced_rounds_override():
    x = counts_of("counts", 6, counts=[0, 3, 7])
    np.testing.assert_array_equal(x, [0, 3, 7, 0, 3, 7])
    y = counts_of("uniform", 14, forced_rounds=[0, 10, 12], forced_malicious=5)
    assert y[0] == y[10] == y[12] == 5


def test_count_is_clipped_to_the_populations():
    assert attacker_count(0, "counts", 10, 100, 3, counts=[9]) == 3  # only 3 attackers exist
    assert attacker_count(0, "counts", 10, 12, 5, counts=[0]) == 3  # only 7 benign clients exist


def test_cohorts_are_paired_across_defenses():
    from fedarena.run.simulation import Simulation

    base = [
        "fl.num_clients=20",
        "fl.clients_per_round=10",
        "fl.sampling=periodic",
        "fl.rounds=4",
        "attack.name=backdoor",
        "attack.num_malicious=6",
    ]
    a = Simulation(load_config(None, base))
    b = Simulation(load_config(None, base + ["defense.name=median"]))
    for t in range(4):
        np.testing.assert_array_equal(a.sample_clients(t), b.sample_clients(t))
        assert int(a.is_malicious[a.sample_clients(t)].sum()) == (6 if t < 2 else 0)


def test_counts_schedule_needs_its_list():
    with pytest.raises(ConfigError, match="fl.malicious_counts"):
        load_config(None, ["fl.sampling=counts"])
