"""The bench's sections that the quick run leaves out (memory, end-to-end, Flower), each
played once at a tiny size: they run, and their results carry the keys bench.md reads.
The speed itself is measured in benchmarks/, not asserted here."""

import math

import pytest
import torch

from fedarena.bench.end_to_end import bench_end_to_end, find_data_root
from fedarena.bench.flower import bench_flower
from fedarena.bench.memory import bench_memory


def test_memory_section_runs_its_child_process():
    r = bench_memory(clients=4, hidden=(16,))
    assert "skipped" not in r, r
    assert r["clients"] == 4 and r["finite"] and r["params"] == 784 * 16 + 16 + 16 * 10 + 10
    assert r["update_matrix_mb"] == pytest.approx(4 * r["params"] * 4 / 2**20)
    assert r["peak_rss_mb"] >= r["rss_before_mb"] > 0


def test_end_to_end_section_plays_fashion_mnist_or_says_why_not(tmp_path):
    root = find_data_root(None)
    r = bench_end_to_end(root or str(tmp_path), torch.device("cpu"), rounds=2)
    if root is None:
        assert "Fashion-MNIST not available" in r["skipped"]
        return
    assert r["rounds"] == 2 and r["rounds_per_s"] > 0 and 0 <= r["final_main_acc"] <= 1


def test_flower_section_compares_fedarena_with_flower():
    pytest.importorskip("flwr", reason="Flower is not installed (pip install 'fedarena[flower]')")
    pytest.importorskip("ray", reason="Ray is not installed")
    r = bench_flower(torch.device("cpu"), rounds=3, reps=1)
    assert not r.get("notes"), r["notes"]  # neither way failed
    rates = r["client_epochs_per_s"]
    assert all(rates[k] is not None and rates[k] > 0 and math.isfinite(rates[k]) for k in rates), rates
    assert r["vectorized_over_flower"] == pytest.approx(rates["fedarena_vectorized"] / rates["flower"])
