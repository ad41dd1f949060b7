"""``fedarena bench``'s entry: run the sections a plan holds, write ``bench.json`` and
``bench.md``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Optional

import torch

from .aggregators import ROBUST_RULES, bench_aggregators
from .constrained import bench_constrained
from .end_to_end import bench_end_to_end, find_data_root
from .memory import bench_memory
from .plan import SECTIONS, make_plan
from .report import targets, to_markdown
from .timing import gemm_peak
from .training import bench_training


def _loadavg() -> Optional[list[float]]:
    """1/5/15-minute load averages: how busy the machine was (other processes skew timings)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run_bench(
    quick: bool = False,
    out: Path | str = "benchmarks/results/latest",
    console=None,
    *,
    scale: str = "default",
    device: Optional[str] = None,
    data_root: Optional[str] = None,
    only: Optional[list[str]] = None,
) -> dict[str, Any]:
    """Run the benchmark; write ``out/bench.json`` and ``out/bench.md``; return the results.

    ``only``: the sections to run (of :data:`SECTIONS`; default all the plan has).

    ``device``: ``None`` uses CUDA when available, else the CPU. ``data_root``: where
    Fashion-MNIST lives for the end-to-end run (default ``$FEDARENA_DATA`` or the shared
    data folder when present); the run is skipped with a note when the files are absent.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    log = (lambda msg: console.print(msg, highlight=False)) if console is not None else None
    plan = make_plan(quick, scale)
    bad = [o for o in only or [] if o not in SECTIONS]
    if bad:
        from ..errors import ConfigError

        raise ConfigError("--only", f"unknown section {bad[0]!r}", ", ".join(SECTIONS))
    want = (lambda sec: True) if not only else (lambda sec: sec in only)
    t_start = time.perf_counter()
    res: dict[str, Any] = {
        "quick": quick,
        "scale": scale,
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_start": _loadavg(),
        "notes": [],
    }
    if log:
        log("GEMM peak ...")
    res["gemm"] = gemm_peak(plan.gemm_size, dev)
    if log:
        log(f"  {res['gemm']['gflops']:.1f} GFLOP/s\nlocal training ...")
    res["training"] = {}
    for w in plan.training if want("training") else []:
        r = bench_training(w, dev, w.reps or plan.reps, res["gemm"]["gflops"], log)
        res["training"][w.name] = r
        if "skipped" in r:
            res["notes"].append(f"training.{w.name} skipped: {r['skipped']}")
    if plan.memory and want("memory"):
        if log:
            log("memory: 1,000 clients x 1M parameters (a child process) ...")
        res["memory"] = bench_memory()
        if log:
            log(f"  {res['memory']}")
    if log and want("aggregators"):
        log("aggregators ...")
    res["aggregators"], res["yardsticks"] = (
        bench_aggregators(plan.agg_configs, dev, plan.reps, log) if want("aggregators") else ({}, {})
    )
    missing = [r for r in ROBUST_RULES if r not in res["aggregators"]] if want("aggregators") else []
    if missing:
        res["notes"].append("robust rules not registered, not measured: " + ", ".join(missing))
    if plan.lockstep != "off" and want("lockstep"):
        from .lockstep import bench_lockstep

        if log:
            log("lockstep: runs one after another vs in lockstep ...")
        res["lockstep"] = bench_lockstep(plan.lockstep, dev, find_data_root(data_root), log)
    if plan.flower and want("flower"):
        from .flower import bench_flower

        if log:
            log("flower: the LeNet workload through fedarena and Flower's simulation ...")
        res["flower"] = bench_flower(dev, log=log)
        if "skipped" in res["flower"]:
            res["notes"].append("flower skipped: " + res["flower"]["skipped"])
    if plan.end_to_end and want("end_to_end"):
        if log:
            log("end-to-end: 100 rounds of Fashion-MNIST ...")
        res["end_to_end"] = bench_end_to_end(data_root, dev, log=log)
        if "skipped" in res["end_to_end"]:
            res["notes"].append("end_to_end skipped: " + res["end_to_end"]["skipped"])
    elif not plan.end_to_end:
        res["notes"].append(
            "quick run: resnet18, 10/100/1,000 clients, the memory round and the end-to-end run are "
            "skipped (run without --quick)"
        )
    if want("constrained_epoch"):
        if log:
            log("constrained (AutoAdapt) epoch vs unconstrained ...")
        res["constrained_epoch"] = bench_constrained(reps=2 if quick else 5)
    if only:
        res["notes"].append(
            "sections run: " + ", ".join(only) + " (the others were not run; see the other result folders)"
        )
    res["only"] = only
    res["targets"] = targets(res)
    res["seconds"] = time.perf_counter() - t_start
    res["load_average_end"] = _loadavg()
    (out / "bench.json").write_text(json.dumps(res, indent=2, default=str))
    (out / "bench.md").write_text(to_markdown(res))
    return res


__all__ = ["run_bench"]
