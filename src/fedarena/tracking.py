"""Experiment trackers: follow fedarena runs in MLflow or TensorBoard (``--track``).

Both are optional extras (``pip install "fedarena[mlflow]"`` / ``"fedarena[tensorboard]"``);
without them ``--track`` stops with one line naming the extra. What is logged:

* the resolved config (``config.yaml``: every default filled in) as parameters, one per
  dotted key (``fl.lr``, ``defense.name``, ...);
* per evaluated round, the metrics of ``metrics.jsonl`` (``main_acc``, ``loss``,
  ``backdoor_acc``, ``base_acc``, ``lr``, the defense's numeric diagnostics), step = round;
* at the end, the summary's numbers (``final_main_acc``, ...) and its status as a tag;
* the report as artifacts: MLflow gets the run folder's ``summary.json``,
  ``config.yaml``, ``curves.png`` (and for a study, ``report.html`` / ``report.md`` in
  a parent run); TensorBoard, which keeps no files, gets the config and the summary as
  text and the final metrics as hparams.

MLflow's default store is a local folder, ``./mlruns`` (``mlflow ui`` reads it). MLflow
3 keeps this file store in maintenance mode and refuses it unless
``MLFLOW_ALLOW_FILE_STORE=true``; fedarena sets that for a ``file:`` URI it was given or
defaults to, and any other URI (``sqlite:///mlflow.db``, a tracking server) is used as
is. TensorBoard's default log folder is ``./tensorboard``, one subfolder per run.

Weights & Biases is not included: its client logs to a hosted service by default and
needs an account (offline mode syncs later); the two trackers here keep everything on
the machine. ``fedarena.tracking.Tracker`` is three methods: a W&B tracker is a dozen
lines in user code.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import ConfigError

TRACKERS = ("mlflow", "tensorboard")
_STRUCTURE = {"round"}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"fl": {"lr": 0.1}} -> {"fl.lr": 0.1}`` (lists and None kept as text)."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    key = prefix[:-1]
    out[key] = tree if isinstance(tree, (int, float, str, bool)) else json.dumps(tree, default=str)
    return out


def numbers(record: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a record (booleans and the round index left out)."""
    return {
        k: float(v)
        for k, v in record.items()
        if k not in _STRUCTURE and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


class Tracker:
    """One tracked run: ``start`` (its config), ``log_round`` per evaluated round, ``finish``."""

    def start(self, name: str, config: dict[str, Any], tags: Optional[dict[str, str]] = None) -> None:
        raise NotImplementedError

    def log_round(self, round_: int, metrics: dict[str, Any]) -> None:
        raise NotImplementedError

    def finish(self, summary: dict[str, Any], files: list[Path]) -> None:
        raise NotImplementedError


class MLflowTracker(Tracker):
    def __init__(self, uri: Optional[str] = None, experiment: str = "fedarena"):
        try:
            import mlflow
        except ImportError:
            raise ConfigError("--track", "mlflow is not installed", 'pip install "fedarena[mlflow]"') from None
        self.mlflow = mlflow
        self.uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()
        if self.uri.startswith("file:") or "://" not in self.uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: the local file store is opt-in
        self.client = mlflow.tracking.MlflowClient(self.uri)
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        self.run_id: Optional[str] = None
        self.parent_id: Optional[str] = None

    def start(self, name: str, config: dict[str, Any], tags: Optional[dict[str, str]] = None) -> None:
        tags = dict(tags or {})
        if self.parent_id:
            tags["mlflow.parentRunId"] = self.parent_id
        tags["mlflow.runName"] = name
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def log_round(self, round_: int, metrics: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        import time

        now = int(time.time() * 1000)
        ms = [Metric(k, v, now, int(round_)) for k, v in numbers(metrics).items()]
        if ms:
            self.client.log_batch(self.run_id, metrics=ms)

    def finish(self, summary: dict[str, Any], files: list[Path]) -> None:
        from mlflow.entities import Metric

        import time

        now = int(time.time() * 1000)
        final = [
            Metric(k, v, now, 0)
            for k, v in numbers(summary).items()
            if k.startswith(("final_", "max_", "backdoor_")) or k in ("wall_time_s", "rounds_completed")
        ]
        if final:
            self.client.log_batch(self.run_id, metrics=final)
        for f in files:
            if Path(f).is_file():
                self.client.log_artifact(self.run_id, str(f))
        status = summary.get("status", "ok")
        self.client.set_tag(self.run_id, "fedarena.status", str(status))
        state = "FINISHED" if status in ("ok", "diverged") else "KILLED" if status == "interrupted" else "FAILED"
        self.client.set_terminated(self.run_id, state)

    # a study: one parent run, each run of the study nested under it
    def start_parent(self, name: str, params: dict[str, Any]) -> None:
        self.start(name, params, tags={"fedarena.kind": "study"})
        self.parent_id = self.run_id

    def finish_parent(self, files: list[Path], status: str = "ok") -> None:
        self.run_id, self.parent_id = self.parent_id, None
        self.finish({"status": status}, files)


class TensorBoardTracker(Tracker):
    def __init__(self, uri: Optional[str] = None):
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
        except ImportError:
            raise ConfigError(
                "--track", "tensorboard is not installed", 'pip install "fedarena[tensorboard]"'
            ) from None
        self.SummaryWriter = SummaryWriter
        self.root = Path(uri or "tensorboard")
        self.writer = None
        self.config: dict[str, Any] = {}

    def start(self, name: str, config: dict[str, Any], tags: Optional[dict[str, str]] = None) -> None:
        path = self.root / name
        k = 2
        while path.exists():  # one folder per run, never two runs in one
            path, k = self.root / f"{name}-{k}", k + 1
        self.writer = self.SummaryWriter(log_dir=str(path))
        self.config = flatten(config)
        self.writer.add_text("config", "```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)

    def log_round(self, round_: int, metrics: dict[str, Any]) -> None:
        for k, v in numbers(metrics).items():
            self.writer.add_scalar(k, v, int(round_))

    def finish(self, summary: dict[str, Any], files: list[Path]) -> None:
        final = {f"hparam/{k}": v for k, v in numbers(summary).items() if k.startswith("final_")}
        hp = {k: v for k, v in self.config.items() if isinstance(v, (int, float, str, bool))}
        if final:
            self.writer.add_hparams(hp, final, run_name=".")
        self.writer.add_text("summary", "```json\n" + json.dumps(summary, indent=1, default=str) + "\n```", 0)
        self.writer.flush()
        self.writer.close()

    def start_parent(self, name: str, params: dict[str, Any]) -> None:
        self.root = self.root / name

    def finish_parent(self, files: list[Path], status: str = "ok") -> None:
        md = next((f for f in files if Path(f).suffix == ".md" and Path(f).is_file()), None)
        if md is not None:
            w = self.SummaryWriter(log_dir=str(self.root / "report"))
            w.add_text("report", Path(md).read_text(), 0)
            w.close()


def make_tracker(kind: Optional[str], uri: Optional[str] = None) -> Optional[Tracker]:
    """``mlflow`` / ``tensorboard`` -> a tracker; ``None`` -> None; else a ConfigError."""
    if kind is None:
        return None
    if kind == "mlflow":
        return MLflowTracker(uri)
    if kind == "tensorboard":
        return TensorBoardTracker(uri)
    raise ConfigError("--track", f"unknown tracker {kind!r}", ", ".join(TRACKERS))


RUN_FILES = ("summary.json", "config.yaml", "curves.png")


def track_folder(tracker: Tracker, run_dir: Path, name: Optional[str] = None) -> None:
    """Log a finished run from its folder (``config.yaml``, ``metrics.jsonl``, ``summary.json``):
    what a study's runs, played by worker processes or Ray, are tracked with."""
    from .run.records import read_jsonl

    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    tracker.start(name or run_dir.name, config)
    if (run_dir / "metrics.jsonl").exists():
        for m in read_jsonl(run_dir / "metrics.jsonl"):
            tracker.log_round(m.get("round", 0), m)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    tracker.finish(summary, [run_dir / f for f in RUN_FILES])
