"""fedarena report: CI, leaderboard, detection metrics (hand-made run folders) and an
end-to-end report on a small sweep (PNGs and one self-contained HTML page)."""

import json
import math
import re

import pytest
import yaml
from typer.testing import CliRunner

from fedarena.cli import app
from fedarena.studies.report import build_report, mean_ci
from fedarena.studies.spec import SweepSpec
from fedarena.studies.sweep import run_sweep

runner = CliRunner()


def test_mean_ci_student_t():
    m, h = mean_ci([0.8, 0.9])
    assert m == pytest.approx(0.85)
    assert h == pytest.approx(12.7062047 * 0.0707106781 / math.sqrt(2), rel=1e-6)  # t(0.975, 1) * sd / sqrt(n)
    assert math.isnan(mean_ci([0.5])[1]) and math.isnan(mean_ci([])[0])


def _fake_run(root, name, attack, defense, seed, ma, ba, clients, status="ok"):
    d = root / name
    d.mkdir(parents=True)
    cfg = {
        "seed": seed,
        "data": {"dataset": "digits"},
        "fl": {"num_clients": 3, "rounds": 1},
        "attack": {"name": attack, "num_malicious": 1 if attack != "none" else 0},
        "defense": {"name": defense},
    }
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "summary.json").write_text(
        json.dumps({"final_main_acc": ma, "final_backdoor_acc": ba, "status": status, "num_classes": 10})
    )
    (d / "metrics.jsonl").write_text(json.dumps({"round": 0, "main_acc": ma, "backdoor_acc": ba}) + "\n")
    (d / "clients.jsonl").write_text("".join(json.dumps(c) + "\n" for c in clients))


def test_leaderboard_worst_case_and_detection_by_hand(tmp_path):
    ok = {"accepted": True}
    no = {"accepted": False}

    def cl(r, c, attacking, dec):
        return {"round": r, "client": c, "malicious": attacking, "attacking": attacking, **dec}

    # krum: round 0 has an attacker (client 2, rejected) and rejects benign client 1 too; round 1 has no attacker
    # and rejects client 0. TP=1, FP=2, FN=0, TN=3 -> precision 1/3, recall 1, FPR 2/5; no-attack-round FPR 1/3.
    krum_clients = [
        cl(0, 0, False, ok),
        cl(0, 1, False, no),
        cl(0, 2, True, no),
        cl(1, 0, False, no),
        cl(1, 1, False, ok),
        cl(1, 2, False, ok),
    ]
    for seed, (ma_bd, ba_bd, ma_lf) in enumerate([(0.80, 0.10, 0.70), (0.90, 0.30, 0.60)]):
        _fake_run(tmp_path, f"k-none-{seed}", "none", "krum", seed, 0.95, None, krum_clients)
        _fake_run(tmp_path, f"k-bd-{seed}", "backdoor", "krum", seed, ma_bd, ba_bd, krum_clients)
        _fake_run(tmp_path, f"k-lf-{seed}", "label-flip", "krum", seed, ma_lf, None, krum_clients)
        _fake_run(tmp_path, f"m-bd-{seed}", "backdoor", "median", seed, 0.9, 0.5, [cl(0, 0, True, {})])
        _fake_run(
            tmp_path,
            f"m-lf-{seed}",
            "label-flip",
            "median",
            seed,
            0.5,
            None,
            [cl(0, 0, True, {})],
            status="diverged" if seed else "ok",
        )
    parts = build_report([tmp_path], tmp_path / "rep")
    lb = parts["settings"][0]["leaderboard"].set_index("defense")
    # krum MA under attack per seed: mean(0.8, 0.7) = 0.75, mean(0.9, 0.6) = 0.75
    assert lb.loc["krum", "ma"] == pytest.approx(0.75) and lb.loc["krum", "ma_ci"] == pytest.approx(0.0)
    assert lb.loc["krum", "worst_ma"] == pytest.approx(0.65) and lb.loc["krum", "worst_ma_attack"] == "label-flip"
    assert lb.loc["krum", "ba"] == pytest.approx(0.2) and lb.loc["krum", "worst_ba"] == pytest.approx(0.2)
    assert lb.loc["krum", "clean_ma"] == pytest.approx(0.95)
    # median: the diverged label-flip run counts with chance accuracy 0.1 -> worst MA mean(0.5, 0.1) = 0.3
    assert lb.loc["median", "worst_ma"] == pytest.approx(0.3) and lb.loc["median", "diverged"] == 1
    assert list(lb.index) == ["krum", "median"]  # ranked by worst-case MA
    det = parts["settings"][0]["detection"].set_index("defense")
    assert det.loc["krum", "precision"] == pytest.approx(1 / 3) and det.loc["krum", "recall"] == pytest.approx(1.0)
    assert det.loc["krum", "f1"] == pytest.approx(0.5) and det.loc["krum", "fpr"] == pytest.approx(2 / 5)
    assert det.loc["krum", "fpr_no_attack_rounds"] == pytest.approx(1 / 3)
    assert det.loc["median", "decisions"] == 0  # no per-client decision: n/a


def test_report_on_a_small_sweep_writes_pngs_and_one_html(tmp_path):
    spec = {
        "base": {"fl": {"num_clients": 6, "rounds": 2}},
        "grid": {
            "attack": [{"name": "none"}, {"name": "backdoor", "num_malicious": 2}],
            "defense": [{"name": "fedavg"}, {"name": "multi-krum"}],
            "seed": [0, 1],
        },
    }
    run_sweep(SweepSpec.from_tree(spec).jobs(), tmp_path / "sw")
    res = runner.invoke(app, ["report", str(tmp_path / "sw")])
    assert res.exit_code == 0, res.output
    rep = tmp_path / "sw" / "report"
    for name in ("heatmap_main_acc.png", "heatmap_backdoor_acc.png", "curves.png"):
        assert (rep / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (rep / "report.html").read_text()
    srcs = re.findall(r"src='([^']*)'", page)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)  # self-contained
    assert "multi-krum" in page and "Detection" in page
    md = (rep / "report.md").read_text()
    assert "### Leaderboard" in md and "![curves](curves.png)" in md
    assert all(len(line) <= 80 for line in res.output.splitlines())
    assert runner.invoke(app, ["report", str(tmp_path / "nothing")]).exit_code == 2


def test_runs_that_differ_in_a_setting_get_one_leaderboard_each(tmp_path):
    for part in ("iid", "dirichlet"):
        for seed in (0, 1):
            d = tmp_path / f"{part}-{seed}"
            d.mkdir()
            cfg = {"seed": seed, "data": {"dataset": "digits", "partition": part}, "defense": {"name": "median"}}
            (d / "config.yaml").write_text(yaml.safe_dump(cfg))
            (d / "summary.json").write_text(json.dumps({"final_main_acc": 0.9, "status": "ok"}))
    parts = build_report([tmp_path], tmp_path / "rep")
    assert sorted(s["name"] for s in parts["settings"]) == ["partition=dirichlet", "partition=iid"]
    assert (tmp_path / "rep" / "leaderboard_2.csv").exists()


def test_optimized_attacks_are_labelled_and_form_their_own_worst_case(tmp_path):
    from fedarena.studies.spec import grid_labels

    assert grid_labels("attack", [{"name": "alie"}, {"name": "alie", "optimize": {"evals": 5}}, {"name": "ipm"}]) == [
        "alie",
        "alie+opt",
        "ipm",
    ]
    for seed in (0, 1):
        _fake_run(tmp_path, f"none-{seed}", "none", "median", seed, 0.9, None, [])
        _fake_run(tmp_path, f"alie-{seed}", "alie", "median", seed, 0.5, None, [])
        _fake_run(tmp_path, f"ipm-{seed}", "ipm", "median", seed, 0.8, None, [])
        _fake_run(tmp_path, f"ipmopt-{seed}", "ipm", "median", seed, 0.6 + 0.1 * seed, None, [])
        cfg = yaml.safe_load((tmp_path / f"ipmopt-{seed}" / "config.yaml").read_text())
        cfg["attack"]["optimize"] = {"evals": 20}
        (tmp_path / f"ipmopt-{seed}" / "config.yaml").write_text(yaml.safe_dump(cfg))
    parts = build_report([tmp_path], tmp_path / "rep")
    lb = parts["settings"][0]["leaderboard"].set_index("defense")
    assert lb.loc["median", "worst_ma"] == pytest.approx(0.5) and lb.loc["median", "worst_ma_attack"] == "alie"
    assert lb.loc["median", "worst_opt_ma"] == pytest.approx(0.65)
    assert lb.loc["median", "worst_opt_ma_attack"] == "ipm+opt"
    assert "worst opt MA" in parts["settings"][0]["leaderboard_text"].columns
    assert "ipm+opt" in (tmp_path / "rep" / "report.md").read_text()
