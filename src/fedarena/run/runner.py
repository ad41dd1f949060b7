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
to an uninterrupted run's. :func:`execute_many` plays several runs (:class:`RunFolder`)
in lockstep, each writing its own folder.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..config import ExperimentConfig, dump_config, load_config
from ..errors import ConfigError, DamagedFileError, DataNotFoundError
from .checkpoint import RESTART, load_checkpoint, load_simulation_state, save_checkpoint, simulation_state
from .records import (
    FINISHED,
    RECORD_FILES,
    RunWriter,
    cut_records,
    plot_curves,
    read_run,
    read_summary,
    write_json_atomic,
)
from .lockstep import Lockstep, architecture, groups
from .results import RunResult, summarize
from .simulation import Simulation

#: process exit code of ``fedarena run`` per final status (2: a user error, nothing ran)
#: where an internal error's traceback goes, in the run folder
ERROR_LOG = "error.log"
EXIT_CODES = {"ok": 0, "error": 1, "diverged": 3, "interrupted": 130}

CHECKPOINT = "checkpoint.pt"


class RunFolder:
    """One run being played in its folder: set-up (config, records so far, checkpoint),
    the per-round sink (records and checkpoints) and the final summary.

    ``finished``: the result of a run found finished in ``out`` (nothing to play).
    """

    def __init__(
        self,
        out: str | Path,
        cfg: Optional[ExperimentConfig] = None,
        *,
        sim: Optional[Simulation] = None,
        resume: bool = False,
        plot: bool = True,
    ):
        out = Path(out)
        self.out, self.plot, self.finished = out, plot, None
        if resume:
            cfg = load_config(out / "config.yaml")
            if read_summary(out).get("status") in FINISHED:
                prior = read_run(out)
                self.finished = RunResult(cfg, prior["metrics"], prior["clients"], prior["rounds"], prior["summary"])
                return
        else:
            cfg = cfg or sim.cfg
            (out / "config.yaml").write_text(dump_config(cfg))
        self.cfg = cfg
        self.sim = sim = sim or Simulation(cfg)
        self.result = RunResult(cfg)
        self.wall_before = 0.0
        if resume:
            sizes: dict[str, int] = {}  # no checkpoint yet: start again from round 0
            if (out / CHECKPOINT).exists():
                state = load_checkpoint(out / CHECKPOINT, ("simulation", "files", "wall_time_s"))
                try:
                    load_simulation_state(sim, state["simulation"])
                    sizes, self.wall_before = dict(state["files"]), float(state["wall_time_s"])
                except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
                    raise DamagedFileError(
                        out / CHECKPOINT,
                        f"does not fit this run's config ({type(e).__name__}: {str(e)[:120]})",
                        RESTART,
                    ) from None
            cut_records(out, sizes)  # back to the checkpoint's rounds: a torn last line goes too
            (out / ERROR_LOG).unlink(missing_ok=True)  # an earlier attempt's
            prior = read_run(out)
            for key in RECORD_FILES:
                getattr(self.result, key).extend(prior[key])
        self.writer = RunWriter(out, append=resume)
        self.start_round = sim.next_round
        summary = summarize(self.result.metrics, cfg, self.wall_before, None, self.start_round)
        write_json_atomic(out / "summary.json", {**summary, "status": "running"})
        self.start = time.perf_counter()

    def on_round(self, t: int, records: dict[str, list]) -> None:
        self.writer.on_round(t, records)
        every, sim = self.cfg.run.checkpoint_every, self.sim
        if every and sim.next_round == t + 1 and (t + 1) % every == 0 and t + 1 < self.cfg.fl.rounds:
            save_checkpoint(
                self.out / CHECKPOINT,
                {
                    "simulation": simulation_state(sim),
                    "files": self.writer.sizes(),
                    "wall_time_s": self.wall_before + time.perf_counter() - self.start,
                },
            )

    def finish(self, status: str, message: Optional[str], trace: Optional[str] = None) -> RunResult:
        """Close the records and write the summary (``status`` interrupted/error: from here).
        ``trace``: the traceback of an internal error, written to ``error.log``."""
        out, cfg, result = self.out, self.cfg, self.result
        self.writer.close()
        if status in ("interrupted", "error"):
            result.summary = {**summarize(result.metrics, cfg, 0.0, message, self.sim.next_round), "status": status}
        if trace is not None:
            (out / ERROR_LOG).write_text(trace)
            result.summary["error_log"] = ERROR_LOG
        result.summary["wall_time_s"] = round(self.wall_before + time.perf_counter() - self.start, 3)
        result.summary["num_classes"] = self.sim.data.num_classes  # chance accuracy = 1 / num_classes
        if self.start_round:
            result.summary["resumed_from"] = self.start_round
        write_json_atomic(out / "summary.json", result.summary)
        if self.plot:
            plot_curves(result.metrics, out / "curves.png", title=cfg.name, summary=result.summary)
        if status in FINISHED:
            (out / CHECKPOINT).unlink(missing_ok=True)
        return result


def execute(
    out: str | Path,
    cfg: Optional[ExperimentConfig] = None,
    *,
    sim: Optional[Simulation] = None,
    resume: bool = False,
    progress: Optional[Callable[[int, dict], None]] = None,
    plot: bool = True,
) -> RunResult:
    """Play a run in folder ``out`` and return its result (records of every round).

    ``resume``: continue the run already in ``out`` (its own ``config.yaml``); a finished
    run is returned as it is. Otherwise ``cfg`` (or ``sim.cfg``) starts a new run.
    """
    return execute_many([RunFolder(out, cfg, sim=sim, resume=resume, plot=plot)], progress=progress)[0]


def execute_many(folders: list[RunFolder], progress: Optional[Callable[[int, dict], None]] = None) -> list[RunResult]:
    """Play several runs, each in its folder, in lockstep (:class:`~fedarena.run.lockstep.Lockstep`;
    they must share the model architecture). ``progress(t, last_eval)`` follows the
    first run. An exception stops all of them (status interrupted or error) and is
    re-raised."""
    live = [f for f in folders if f.finished is None]
    status, message, trace = "error", None, None
    try:
        if live:
            Lockstep([f.sim for f in live]).run(
                None if progress is None else (lambda i, t, ev: progress(t, ev) if i == 0 else None),
                lambda i, t, new: live[i].on_round(t, new),
                [f.result for f in live],
            )
        status = "ok"
    except KeyboardInterrupt:
        status, message = "interrupted", "interrupted after round {}"
        raise
    except BaseException as e:
        message = f"{type(e).__name__}: {e}"
        if not isinstance(e, (ConfigError, DataNotFoundError)):  # a user error needs no traceback
            trace = traceback.format_exc()
        raise
    finally:
        for f in live:
            st = f.result.summary.get("status", "error") if status == "ok" else status
            msg = message.format(f.sim.next_round - 1) if message and status == "interrupted" else message
            f.finish(st, msg, trace)
    return [f.finished if f.finished is not None else f.result for f in folders]


def run_many(
    configs: Sequence["ExperimentConfig"],
    max_runs: int = 64,
    on_result: Optional[Callable[[int, "RunResult"], None]] = None,
    seconds: Optional[dict[str, float]] = None,
) -> list["RunResult"]:
    """Run every config, compatible ones in lockstep; results in the configs' order.

    ``on_result(i, result)`` is called as each group finishes. Set-up of a group's runs
    happens when the group starts, so memory holds one group at a time. ``seconds``, when
    given, receives each phase's time summed over the groups (:attr:`Lockstep.seconds`)
    and ``setup`` (building the runs).
    """
    results: list[Optional["RunResult"]] = [None] * len(configs)
    for members in groups(configs, max_runs):
        t0 = time.perf_counter()
        sims = [Simulation(configs[i]) for i in members]
        if seconds is not None:
            seconds["setup"] = seconds.get("setup", 0.0) + time.perf_counter() - t0
        buckets: dict[tuple, list[int]] = {}
        for j, s in enumerate(sims):  # the config key is a proxy: check the real architecture
            buckets.setdefault(architecture(s), []).append(j)
        for js in buckets.values():
            lockstep = Lockstep([sims[j] for j in js], timed=seconds is not None)
            for j, res in zip(js, lockstep.run()):
                results[members[j]] = res
                if on_result is not None:
                    on_result(members[j], res)
            if seconds is not None:
                for k, v in lockstep.seconds.items():
                    seconds[k] = seconds.get(k, 0.0) + v
    return results  # type: ignore[return-value]
