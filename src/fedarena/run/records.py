"""Write a run's outputs: config.yaml, metrics.jsonl, clients.jsonl, summary.json, curves.png."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from ..run.plots import plot_curves
from ..run.resolve import resolved_config
from ..run.simulation import RunResult


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps(_clean(r)) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_run(result: RunResult, out: str | Path, plot: bool = True) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(resolved_config(result.config), sort_keys=False))
    write_jsonl(out / "metrics.jsonl", result.metrics)
    write_jsonl(out / "clients.jsonl", result.clients)
    write_jsonl(out / "rounds.jsonl", result.rounds)
    (out / "summary.json").write_text(json.dumps(_clean(result.summary), indent=2) + "\n")
    if plot:
        plot_curves(result.metrics, out / "curves.png", title=result.config.name, summary=result.summary)
    return out
