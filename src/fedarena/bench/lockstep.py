"""``fedarena bench``, section ``lockstep``: studies run one after another vs in lockstep.

Two workloads, each played both ways in one process on the same configs, alternating:

* ``fall-of-cc``: a representative subset of the full ``fedarena reproduce fall-of-cc``
  grid (144 runs x 300 rounds, MLP 784-64-10, 25 clients, FedSGD): every 9th run of the
  grid (mixed aggregators, client momenta, attacks and both datasets), with fewer rounds
  and the reproduction's share of evaluation (one evaluation per 30 rounds);
* ``digits``: a sweep of attacks x defenses x seeds on the bundled digits (MLP 64-64-10,
  20 clients, FedAvg, evaluation every round).

``sequential`` is ``Simulation(cfg).run()`` for one config after another (set-up
included; one process, so without the start-up a process per run adds, measured
separately as ``process_startup_s``); ``lockstep`` is
:func:`fedarena.run.runner.run_many` on the same configs. Both wall time and this
process's CPU time are reported (best of the repetitions): on a machine shared with
other work the CPU-time ratio is the steadier one. ``max_abs_diff`` compares the two
ways' final accuracies and losses (float rounding only). On CUDA the section also
reports the GPU's mean utilization while each way ran (``nvidia-smi`` samples).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch


def _fall_of_cc_configs(runs: int, rounds: int, data_root: Optional[str], device: str) -> tuple[list, str]:
    from ..config import load_config
    from ..reproduce.fall_of_cc import FallOfCC

    trees = FallOfCC().runs(quick=False)
    step = max(1, len(trees) // runs)
    picked = list(trees.items())[::step][:runs]
    cfgs, source = [], "fashion-mnist + mnist (the reproduction's data)"
    for rid, tree in picked:
        over = [
            f"fl.rounds={rounds}",
            f"fl.lr_decay_at=[{int(0.75 * rounds)}]",
            f"eval.every={min(30, rounds)}",
            f"fl.device={device}",
        ]
        if data_root:
            over += [f"data.root={data_root}", "data.download=false"]
        else:  # no data folder: same shapes, generated
            over += [
                "data.dataset=synthetic",
                "data.partition=iid",
                "data.synthetic.image_size=28",
                "data.synthetic.train_size=10000",
                "data.synthetic.test_size=2000",
            ]
            source = "synthetic 28x28 (Fashion-MNIST/MNIST not found)"
        cfg = load_config(None, over, base=tree)
        cfgs.append(cfg.model_copy(update={"name": rid.replace("/", "-")}))
    return cfgs, source


def _digits_configs(runs: int, rounds: int, device: str) -> list:
    from ..config import from_tree

    attacks = ["none", "label-flip", "alie", "ipm"]
    defenses = ["fedavg", "median", "trimmed-mean", "krum"]
    seeds = max(1, runs // (len(attacks) * len(defenses)))
    cfgs = []
    for a in attacks:
        for dfn in defenses:
            for s in range(seeds):
                tree: dict[str, Any] = {
                    "name": f"{a}-{dfn}-s{s}",
                    "seed": s,
                    "fl": {"rounds": rounds, "device": device},
                    "defense": {"name": dfn},
                }
                if a != "none":
                    tree["attack"] = {"name": a, "num_malicious": 4}
                cfgs.append(from_tree(tree))
    return cfgs[:runs] if runs < len(cfgs) else cfgs


def smi_id(device: torch.device, visible: Optional[str] = None) -> str:
    """``nvidia-smi``'s id of the CUDA ``device``: its entry of ``CUDA_VISIBLE_DEVICES``
    (an index or a UUID; torch numbers the visible GPUs from 0), else its index."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "") if visible is None else visible
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    return ids[index] if index < len(ids) else str(index)


class _GpuSampler:
    """Mean GPU utilization (%) from ``nvidia-smi`` while a block runs (None without CUDA)."""

    def __init__(self, device: torch.device):
        self.on = device.type == "cuda"
        self.samples: list[float] = []
        self.gpu = smi_id(device) if self.on else None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", f"--id={self.gpu}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                )
                self.samples.append(float(out.stdout.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return
            self._stop.wait(0.1)

    def __enter__(self):
        if self.on:
            self._stop = threading.Event()
            self._t = threading.Thread(target=self._loop, daemon=True)
            self._t.start()
        return self

    def __exit__(self, *exc):
        if self.on:
            self._stop.set()
            self._t.join(timeout=10)

    @property
    def mean(self) -> Optional[float]:
        return sum(self.samples) / len(self.samples) if self.samples else None


def _final(results) -> list[tuple]:
    return [(r.summary.get("final_main_acc"), r.summary.get("final_loss"), r.summary.get("status")) for r in results]


def _diff(a: list[tuple], b: list[tuple]) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        for u, v in zip(x[:2], y[:2]):
            if isinstance(u, float) and isinstance(v, float) and math.isfinite(u) and math.isfinite(v):
                worst = max(worst, abs(u - v))
    return worst


def compare(
    cfgs: list, reps: int, device: torch.device, log: Optional[Callable[[str], None]] = None, name: str = ""
) -> dict[str, Any]:
    """Wall time of the configs one after another and in lockstep, alternating ``reps`` times."""
    from ..run.lockstep import groups
    from ..run.runner import run_many

    def sequential(seconds):  # run_many of one config is Simulation(cfg).run()
        return [run_many([c], seconds=seconds)[0] for c in cfgs]

    def lockstep(seconds):
        return run_many(cfgs, seconds=seconds)

    times: dict[str, list[float]] = {"sequential": [], "lockstep": []}
    cpu: dict[str, list[float]] = {"sequential": [], "lockstep": []}
    util: dict[str, list[float]] = {"sequential": [], "lockstep": []}
    phases: dict[str, list[dict[str, float]]] = {"sequential": [], "lockstep": []}
    finals: dict[str, list[tuple]] = {}
    for rep in range(reps):
        for key, fn in (("sequential", sequential), ("lockstep", lockstep)):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            with _GpuSampler(device) as gpu:
                seconds: dict[str, float] = {}
                t, c = time.perf_counter(), time.process_time()
                res = fn(seconds)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times[key].append(time.perf_counter() - t)
                cpu[key].append(time.process_time() - c)
                phases[key].append(seconds)
            if gpu.mean is not None:
                util[key].append(gpu.mean)
            finals[key] = _final(res)
            if log:
                log(f"  {name} {key} (rep {rep + 1}/{reps}): {times[key][-1]:.1f} s ({cpu[key][-1]:.1f} s CPU)")
    best = {k: min(v) for k, v in times.items()}
    best_cpu = {k: min(v) for k, v in cpu.items()}
    run_rounds = sum(c.fl.rounds for c in cfgs)
    # each way's phases in its fastest repetition, ms per run-round
    ms = {k: {p: 1e3 * v / run_rounds for p, v in phases[k][times[k].index(best[k])].items()} for k in times}
    batched = ms["lockstep"].get("train", 0.0) + ms["lockstep"].get("evaluate", 0.0)
    out = {
        "runs": len(cfgs),
        "rounds": sorted({c.fl.rounds for c in cfgs}),
        "lockstep_groups": len(groups(cfgs)),
        "sequential_seconds": best["sequential"],
        "lockstep_seconds": best["lockstep"],
        "speedup": best["sequential"] / best["lockstep"],
        "sequential_cpu_seconds": best_cpu["sequential"],
        "lockstep_cpu_seconds": best_cpu["lockstep"],
        "speedup_cpu_time": best_cpu["sequential"] / best_cpu["lockstep"],
        "sequential_ms_per_run_round": 1e3 * best["sequential"] / run_rounds,
        "lockstep_ms_per_run_round": 1e3 * best["lockstep"] / run_rounds,
        "phase_ms_per_run_round": ms,
        # the phases a lockstep batches are training and evaluation; set-up, planning,
        # concluding (attack, defense, step) and records are each run's own in both ways. Even
        # if those cost nothing, the lockstep could not beat its batched phases' time:
        "speedup_bound": (1e3 * best["sequential"] / run_rounds) / batched if batched > 0 else None,
        "max_abs_diff_final_metrics": _diff(finals["sequential"], finals["lockstep"]),
        "statuses_equal": [f[2] for f in finals["sequential"]] == [f[2] for f in finals["lockstep"]],
        "all_seconds": times,
        "all_cpu_seconds": cpu,
    }
    if device.type == "cuda":
        out["gpu_utilization_pct"] = {k: (sum(v) / len(v) if v else None) for k, v in util.items()}
        out["gpu_busy_seconds"] = {
            k: (best[k] * out["gpu_utilization_pct"][k] / 100 if out["gpu_utilization_pct"][k] is not None else None)
            for k in best
        }
    return out


def process_startup() -> Optional[float]:
    """Seconds a fresh Python process needs to import the run stack (what each run
    pays when runs are separate processes)."""
    code = "import fedarena.cli, fedarena.run.simulation"
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    best = None
    for _ in range(2):
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=120)
        if r.returncode != 0:
            return None
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return best


def bench_lockstep(scale: str, device: torch.device, data_root: Optional[str], log=None) -> dict[str, Any]:
    """The ``lockstep`` section. ``scale``: ``tiny`` (tests), ``quick`` or ``default``."""
    dev = device.type
    if scale == "tiny":
        plan = {"fall-of-cc": (2, 2), "digits": (2, 2)}
        reps = 1
    elif scale == "quick":
        plan = {"fall-of-cc": (2, 5), "digits": (8, 5)}
        reps = 1
    else:
        plan = {"fall-of-cc": (16, 30), "digits": (64, 20)}
        reps = 2
    out: dict[str, Any] = {}
    runs, rounds = plan["fall-of-cc"]
    cfgs, source = _fall_of_cc_configs(runs, rounds, None if scale == "tiny" else data_root, dev)
    out["fall-of-cc"] = {
        **compare(cfgs, reps, device, log, "fall-of-cc"),
        "data": source,
        "workload": "fedarena reproduce fall-of-cc: every "
        f"{max(1, 144 // runs)}th run of the 144, {rounds} rounds instead of 300",
    }
    runs, rounds = plan["digits"]
    out["digits"] = {
        **compare(_digits_configs(runs, rounds, dev), reps, device, log, "digits"),
        "workload": "digits: attacks (none, label-flip, alie, ipm) x defenses (fedavg, median, "
        "trimmed-mean, krum) x seeds; 20 clients, FedAvg, evaluation every round",
    }
    out["process_startup_s"] = process_startup() if scale != "tiny" else None
    if log:
        for k in ("fall-of-cc", "digits"):
            bound = out[k].get("speedup_bound")
            log(
                f"  {k}: {out[k]['runs']} runs, sequential {out[k]['sequential_seconds']:.1f} s, lockstep "
                f"{out[k]['lockstep_seconds']:.1f} s: x{out[k]['speedup']:.1f}"
                + (f" (bound x{bound:.1f})" if bound is not None else "")
            )
    return out


__all__ = ["bench_lockstep", "compare", "process_startup"]
