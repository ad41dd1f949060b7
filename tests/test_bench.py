"""`fedarena bench`: output format of a reduced quick run, and its hand-written references.

The speed itself is measured in benchmarks/, not asserted here.
"""

import json

import numpy as np
import pytest
import torch

from fedarena import bench


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    res = bench.run_bench(quick=True, out=out, console=None, scale="tiny")
    return out, res


def test_writes_json_and_markdown_with_the_issue_keys(tiny):
    out, res = tiny
    data = json.loads((out / "bench.json").read_text())
    for name in ("mlp-digits", "cnn-fmnist"):
        t = data["training"][name]
        for variant in ("engine", "sequential", "batched"):
            assert t[variant]["client_epochs_per_s"] > 0
        assert t["speedup_vs_sequential"] == pytest.approx(
            t["engine"]["client_epochs_per_s"] / t["sequential"]["client_epochs_per_s"]
        )
        assert t["fraction_of_batched_bound"] == pytest.approx(
            t["engine"]["client_epochs_per_s"] / t["batched"]["client_epochs_per_s"]
        )
        assert 0 < t["fraction_of_gemm_peak"]
        # the engine trains exactly what the plain torch.optim loop trains
        assert t["max_abs_diff_vs_sequential"] < 1e-5
    assert data["gemm"]["gflops"] > 0
    for rule in ("median", "krum", "trimmed-mean"):  # a missing rule is a failure, not a skip
        assert data["aggregators"][rule]["speedup_vs_reference"] > 0
    assert data["yardsticks"]["n=25,d=1e4"]["gram_seconds"] > 0
    md = (out / "bench.md").read_text()
    assert "| mlp-digits |" in md and "## Aggregators" in md and "## Targets" in md


def test_flops_of_an_mlp_match_the_hand_count():
    """64-64-10 MLP: forward 2*(64*64 + 64*10) per sample; backward 2x that minus the
    first layer's input gradient (inputs need no gradient)."""
    from fedarena.models.simple import MLP

    model = MLP((1, 8, 8), 10)
    fwd = 2 * (64 * 64 + 64 * 10)
    bwd = 2 * (64 * 64) + 2 * 2 * (64 * 10)  # layer 1: weight grad only; layer 2: weight + input grads
    assert bench.flops_per_sample(model, (1, 8, 8), 8, torch.device("cpu")) == fwd + bwd


def test_references_on_a_hand_example():
    A = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0], [0.2, 0.1]], dtype=np.float32)
    D = bench.pairwise_loop(A)
    assert D[0, 3] == 200.0 and D[1, 2] == 2.0
    # f=1: scores sum the n-f-2 = 2 nearest squared distances: row 4 -> 0.05 + 0.65 = 0.7, the lowest
    assert np.allclose(bench.ref_krum(A, 1, D), [0.2, 0.1])
    assert np.allclose(bench.references(1)["median"][0](A, D), [0.2, 0.1])
    assert np.allclose(bench.references(1)["trimmed-mean"][0](A, D), [0.4, 1.1 / 3])
    # centered clipping from 0 with tau = 1: rows with norm > 1 are scaled to norm 1
    v = bench.ref_cc(A)
    expect = (A[1] + A[2] + A[3] / np.linalg.norm(A[3]) + A[4]) / 5
    assert np.allclose(v, expect, atol=1e-6)


def test_cli_bench_passes_quick_and_out(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from fedarena.cli import app

    seen = {}
    monkeypatch.setattr(
        bench, "run_bench", lambda quick, out, console, only: seen.update(quick=quick, out=out, only=only)
    )
    res = CliRunner().invoke(app, ["bench", "--quick", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert seen == {"quick": True, "out": tmp_path, "only": None}
    res = CliRunner().invoke(app, ["bench", "--only", "lockstep, flower", "--out", str(tmp_path)])
    assert res.exit_code == 0 and seen["only"] == ["lockstep", "flower"]


def test_constrained_epoch_cost():
    r = bench.bench_constrained(reps=1, samples=32)
    assert set(r["constrained_over_unconstrained"]) == {"cos/whole", "cos+l2/layers"}
    assert all(v > 0 for v in r["constrained_over_unconstrained"].values())


def test_lockstep_section_compares_both_ways(tiny):
    out, res = tiny
    data = json.loads((out / "bench.json").read_text())
    for key in ("fall-of-cc", "digits"):
        w = data["lockstep"][key]
        assert w["speedup"] == pytest.approx(w["sequential_seconds"] / w["lockstep_seconds"])
        assert w["statuses_equal"] and w["max_abs_diff_final_metrics"] < 1e-4
        ms = w["phase_ms_per_run_round"]
        for way, wall in (
            ("sequential", w["sequential_ms_per_run_round"]),
            ("lockstep", w["lockstep_ms_per_run_round"]),
        ):
            assert set(ms[way]) == {"setup", "plan", "train", "conclude", "evaluate", "records"}
            assert 0 < sum(ms[way].values()) <= wall * 1.001  # the phases lie inside the way's wall time
        # the lockstep's total holds its train + evaluate, so the bound is never below the speed-up
        assert w["speedup_bound"] == pytest.approx(
            w["sequential_ms_per_run_round"] / (ms["lockstep"]["train"] + ms["lockstep"]["evaluate"])
        )
        assert w["speedup_bound"] >= w["speedup"] * 0.999
    md = (out / "bench.md").read_text()
    assert "## Lockstep" in md and "### Where a run-round's time goes" in md
