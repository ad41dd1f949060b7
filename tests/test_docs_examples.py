"""The how-to guides' examples run: each Python block of docs/how-to/add-*.md is executed
(it registers its component), then used the way the guide says (a run, a reproduction).
A guide whose example stops working fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedarena.config import load_config
from fedarena.registry import ATTACKS, DEFENSES, PAPERS
from fedarena.run.simulation import Simulation

DOCS = Path(__file__).resolve().parents[1] / "docs" / "how-to"
SMALL = ["data.dataset=digits", "fl.num_clients=10", "fl.rounds=3", "fl.local_epochs=1"]


def _run_blocks(name: str) -> dict:
    path = DOCS / name
    if not path.exists():
        pytest.skip(f"{path} is not in this checkout")
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), re.S)
    assert blocks, f"{name} has no Python example"
    ns: dict = {}
    for code in blocks:
        exec(compile(code, str(path), "exec"), ns)  # noqa: S102 - our own documentation
    return ns


@pytest.fixture
def unregister():
    added: list[tuple] = []
    yield added
    for registry, name in added:
        registry._items.pop(name, None)


def test_add_an_attack(unregister):
    _run_blocks("add-attack.md")
    unregister.append((ATTACKS, "reverse-mean"))
    assert "reverse-mean" in ATTACKS.names() and "scale" in ATTACKS.params("reverse-mean")
    honest = Simulation(load_config(None, SMALL + ["attack.name=none"])).run().summary["final_main_acc"]
    attacked = (
        Simulation(load_config(None, SMALL + ["attack.name=reverse-mean", "attack.num_malicious=4", "attack.scale=8"]))
        .run()
        .summary["final_main_acc"]
    )
    assert attacked < honest - 0.2  # under FedAvg the reversed, scaled updates wreck the model


def test_add_a_defense(unregister):
    _run_blocks("add-defense.md")
    unregister.append((DEFENSES, "norm-mean"))
    res = Simulation(
        load_config(
            None,
            SMALL + ["attack.name=gaussian", "attack.num_malicious=3", "defense.name=norm-mean", "defense.bound=5.0"],
        )
    ).run()
    assert res.summary["status"] == "ok"
    assert all(not c["accepted"] for c in res.clients if c["attacking"])  # the huge Gaussian rows are dropped


def test_add_a_reproduction(unregister, tmp_path):
    from fedarena.reproduce.framework import run_reproduction

    _run_blocks("add-reproduction.md")
    unregister.append((PAPERS, "my-paper"))
    report = run_reproduction("my-paper", quick=True, out=tmp_path, overrides=[], console=None, workers=1)
    rows = {c.id: c for c in report.claims}
    assert set(rows) == {"T2.ba", "T2.ma"} and not report.runs_failed
    assert all(c.source == "paper" and c.verdict in ("pass", "fail") for c in rows.values())
    assert "paper claims reproduced" in (tmp_path / "claims.md").read_text()


def test_layout_page_matches_the_tree():
    """docs/concepts/layout.md names every package and top-level module of the source
    tree, and every module of the engine's two foundations (core/, run/)."""
    text = (DOCS.parent / "concepts" / "layout.md").read_text()
    src = Path(__file__).resolve().parents[1] / "src" / "fedarena"
    missing = [f"{d.name}/" for d in src.iterdir() if (d / "__init__.py").exists() and f"{d.name}/" not in text]
    missing += [p.name for p in src.glob("*.py") if p.name != "__init__.py" and p.name not in text]
    for pkg in ("core", "run"):
        missing += [
            f"{pkg}/{p.stem}"
            for p in (src / pkg).glob("*.py")
            if p.name != "__init__.py" and not re.search(rf"\b{p.stem}\b", text)
        ]
    assert not missing, f"docs/concepts/layout.md does not name: {missing}"
