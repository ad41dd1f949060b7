"""Final accuracy per defense under default-strength and optimized ALIE and IPM.

Fashion-MNIST at CPU scale: 20 clients (all in every round), 4 of them malicious, mildly
non-IID (Dirichlet alpha = 1), the MLP (one hidden layer of 64), FedAvg with 5 local SGD
steps of 32 samples at lr 0.1, 40 rounds. Defenses: median, trimmed mean, Krum,
Multi-Krum, Bulyan, RFA, centered clipping with and without nearest-neighbour mixing,
each with the declared f = 4. Attacks: none (the same malicious clients honest), ALIE and
IPM at their default strength (ALIE's z formula, IPM's epsilon = 0.2) and with
``attack.optimize`` (20 evaluations per round, distance objective, grid search).

Usage (from the repository root)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/optimized_attacks.py \\
        --data-root ../shared/data --out benchmarks/results/optimized-attacks

Writes ``results.jsonl`` (one line per run, appended as runs finish; a rerun skips the
runs already there) and ``table.md`` (means over the seeds run, ``--seeds 0 1``).
``--quick`` runs 3 rounds of two defenses.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

DEFENSES = {
    "median": ["defense.name=median"],
    "trimmed-mean": ["defense.name=trimmed-mean"],
    "krum": ["defense.name=krum"],
    "multi-krum": ["defense.name=multi-krum"],
    "bulyan": ["defense.name=bulyan"],
    "rfa": ["defense.name=rfa"],
    "cc": ["defense.name=cc"],
    "cc+nnm": ["defense.name=cc", "defense.nnm=true"],
}
ATTACKS = {
    "none": ["attack.name=ipm", "attack.start_round=100000"],  # the malicious clients stay honest
    "alie": ["attack.name=alie"],
    "alie-opt": ["attack.name=alie", "attack.optimize=true"],
    "ipm": ["attack.name=ipm"],
    "ipm-opt": ["attack.name=ipm", "attack.optimize=true"],
}


def base(args, seed: int) -> list[str]:
    return [
        f"data.root={args.data_root}",
        "data.dataset=fashion-mnist",
        "data.download=false",
        "data.partition=dirichlet",
        "data.alpha=1.0",
        "model.name=mlp",
        "fl.num_clients=20",
        "fl.local_steps=5",
        "fl.batch_size=32",
        "fl.lr=0.1",
        f"fl.rounds={args.rounds}",
        "attack.num_malicious=4",
        f"eval.every={max(1, args.rounds // 4)}",
        f"seed={seed}",
    ]


def run_one(overrides: list[str]) -> dict:
    from fedarena.config import load_config
    from fedarena.run.simulation import Simulation

    cfg = load_config(None, overrides)
    t = time.perf_counter()
    res = Simulation(cfg).run()
    strengths = [r["attack_strength"] for r in res.rounds if "attack_strength" in r]
    return {
        "final_main_acc": res.summary["final_main_acc"],
        "status": res.summary["status"],
        "wall_s": round(time.perf_counter() - t, 1),
        "strength_median": statistics.median(strengths) if strengths else None,
        "strength_default": next(
            (r["attack_strength_default"] for r in res.rounds if "attack_strength_default" in r), None
        ),
        "curve": [[m["round"], m["main_acc"]] for m in res.metrics],
    }


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def table(rows: list[dict]) -> str:
    """Final accuracy per defense and attack (mean over seeds), the worst attack, and the
    median strength the optimized attacks chose (mean over seeds)."""
    acc: dict[tuple[str, str], dict] = {}
    for key in {(r["defense"], r["attack"]) for r in rows}:
        same = [r for r in rows if (r["defense"], r["attack"]) == key]
        acc[key] = {
            "final_main_acc": _mean([r["final_main_acc"] for r in same]),
            "strength_median": _mean([r["strength_median"] for r in same]),
        }
    cols = list(ATTACKS)
    head = "| defense | " + " | ".join(cols) + " | worst | ALIE z* | IPM eps* |"
    lines = [head, "|" + "---|" * (len(cols) + 4)]
    for d in DEFENSES:
        cells, finite = [], []
        for a in cols:
            r = acc.get((d, a))
            v = None if r is None else r["final_main_acc"]
            cells.append("–" if v is None else f"{v:.3f}")
            if v is not None and a != "none":
                finite.append((v, a))
        worst = min(finite) if finite else None
        z = acc.get((d, "alie-opt"), {}).get("strength_median")
        e = acc.get((d, "ipm-opt"), {}).get("strength_median")
        lines.append(
            f"| {d} | " + " | ".join(cells) + f" | {'–' if worst is None else f'{worst[0]:.3f} ({worst[1]})'}"
            f" | {'–' if z is None else f'{z:.2f}'} | {'–' if e is None else f'{e:.2f}'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=os.environ.get("FEDARENA_DATA", "../shared/data"))
    p.add_argument("--out", default="benchmarks/results/optimized-attacks")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.rounds = 3
    defenses = ["median", "cc"] if args.quick else list(DEFENSES)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    done = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    have = {(r["defense"], r["attack"], r["seed"], r["rounds"]) for r in done}
    start = time.perf_counter()
    for seed in args.seeds:
        for d in defenses:
            for a, over in ATTACKS.items():
                if (d, a, seed, args.rounds) in have:
                    continue
                row = {
                    "defense": d,
                    "attack": a,
                    "seed": seed,
                    "rounds": args.rounds,
                    **run_one(base(args, seed) + DEFENSES[d] + over),
                }
                done.append(row)
                with open(path, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(
                    f"[{time.perf_counter() - start:7.1f}s] seed {seed} {d:12s} {a:9s} "
                    f"acc={row['final_main_acc']:.3f} strength={row['strength_median']} ({row['wall_s']} s)",
                    flush=True,
                )
    rows = [r for r in done if r["seed"] in args.seeds and r["rounds"] == args.rounds]
    text = f"Final accuracy, mean over seeds {sorted({r['seed'] for r in rows})}, {args.rounds} rounds\n\n" + table(
        rows
    )
    (out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
