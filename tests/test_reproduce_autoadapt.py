"""The AutoAdapt reproduction: its grid follows the paper's setting and the report helpers
read the run records. (The --quick reproduction itself takes minutes; its committed full
report lives in reproductions/autoadapt/.)"""

from __future__ import annotations

from fedarena.config import load_config
from fedarena.registry import PAPERS
from fedarena.reproduce import autoadapt as mod
from fedarena.reproduce.framework import Results
from fedarena.run.simulation import RunResult


def test_grid_follows_the_paper():
    paper = PAPERS.get("autoadapt")()
    for quick in (True, False):
        runs = paper.runs(quick)
        for tree in runs.values():
            load_config(None, base=tree)  # every run is a valid config
        base = runs["feas/cos-whole"]
        assert base["fl"]["num_clients"] == 20 and base["attack"]["num_malicious"] == 9  # PMR 45 %
        assert (
            base["attack"]["poison_frac"] == 0.1
            and base["fl"]["momentum"] == 0.9
            and base["fl"]["weight_decay"] == 0.005
        )
        assert base["attack"]["start_round"] == base["fl"]["rounds"] - 1  # one attacked round
        assert runs["unadapted"]["attack"]["adapt"] is False
        assert runs["feas/cos+l2-layers"]["attack"]["metrics"] == ["cos", "l2"]
        assert all(runs[k]["attack"]["name"] == "train-and-scale" for k in runs if k.startswith("eq2/"))
    full = paper.runs(False)
    assert (
        full["feas/cos-whole"]["fl"]["local_epochs"] == 10 and full["feas/cos-whole"]["attack"]["activate_epoch"] == 8
    )
    assert full["feas/cos-whole"]["data"]["dataset"] == "fashion-mnist"
    assert {k.split("/")[1] for k in full if k.startswith("def/")} == set(mod.DEFENSES) - set(mod.VC_DEFENSES)
    # Sect. V-C: the paper's CNN (5 layers -> 20 layer-wise Cos + Euclidean constraints) from a benign pre-trained
    # global model (rounds 20 and 50), MNIST non-IID q = 0.5, pixel and label-flip backdoors, global BA per round
    vc = full["vc/mnist-pixel-r20/adapted"]
    assert vc["model"]["name"] == "fl-pretrained" and vc["model"]["arch"] == "cnn" and vc["model"]["round"] == 20
    assert full["vc/mnist-pixel-r50/adapted"]["model"]["round"] == 50
    assert vc["model"]["pretrain"]["fl"]["rounds"] == 50 and vc["model"]["snapshots"] == [20, 50]  # one pre-training
    assert vc["data"] == {"dataset": "mnist", "partition": "dominant-class", "q": 0.5}
    assert vc["attack"]["metrics"] == ["cos", "l2"] and vc["attack"]["scope"] == "layers" and vc["eval"]["every"] == 1
    assert vc["fl"]["local_epochs"] == 10 and vc["fl"]["batch_size"] == 64 and vc["attack"]["activate_epoch"] == 8
    assert (
        full["vc/mnist-flip-r20/adapted"]["attack"]["source"] == 1
        and full["vc/mnist-flip-r20/adapted"]["attack"]["target"] == 7
    )
    assert full["vc/fmnist-pixel-r20/unadapted"]["attack"]["adapt"] is False
    assert full["vc/mnist-pixel-r20/krum/adapted"]["attack"]["metrics"] == ["l2"]
    assert full["vc/mnist-pixel-r20/eq2/0.5"]["attack"]["name"] == "train-and-scale"
    kinds = {c.id: c.source for c in paper.claims(False)}
    assert all(kinds[c] == "paper" for c in ("C13", "C15", "C16", "C17", "C18", "C19", "C22", "C23", "C23b"))
    assert mod.TABLE1["sweep"] / mod.TABLE1["aa1"] > 15.6  # the paper's 15.67x


def _fake_run(adapt: bool) -> RunResult:
    cfg = load_config(None, base=PAPERS.get("autoadapt")().runs(True)["feas/cos-whole"])
    R = cfg.attack.start_round
    clients = []
    for i in range(20):
        mal = i < 9
        row = {
            "round": R,
            "client": i,
            "malicious": mal,
            "accepted": (not mal) or adapt,
            "distances": {"cos/whole": (0.05 if adapt else 0.4) if mal else 0.02 + 0.001 * i},
        }
        if mal:
            row.update(
                violations=0 if adapt else 1,
                batches_to_feasible=i + 1 if adapt else None,
                violations_at_activation=1,
                num_constraints=2,
                penalty_sum=0.0,
                constraints={"cos/whole": {"value": 0.05, "lo": 0.02, "hi": 0.06}},
            )
        clients.append(row)
    return RunResult(cfg, [], clients, [], {"final_backdoor_acc": 0.9 if adapt else 0.1})


def test_report_helpers_read_the_records(tmp_path):
    ad, un = _fake_run(True), _fake_run(False)
    f = mod.feasibility(ad, 10)
    assert f["feasible"] == 9 and f["batches"] == list(range(1, 10)) and f["median"] == 5 and f["p0"] == 9
    assert f["within_epochs"] == 0.9
    acc = mod.accepted(un)
    assert acc["poisoned_kept"] == 0 and acc["benign_kept"] == 11 and "poisoned kept 0/9" in str(acc)
    mod.plot_ranges(un, ad, tmp_path / "fig.png", "test")
    assert (tmp_path / "fig.png").stat().st_size > 1000
    r = Results(runs={"def/cos-hdbscan/unadapted": un, "def/cos-hdbscan/adapted": ad, "unadapted": un})
    pair = mod.defense_pair(r, "cos-hdbscan")
    assert pair["un"]["poisoned_kept"] == 0 and pair["ad"]["poisoned_kept"] == 9 and pair["ref_ba"] == 0.1
