"""Seconds per call of the robust rules added from the peers (issue 23) next to existing
ones, at n = 100 rows, d = 1e6 columns, U ~ N(0, 1), f = n // 5 = 20 declared attackers
(MDA and SMEA enumerate C(n, f) subsets: they are timed at f = 2, C(100, 2) = 4950).

    OMP_NUM_THREADS=1 python benchmarks/peer_rules_timing.py [--threads 1] [--out benchmarks/results]

Writes ``peer-rules-timing.json`` and ``peer-rules-timing.md``. FLDetector is timed on its
fourth round (three rounds of history: L-BFGS pairs and a prediction per client).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from fedarena.core.layout import ParamLayout
from fedarena.defenses.base import RoundContext
from fedarena.registry import DEFENSES, STAGES

EXISTING = ["median", "trimmed-mean", "krum", "multi-krum", "rfa", "cc"]
NEW = ["mda", "monna", "meamed", "caf", "smea", "dnc", "signguard", "clipped-clustering", "fldetector", "lasa"]
SMALL_F = {"mda": 2, "smea": 2}


def ctx_for(n: int, d: int, f: int, t: int = 0, params: torch.Tensor | None = None) -> RoundContext:
    return RoundContext(
        round=t,
        layout=ParamLayout.from_params({"w": torch.zeros(d)}),
        client_ids=torch.arange(n),
        num_samples=torch.ones(n, dtype=torch.long),
        f=f,
        global_params=torch.zeros(d) if params is None else params,
        generator=torch.Generator().manual_seed(t),
    )


def time_rule(name: str, U: torch.Tensor, f: int, reps: int) -> float:
    n, d = U.shape
    best = float("inf")
    for _ in range(reps):
        rule = DEFENSES.build(name, {})
        rule.validate(n, f)
        if name == "fldetector":  # three rounds of history first
            w = torch.zeros(d)
            for t in range(3):
                a = rule(U + 0.01 * t, ctx_for(n, d, f, t, w.clone()))
                w = w + a.update
            c = ctx_for(n, d, f, 3, w.clone())
        else:
            c = ctx_for(n, d, f)
        t0 = time.perf_counter()
        rule(U, c)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--d", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n, d = args.n, args.d
    U = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    f = n // 5
    rows = []
    for name in EXISTING + NEW:
        ff = SMALL_F.get(name, f)
        sec = time_rule(name, U, ff, args.reps)
        rows.append({"rule": name, "new": name in NEW, "f": ff, "seconds": sec})
        print(f"{name:20s} f={ff:3d} {sec:8.3f} s", flush=True)
    arc = STAGES.build("arc", {"arc": True})
    best = float("inf")
    for _ in range(args.reps):
        t1 = time.perf_counter()
        arc(U, ctx_for(n, d, f))
        best = min(best, time.perf_counter() - t1)
    rows.append({"rule": "arc (stage)", "new": True, "f": f, "seconds": best})
    print(f"{'arc (stage)':20s} f={f:3d} {best:8.3f} s", flush=True)
    t1 = time.perf_counter()
    U.mean(0)
    mean_s = time.perf_counter() - t1
    t1 = time.perf_counter()
    U @ U.T
    gram_s = time.perf_counter() - t1
    import os

    res = {
        "load_average_1_5_15min": list(os.getloadavg()),
        "n": n,
        "d": d,
        "threads": args.threads,
        "reps": args.reps,
        "mean_seconds": mean_s,
        "gram_seconds": gram_s,
        "machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__},
        "rules": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "peer-rules-timing.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [
        f"# Robust rules at n = {n}, d = {d:.0e} (seconds per call, best of {args.reps}, {args.threads} thread(s))",
        "",
        "U ~ N(0, 1), float32, CPU; f = n // 5 declared attackers except where the f column says otherwise "
        "(MDA and SMEA enumerate every subset of n - f rows). Written by `benchmarks/peer_rules_timing.py`.",
        "",
        "| rule | added in issue 23 | f | seconds |",
        "|---|---|---:|---:|",
    ]
    lines += [f"| {r['rule']} | {'yes' if r['new'] else ''} | {r['f']} | {r['seconds']:.3f} |" for r in rows]
    lines += [
        "",
        f"Yardsticks: mean of the rows {mean_s:.3f} s, Gram matrix U U^T {gram_s:.3f} s. "
        f"Load average at the end (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in res['load_average_1_5_15min'])} "
        "(a shared machine: compare rules within one table, not across runs).",
    ]
    (out / "peer-rules-timing.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
