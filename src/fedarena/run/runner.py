"""One run kept on disk: records round by round, checkpoints, resume and its final status.

:func:`execute` plays a :class:`~fedarena.run.simulation.Simulation` in a folder made by
:func:`~fedarena.run.records.new_run_dir` or checked by
:func:`~fedarena.run.records.open_run_dir`:

* ``config.yaml`` first, ``summary.json`` with ``status: running``;
* every round appended to ``metrics.jsonl``, ``clients.jsonl`` and ``rounds.jsonl``;
* every ``run.checkpoint_every`` rounds ``checkpoint.pt`` (see :mod:`.checkpoint`) with
  the byte sizes of the record files at that round;
* at the end ``summary.json`` (atomic) with ``status``: ``ok``, ``diverged`` (a NaN/Inf
  aggregate, parameter or test loss stopped the run at ``diverged_at``), ``interrupted``
  (Ctrl-C; the exception is re-raised) or ``error`` (an exception; re-raised), and
  ``curves.png``. A finished run (ok, diverged) drops its checkpoint.

``execute(out, resume=True)`` continues an unfinished run: it cuts the record files back
to the last checkpoint and plays the remaining rounds, so the records end byte-identical
to an uninterrupted run's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from ..config import ExperimentConfig, dump_config, load_config
from .checkpoint import load_checkpoint, load_simulation_state, save_checkpoint, simulation_state
from .records import FINISHED, RECORD_FILES, RunWriter, cut_records, plot_curves, read_run, write_json_atomic
from .simulation import RunResult, Simulation, summarize

#: process exit code of ``fedarena run`` per final status (2: a user error, nothing ran)
EXIT_CODES = {"ok": 0, "error": 1, "diverged": 3, "interrupted": 130}

CHECKPOINT = "checkpoint.pt"


def execute(out: str | Path, cfg: Optional[ExperimentConfig] = None, *, sim: Optional[Simulation] = None,
            resume: bool = False, progress: Optional[Callable[[int, dict], None]] = None,
            plot: bool = True) -> RunResult:
    """Play a run in folder ``out`` and return its result (records of every round).

    ``resume``: continue the run already in ``out`` (its own ``config.yaml``); a finished
    run is returned as it is. Otherwise ``cfg`` (or ``sim.cfg``) starts a new run.
    """
    out = Path(out)
    if resume:
        cfg = load_config(out / "config.yaml")
        prior = read_run(out)
        if prior["summary"].get("status") in FINISHED:
            return RunResult(cfg, prior["metrics"], prior["clients"], prior["rounds"], prior["summary"])
    else:
        cfg = cfg or sim.cfg
        (out / "config.yaml").write_text(dump_config(cfg))
    sim = sim or Simulation(cfg)
    result = RunResult(cfg)
    wall_before = 0.0
    if resume:
        sizes: dict[str, int] = {}  # no checkpoint yet: start again from round 0
        if (out / CHECKPOINT).exists():
            state = load_checkpoint(out / CHECKPOINT)
            load_simulation_state(sim, state["simulation"])
            sizes, wall_before = state["files"], float(state["wall_time_s"])
        cut_records(out, sizes)
        prior = read_run(out)
        for key in RECORD_FILES:
            getattr(result, key).extend(prior[key])
    writer = RunWriter(out, append=resume)
    start_round = sim.next_round
    summary = summarize(result.metrics, cfg, wall_before, None, start_round)
    write_json_atomic(out / "summary.json", {**summary, "status": "running"})
    start = time.perf_counter()

    def on_round(t: int, records: dict[str, list]) -> None:
        writer.on_round(t, records)
        every = cfg.run.checkpoint_every
        if every and sim.next_round == t + 1 and (t + 1) % every == 0 and t + 1 < cfg.fl.rounds:
            save_checkpoint(out / CHECKPOINT, {"simulation": simulation_state(sim), "files": writer.sizes(),
                                               "wall_time_s": wall_before + time.perf_counter() - start})

    status, message = "error", None
    try:
        result = sim.run(progress, on_round, result)
        status = result.summary["status"]
    except KeyboardInterrupt:
        status, message = "interrupted", f"interrupted after round {sim.next_round - 1}"
        raise
    except BaseException as e:
        message = f"{type(e).__name__}: {e}"
        raise
    finally:
        writer.close()
        if status in ("interrupted", "error"):
            result.summary = {**summarize(result.metrics, cfg, 0.0, message, sim.next_round), "status": status}
        result.summary["wall_time_s"] = round(wall_before + time.perf_counter() - start, 3)
        result.summary["num_classes"] = sim.data.num_classes  # chance accuracy = 1 / num_classes
        if start_round:
            result.summary["resumed_from"] = start_round
        write_json_atomic(out / "summary.json", result.summary)
        if plot:
            plot_curves(result.metrics, out / "curves.png", title=cfg.name)
        if status in FINISHED:
            (out / CHECKPOINT).unlink(missing_ok=True)
    return result
