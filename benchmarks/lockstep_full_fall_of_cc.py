"""The whole ``fedarena reproduce fall-of-cc`` grid (144 runs x 300 rounds) played one run
after another and in lockstep, in one process, as ``fedarena bench``'s lockstep section
does for its 16-run subset (:func:`fedarena.bench.lockstep.compare`, one repetition of
each way: together about 25 minutes on one CPU thread).

Usage (from the repository root)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/lockstep_full_fall_of_cc.py \\
        --data-root ../shared/data --out benchmarks/results/lockstep-fall-of-cc-full-1thread

Writes ``bench.json``: both ways' wall and CPU seconds, the speed-up, the per-phase
milliseconds per run-round and the bound (see ``benchmarks/README.md``, "Lockstep").
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True, help="folder holding fashion-mnist/ and mnist/")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()

    from fedarena.bench.lockstep import compare
    from fedarena.config import load_config
    from fedarena.reproduce.fall_of_cc import FallOfCC

    trees = FallOfCC().runs(quick=False)
    over = [f"data.root={args.data_root}", "data.download=false"]
    cfgs = [
        load_config(None, over, base=tree).model_copy(update={"name": rid.replace("/", "-")})
        for rid, tree in trees.items()
    ]
    print(f"{len(cfgs)} runs x {cfgs[0].fl.rounds} rounds", flush=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load = os.getloadavg()
    out = compare(cfgs, 1, torch.device("cpu"), lambda line: print(line, flush=True), "fall-of-cc (all 144 runs)")
    out.update(
        started=started,
        threads=torch.get_num_threads(),
        load_average_start=load,
        load_average_end=os.getloadavg(),
        torch=torch.__version__,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(out, indent=1, default=str))
    print(
        f"one after another {out['sequential_seconds']:.1f} s, lockstep {out['lockstep_seconds']:.1f} s: "
        f"x{out['speedup']:.2f} (bound x{out['speedup_bound']:.2f}); written to {args.out}"
    )


if __name__ == "__main__":
    main()
