"""The results table of a study: one row per run, built from the run folders.

Columns: the run's identity (``run``, grid labels such as ``variant``, ``attack``,
``defense``, ``seed`` and any other grid key; ``dataset``, ``partition``, ``model``,
``algorithm``, ``num_clients``, ``clients_per_round``, ``num_malicious``, ``rounds``,
``attack_name``, ``defense_name``), final and mean metrics (``final_main_acc``,
``final_backdoor_acc``, ``final_base_acc``, ``final_loss``, ``mean_main_acc``,
``mean_backdoor_acc``, ``max_backdoor_acc``, ``backdoor_durability``: rounds the backdoor
lasts after the attack stops, see :func:`fedarena.core.metrics.backdoor_durability`), ``status``, ``rounds_completed``,
``diverged_at``, ``wall_time_s`` and ``path``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd
import yaml

from ..config import AUTO_MODELS
from ..errors import DamagedFileError
from ..run.records import read_json, read_jsonl, read_run, read_text

SWEEP_FILE = "sweep.json"


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders (holding ``config.yaml`` and ``summary.json``) at or under ``paths``."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.yaml").is_file() and (p / "summary.json").is_file():
            found.append(p)
        elif (p / SWEEP_FILE).is_file() and (names := _sweep_runs(p / SWEEP_FILE)) is not None:
            found += [p / "runs" / n for n in names if (p / "runs" / n / "summary.json").is_file()]  # sweep order
        elif p.is_dir():
            found += sorted(s.parent for s in p.rglob("summary.json") if (s.parent / "config.yaml").is_file())
    return list(dict.fromkeys(found))


def _sweep_runs(path: Path) -> Optional[dict[str, Any]]:
    """Run name -> grid labels of a ``sweep.json``; None when it is damaged (its runs are
    then found by searching the folder, without labels)."""
    try:
        runs = read_json(path).get("runs", {})
    except DamagedFileError:
        return None
    return runs if isinstance(runs, dict) else None


def sweep_labels(run_dir: Path) -> Optional[dict[str, Any]]:
    """The grid labels of a run in a sweep folder (``<sweep>/runs/<run>``), if any."""
    path = run_dir.parent.parent / SWEEP_FILE
    if not path.is_file():
        return None
    labels = (_sweep_runs(path) or {}).get(run_dir.name)
    return labels if isinstance(labels, dict) else None


def readable_runs(run_dirs: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The run folders whose files read cleanly, and ``(folder, reason)`` for each other
    one (a damaged ``config.yaml``, ``summary.json`` or record file): one bad run does
    not stop a report."""
    good, bad = [], []
    for d in run_dirs:
        try:
            cfg = yaml.safe_load(read_text(d / "config.yaml"))
            if not isinstance(cfg, dict):
                raise DamagedFileError(d / "config.yaml", "does not hold a mapping")
            read_run(d)
        except yaml.YAMLError as e:
            bad.append((d, f"{d / 'config.yaml'}: not valid YAML ({str(e).splitlines()[0]})"))
        except DamagedFileError as e:
            bad.append((d, str(e)))
        else:
            good.append(d)
    return good, bad


def _mean(xs: list[Any]) -> Optional[float]:
    xs = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def attack_label(attack: dict[str, Any]) -> str:
    """An attack's name, with ``+opt`` when ``attack.optimize`` searched its strength."""
    return str(attack.get("name", "none")) + ("+opt" if attack.get("optimize") else "")


def run_row(run_dir: Path, labels: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
    data, fl, attack, defense = (cfg.get(k) or {} for k in ("data", "fl", "attack", "defense"))
    labels = dict(labels or {})
    run_id = labels.pop("run", None) or run_dir.name
    model = (cfg.get("model") or {}).get("name", "auto")
    row: dict[str, Any] = {"run": run_id, **labels}
    optimized = bool(attack.get("optimize"))  # attack.optimize: the strength searched against the defense
    row.setdefault("attack", attack_label(attack))
    row.setdefault("defense", defense.get("name", "fedavg"))
    row.setdefault("seed", cfg.get("seed", 0))
    row.update(
        dataset=data.get("dataset"),
        partition=data.get("partition"),
        model=AUTO_MODELS.get(data.get("dataset"), "mlp") if model == "auto" else model,
        algorithm=fl.get("algorithm"),
        num_clients=fl.get("num_clients"),
        clients_per_round=fl.get("clients_per_round") or fl.get("num_clients"),
        num_malicious=attack.get("num_malicious", 0),
        rounds=fl.get("rounds"),
        attack_name=attack.get("name", "none"),
        defense_name=defense.get("name", "fedavg"),
        optimized=optimized,
        final_main_acc=summary.get("final_main_acc"),
        final_backdoor_acc=summary.get("final_backdoor_acc"),
        final_base_acc=summary.get("final_base_acc"),
        final_loss=summary.get("final_loss"),
        mean_main_acc=_mean([m.get("main_acc") for m in metrics]),
        mean_backdoor_acc=_mean([m.get("backdoor_acc") for m in metrics]),
        max_backdoor_acc=summary.get("max_backdoor_acc"),
        backdoor_durability=summary.get("backdoor_durability"),
        num_classes=summary.get("num_classes"),
        status=summary.get("status"),
        rounds_completed=summary.get("rounds_completed"),
        diverged_at=summary.get("diverged_at"),
        wall_time_s=summary.get("wall_time_s"),
        path=str(run_dir),
    )
    return row


def results_table(run_dirs: Iterable[Path], labels: Optional[dict[str, dict[str, Any]]] = None) -> pd.DataFrame:
    """One row per run folder; ``labels``: folder name -> grid labels (else read from ``sweep.json``)."""
    rows = []
    for d in run_dirs:
        lab = (labels or {}).get(d.name) if labels is not None else sweep_labels(d)
        rows.append(run_row(d, lab))
    return pd.DataFrame(rows)


def write_table(table: pd.DataFrame, out: Path) -> None:
    """``results.csv`` and ``results.parquet`` (pyarrow)."""
    table.to_csv(out / "results.csv", index=False)
    table.to_parquet(out / "results.parquet", index=False)
