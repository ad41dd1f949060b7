"""``fedarena bench``'s report: the targets with their verdicts and ``bench.md``'s tables."""

from __future__ import annotations

import math
from typing import Any, Optional

from ..core.tables import markdown_row, markdown_table
from .aggregators import BYZFL_SECONDS


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and a verdict."""
    rows = []
    tr = res.get("training", {})

    def add(name, value, ok, goal):
        rows.append({"target": name, "goal": goal, "measured": value, "met": ok})

    m = tr.get("mlp-digits", {})
    if "speedup_vs_sequential" in m:
        add("mlp-digits speedup vs sequential", m["speedup_vs_sequential"], m["speedup_vs_sequential"] >= 5, ">= 5")
    c = tr.get("cnn-fmnist", {})
    if "fraction_of_batched_bound" in c:
        add(
            "cnn-fmnist fraction of batched bound",
            c["fraction_of_batched_bound"],
            c["fraction_of_batched_bound"] >= 0.9,
            ">= 0.9",
        )
    fl = res.get("flower", {})
    if fl.get("vectorized_over_flower") is not None:
        v = fl["vectorized_over_flower"]
        add("LeNet workload vs Flower's simulation (same model, data, clients)", v, v >= 2, ">= 2x")
    ls = res.get("lockstep", {})
    for key, goal in (("fall-of-cc", 5), ("digits", 10)):
        if "speedup" in ls.get(key, {}):
            v = ls[key]["speedup"]
            add(f"lockstep {key} ({ls[key]['runs']} runs) vs one after another (wall)", v, v >= goal, f">= {goal}x")
            v = ls[key]["speedup_cpu_time"]
            add(f"lockstep {key} ({ls[key]['runs']} runs) vs one after another (CPU time)", v, v >= goal, f">= {goal}x")
            v = ls[key].get("speedup_bound")
            if v is not None:
                add(f"lockstep {key}: bound if unbatched phases were free", v, v >= goal, f">= {goal}x")
    sp = [v["speedup_vs_sequential"] for v in tr.values() if "speedup_vs_sequential" in v]
    if sp:
        add("never slower than sequential (min speedup, all workloads)", min(sp), min(sp) >= 1.0, ">= 1")
    ag = res.get("aggregators", {})
    for r in ("krum", "multi-krum"):
        og = ag.get(r, {}).get("over_gram", {}).get("n=100,d=1e6")
        if og is not None:
            add(f"{r} time / Gram GEMM time (n=100, d=1e6)", og, og <= 2, "<= 2")
    byz = [ag[r]["speedup_vs_byzfl"] for r in BYZFL_SECONDS if "speedup_vs_byzfl" in ag.get(r, {})]
    if len(byz) == len(BYZFL_SECONDS):
        gm = math.exp(sum(math.log(b) for b in byz) / len(byz))
        add("six rules vs ByzFL, geometric mean speedup", gm, gm >= 3, ">= 3")
    e2e = res.get("end_to_end", {})
    if "wall_seconds" in e2e:
        add("100-round Fashion-MNIST wall time (s)", e2e["wall_seconds"], e2e["wall_seconds"] < 180, "< 180")
    mem = res.get("memory", {})
    if "working_set_mb" in mem:
        add(
            "1,000 clients x 1M params: peak RSS beyond U and the data (MB)",
            mem["working_set_mb"],
            mem["working_set_mb"] < 1024,
            "bounded (< 1 GB)",
        )
    return rows


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0 or math.isnan(v):
            return f"{v:g}"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}"
    return str(v)


def to_markdown(res: dict[str, Any]) -> str:
    lines = [
        f"# fedarena bench ({'quick' if res['quick'] else 'full'})",
        "",
        f"{res['timestamp']} | {res['device']} | torch {res['torch']} | {res['threads']} threads | "
        f"GEMM peak {res['gemm']['gflops']:.1f} GFLOP/s (n={res['gemm']['size']}) | total {res['seconds']:.0f} s | "
        f"load average at start {res.get('load_average_start')}, at end {res.get('load_average_end')}",
        "",
        "## Local training (client-epochs/s; best of the repetitions, variants interleaved)",
        "",
    ]
    rows: list = []
    for name, t in res.get("training", {}).items():
        if "skipped" in t:
            rows.append(f"| {name} | skipped: {t['skipped']} |||||||||||||")  # one cell spanning the row
            continue
        rows.append(
            [
                name,
                f"{t['params']:,}",
                t["clients"],
                _fmt(t["engine"]["client_epochs_per_s"]),
                _fmt(t["sequential"]["client_epochs_per_s"]),
                _fmt(t["batched"]["client_epochs_per_s"]),
                _fmt(t["speedup_vs_sequential"]),
                _fmt(t["fraction_of_batched_bound"]),
                _fmt(t.get("fraction_of_channels_last_bound")),
                _fmt(t["engine_gflops"]),
                _fmt(t["fraction_of_gemm_peak"]),
                t["engine"]["path"],
                f"{t['max_abs_diff_vs_sequential']:.1e}",
                _fmt((t.get("engine_sequential") or {}).get("vs_sequential_loop")),
            ]
        )
    lines.append(
        markdown_table(
            [
                "workload",
                "params",
                "clients",
                "engine",
                "sequential loop",
                "batched bound",
                "speedup vs sequential",
                "fraction of batched bound",
                "(channels-last bound)",
                "engine GFLOP/s",
                "fraction of GEMM peak",
                "engine path",
                "max abs diff",
                "engine's sequential path vs loop",
            ],
            rows,
            align="lrrrrrrrrrrlrr",
        )
    )
    ag, yard = res.get("aggregators", {}), res.get("yardsticks", {})
    if ag:
        keys = list(yard)
        rows = []
        for r, v in ag.items():
            cells = []
            for k in keys:
                s = v["seconds"].get(k)
                cells.append("-" if s is None else f"{s:.4f} ({_fmt(v['speedup'].get(k), 2)}x)")
            og = v.get("over_gram", {}).get(v.get("at"))
            rows.append([r, *cells, _fmt(og, 2), _fmt(v.get("speedup_vs_byzfl"), 2)])
        # the yardstick rows leave the last two cells bare ("| |", not "|  |"): written as lines
        for label, key, digits in (
            ("*mean (one memory pass)*", "mean_seconds", 4),
            ("*Gram GEMM U U^T*", "gram_seconds", 4),
            ("*reference pairwise loop*", "reference_pairwise_loop_seconds", 3),
        ):
            rows.append(markdown_row([label, *(f"{yard[k][key]:.{digits}f}" for k in keys)]) + " | |")
        lines += [
            "",
            "## Aggregators (seconds per call; reference speed-up in parentheses)",
            "",
            markdown_table(
                ["rule", *keys, "x Gram (largest)", "vs ByzFL (n=100, d=1e6)"], rows, align="l" + "r" * (len(keys) + 2)
            ),
        ]
        lines += [
            "",
            "f = n // 5 declared attackers; U ~ N(0, 1). References: NumPy median / sort, pairwise-loop "
            "distances for Krum, Multi-Krum and Bulyan, per-client loops for RFA and CC, NumPy sign vote.",
        ]
    lines += _lockstep_markdown(res.get("lockstep")) + _flower_markdown(res.get("flower"))
    for title, key in (
        ("End-to-end", "end_to_end"),
        ("Memory", "memory"),
        ("AutoAdapt: constrained vs unconstrained epoch", "constrained_epoch"),
    ):
        sec = res.get(key)
        if sec:
            lines += ["", f"## {title}", ""] + [f"- {k}: {_fmt(v)}" for k, v in sec.items()]
    tg = res.get("targets", [])
    if tg:
        lines += [
            "",
            "## Targets",
            "",
            markdown_table(
                ["target", "goal", "measured", "met"],
                ([t["target"], t["goal"], _fmt(t["measured"]), _fmt(t["met"])] for t in tg),
                align="llrl",
            ),
        ]
    for note in res.get("notes", []):
        lines.append(f"\n> {note}")
    return "\n".join(lines) + "\n"


def _lockstep_markdown(ls: Optional[dict]) -> list[str]:
    if not ls:
        return []
    rows = []
    for key in ("fall-of-cc", "digits"):
        w = ls.get(key)
        if not w:
            continue
        gpu = w.get("gpu_utilization_pct")
        gpu_s = f"{_fmt(gpu.get('sequential'))} / {_fmt(gpu.get('lockstep'))}" if gpu else "-"
        rows.append(
            [
                key,
                f"{w['runs']} x {'/'.join(str(r) for r in w['rounds'])}",
                w["lockstep_groups"],
                f"{w['sequential_seconds']:.1f}",
                f"{w['lockstep_seconds']:.1f}",
                f"**{w['speedup']:.2f}x**",
                f"{w['speedup_cpu_time']:.2f}x",
                f"{w['sequential_ms_per_run_round']:.1f} / {w['lockstep_ms_per_run_round']:.1f}",
                f"{w['max_abs_diff_final_metrics']:.1e}",
                gpu_s,
            ]
        )
    lines = [
        "",
        "## Lockstep (one run after another vs in lockstep, same process, alternating)",
        "",
        markdown_table(
            [
                "workload",
                "runs x rounds",
                "groups",
                "one after another (s)",
                "lockstep (s)",
                "speed-up (wall)",
                "speed-up (CPU time)",
                "ms per run-round (after / lockstep)",
                "max abs diff",
                "GPU util % (after / lockstep)",
            ],
            rows,
            align="llrrrrrrrl",
        ),
    ]
    for key in ("fall-of-cc", "digits"):
        if ls.get(key, {}).get("workload"):
            lines.append(
                f"\n- {key}: {ls[key]['workload']}" + (f"; data: {ls[key]['data']}" if ls[key].get("data") else "")
            )
    if ls.get("process_startup_s") is not None:
        lines.append(
            f"- one process's start-up (import of the run stack): {ls['process_startup_s']:.2f} s, paid once per "
            "run when runs are separate processes (not included above)"
        )
    if any(ls.get(k, {}).get("phase_ms_per_run_round") for k in ("fall-of-cc", "digits")):
        from ..run.lockstep import PHASES

        cols = ("setup",) + PHASES
        lines += [
            "",
            "### Where a run-round's time goes (ms per run-round, one after another / lockstep)",
            "",
            "Training (b) and evaluation (d) are batched over runs; set-up, planning (a), concluding (c: "
            "attack, defense, step, checks) and records are each run's own in both ways. `bound` is the "
            "speed-up the lockstep would reach if everything but its batched phases cost nothing: one after "
            "another's total over lockstep's training + evaluation.",
            "",
        ]
        rows = []
        for key in ("fall-of-cc", "digits"):
            w = ls.get(key, {})
            ms = w.get("phase_ms_per_run_round")
            if not ms:
                continue
            cells = [f"{ms['sequential'].get(c, 0.0):.2f} / {ms['lockstep'].get(c, 0.0):.2f}" for c in cols]
            rows.append([key, *cells, f"{_fmt(w.get('speedup_bound'))}x"])
        lines.append(markdown_table(["workload", *cols, "bound"], rows, align="l" + "r" * (len(cols) + 1)))
    return lines


def _flower_markdown(fl: Optional[dict]) -> list[str]:
    if not fl:
        return []
    if "skipped" in fl:
        return ["", "## Flower", "", f"skipped: {fl['skipped']}"]
    r = fl["client_epochs_per_s"]
    lines = [
        "",
        f"## Flower (flwr {fl['flwr']}, Ray, {fl['ray_actors']} actor(s)), alternating runs",
        "",
        fl["workload"],
        "",
        markdown_table(
            ["path", "client-epochs/s"],
            [
                ["fedarena, vectorized", _fmt(r["fedarena_vectorized"])],
                ["fedarena, sequential", _fmt(r["fedarena_sequential"])],
                ["Flower simulation", _fmt(r["flower"])],
            ],
            align="lr",
        ),
        "",
        f"fedarena (vectorized) is {_fmt(fl['vectorized_over_flower'])}x Flower's simulation; sequential "
        f"{_fmt(fl['sequential_over_flower'])}x.",
    ]
    return lines


__all__ = ["targets", "to_markdown"]
