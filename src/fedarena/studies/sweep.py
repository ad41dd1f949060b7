"""Run a study: many runs in worker processes (or Ray), an index of finished runs, one
results table.

A sweep folder holds ``sweep.json`` (the runs and their grid labels), ``runs/<run id>/``
(one run folder each, see :mod:`fedarena.run.runner`), ``index.jsonl`` (append-only:
one line per finished run with its config hash and status) and ``results.csv`` /
``results.parquet``. Running the same sweep again skips every finished run (``ok`` or
``diverged``: a divergence is a result), continues unfinished ones from their
checkpoints and retries runs that ended in ``error``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd

from ..errors import ConfigError, DamagedFileError
from ..run.records import FINISHED, check_writable, read_json, read_jsonl
from . import executors
from .results import SWEEP_FILE, results_table, write_table
from .spec import Job, config_sha

INDEX = "index.jsonl"


def folder_name(run_id: str) -> str:
    """A file-system-safe folder name for a run id (long ids keep a hash suffix)."""
    name = re.sub(r"[^\w.,=()#+-]", "_", run_id)
    if len(name) > 120:
        name = name[:100] + "-" + hashlib.sha256(run_id.encode()).hexdigest()[:12]
    return name


@dataclass
class SweepOutcome:
    table: pd.DataFrame
    skipped: list[str] = field(default_factory=list)  # finished before this call
    ran: list[str] = field(default_factory=list)  # played (from round 0 or resumed) by this call
    resumed: list[str] = field(default_factory=list)


def read_index(path: Path) -> dict[str, dict[str, Any]]:
    """Run id -> its last index entry.

    The index is a cache of what the run folders say: a line that is not an entry (the
    torn last line of a killed sweep, or damage anywhere) is ignored, and its run is
    found finished from its own folder (:func:`_finished_in_folder`) or played again."""
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("run"), str):
            out[entry["run"]] = entry
    return out


def _finished_in_folder(run_dir: Path, cfg_text: str) -> Optional[dict[str, Any]]:
    """The summary of a finished run of this very config in ``run_dir``, else None.

    A ``config.yaml`` written by an earlier version (keys since dropped, e.g. the LeadFL
    keys every config used to carry) is this run when the current code resolves it to
    the same config: a schema change does not make a study replay its finished runs."""
    try:
        stored = (run_dir / "config.yaml").read_bytes()
        if stored != cfg_text.encode() and _resolved(run_dir / "config.yaml") != cfg_text:
            return None
        summary = read_json(run_dir / "summary.json")
    except (OSError, DamagedFileError):
        return None
    return summary if summary.get("status") in FINISHED else None


def _resolved(path: Path) -> Optional[str]:
    """``path``'s config as the current code resolves and writes it (None if it does not load)."""
    from ..config import dump_config, load_config

    try:
        return dump_config(load_config(path))
    except (ConfigError, DamagedFileError, OSError, ValueError):
        return None


def run_sweep(
    jobs: list[Job],
    out: str | Path,
    workers: int = 1,
    backend: str = "local",
    address: Optional[str] = None,
    plot: bool = False,
    on_result: Optional[Callable[[dict[str, Any]], None]] = None,
) -> SweepOutcome:
    """Play the ``jobs`` that have no finished run in ``out``; write the index and the table."""
    from ..config import dump_config

    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    check_writable(out)
    folders = {job.run_id: folder_name(job.run_id) for job in jobs}
    (out / SWEEP_FILE).write_text(
        json.dumps({"runs": {folders[j.run_id]: {"run": j.run_id, **j.labels} for j in jobs}}, indent=1, default=str)
        + "\n"
    )
    index = read_index(out / INDEX)
    outcome = SweepOutcome(pd.DataFrame())
    todo, pending_index, shas = [], [], {}
    for job in jobs:
        cfg = job.validated()
        sha, run_dir = config_sha(cfg), out / "runs" / folders[job.run_id]
        shas[job.run_id] = sha
        entry = index.get(job.run_id)
        if (
            entry
            and entry.get("config_sha") == sha
            and entry.get("status") in FINISHED
            and (run_dir / "summary.json").exists()
        ):
            outcome.skipped.append(job.run_id)
            continue
        summary = _finished_in_folder(run_dir, dump_config(cfg))
        if summary is not None:  # finished, but the sweep was killed before indexing it
            pending_index.append({"run": job.run_id, "summary": summary})
            outcome.skipped.append(job.run_id)
            continue
        if (run_dir / "config.yaml").exists() and (run_dir / "config.yaml").read_bytes() == dump_config(cfg).encode():
            outcome.resumed.append(job.run_id)
        todo.append({"run_id": job.run_id, "config": job.config, "out": str(run_dir), "plot": plot})
    with open(out / INDEX, "a") as fh:

        def record(res: dict[str, Any]) -> None:
            s = res["summary"]
            fh.write(
                json.dumps(
                    {
                        "run": res["run"],
                        "config_sha": shas[res["run"]],
                        "status": s.get("status"),
                        "wall_time_s": s.get("wall_time_s"),
                        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    }
                )
                + "\n"
            )
            fh.flush()
            os.fsync(fh.fileno())

        for res in pending_index:
            record(res)
        for res in executors.results(todo, workers, backend, address):
            record(res)
            outcome.ran.append(res["run"])
            if on_result is not None:
                on_result(res)
    outcome.table = results_table(
        [out / "runs" / folders[j.run_id] for j in jobs if (out / "runs" / folders[j.run_id] / "summary.json").exists()]
    )
    write_table(outcome.table, out)
    return outcome


def index_entries(out: str | Path) -> list[dict[str, Any]]:
    """Every line of a sweep's index, in order (for audits: a run is never indexed twice
    unless it was rerun)."""
    path = Path(out) / INDEX
    return read_jsonl(path) if path.exists() else []
