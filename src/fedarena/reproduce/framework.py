"""The reproduction framework: a paper module declares runs and claims; this runs them.

A paper module registers a :class:`Paper` subclass in ``PAPERS``::

    @PAPERS.register("my-paper")
    class MyPaper(Paper):
        '''Title (venue year).'''
        def runs(self, quick):
            base = {"data": {"dataset": "digits"}, "fl": {"rounds": 20 if quick else 200}}
            return {"fedavg": base, "median": deep_update(base, {"defense": {"name": "median"}})}
        def claims(self, quick):
            return [Claim("T1", "median keeps accuracy", paper=0.9,
                          measure=lambda r: r.final("median", "main_acc"),
                          check=lambda ours: ours >= 0.8, rule=">= 0.8")]

``fedarena reproduce my-paper [--quick]`` runs every config (paired seeds), evaluates
every claim and writes ``claims.md``, ``claims.json`` and ``results.csv``. A claim's
verdict is ``pass``/``fail`` from its rule, or ``info`` when it only reports a number.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import load_config
from ..errors import ConfigError
from ..run.simulation import RunResult, Simulation
from ..registry import PAPERS
from ..run.records import _clean, write_run


@dataclass
class Claim:
    """One checkable statement: the paper's value, how to compute ours, the pass rule."""

    id: str
    description: str
    paper: Any
    measure: Callable[["Results"], Any]
    check: Optional[Callable[[Any], bool]] = None
    rule: str = ""


@dataclass
class Results:
    """What claims are computed from: each run's result, plus free-form extra tables."""

    runs: dict[str, RunResult] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def final(self, run: str, key: str) -> Any:
        """The last evaluated value of a metric (``main_acc``, ``backdoor_acc``, ...)."""
        m = self.runs[run].metrics
        return m[-1].get(key) if m else None

    def series(self, run: str, key: str) -> list[Any]:
        return [m.get(key) for m in self.runs[run].metrics]


@dataclass
class ClaimResult:
    id: str
    description: str
    paper: Any
    ours: Any
    verdict: str  # pass | fail | info | error
    rule: str


@dataclass
class Report:
    name: str
    quick: bool
    claims: list[ClaimResult]
    wall_time_s: float

    def markdown_table(self) -> str:
        lines = ["| claim | description | paper | ours | rule | verdict |", "|---|---|---|---|---|---|"]
        for c in self.claims:
            lines.append(f"| {c.id} | {c.description} | {fmt(c.paper)} | {fmt(c.ours)} | {c.rule} | **{c.verdict}** |")
        return "\n".join(lines)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.claims:
            out[c.verdict] = out.get(c.verdict, 0) + 1
        return out


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "-"
    return str(v)


class Paper:
    """Base class of a reproduction module."""

    #: extra notes printed under the claims table (scale, what differs from the paper)
    notes: str = ""

    def runs(self, quick: bool) -> dict[str, dict[str, Any]]:
        """Run id -> config tree (nested dict, the same keys as a YAML config)."""
        return {}

    def claims(self, quick: bool) -> list[Claim]:
        return []

    def extras(self, quick: bool, results: Results) -> dict[str, Any]:
        """Computations that are not federated runs (Monte-Carlo checks, timing tables)."""
        return {}

    def write_files(self, quick: bool, results: Results, out: Path) -> None:
        """Extra report files (figures) written next to ``claims.md``."""


def deep_update(base: dict, changes: dict) -> dict:
    """A copy of ``base`` with nested ``changes`` merged in."""
    out = {k: (deep_update(v, {}) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in changes.items():
        out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def configs_with_overrides(runs: dict[str, dict[str, Any]], overrides: list[str]) -> dict[str, Any]:
    """Validated configs of every run with the user's ``--set`` overrides.

    An ``attack.*`` or ``defense.*`` parameter applies to the runs whose attack or
    defense declares it (``--set attack.z=1.2`` changes the ALIE runs only); a key that
    no run accepts is an error.
    """
    configs, used = {}, set()
    for rid, tree in runs.items():
        kept = list(overrides)
        while True:
            try:
                configs[rid] = load_config(None, kept, base=tree)
                break
            except ConfigError as e:
                drop = [o for o in kept if o.split("=", 1)[0].strip() == e.field
                        and e.field.split(".")[0] in ("attack", "defense") and "unknown parameter" in e.problem]
                if not drop:
                    raise
                kept.remove(drop[0])
        used |= set(kept)
    unused = [o for o in overrides if o not in used]
    if unused:
        raise ConfigError(unused[0].split("=", 1)[0], "no run of this reproduction accepts this parameter")
    return configs


def run_reproduction(name: str, quick: bool, out: str | Path, overrides: Optional[list[str]] = None,
                     console=None, write_runs: bool = True) -> Report:
    paper: Paper = PAPERS.get(name)()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    configs = configs_with_overrides(paper.runs(quick), overrides or [])
    results = Results()
    progress = None
    if console is not None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TimeElapsedColumn(), console=console)
        progress.start()
        task = progress.add_task(f"reproduce {name}", total=len(configs))
    try:
        for rid, cfg in configs.items():
            if progress is not None:
                progress.update(task, description=f"{name}: {rid}")
            res = Simulation(cfg).run()
            results.runs[rid] = res
            if write_runs:
                write_run(res, out / "runs" / rid, plot=False)
            if progress is not None:
                progress.advance(task)
        results.extras = paper.extras(quick, results)
    finally:
        if progress is not None:
            progress.stop()
    claim_results = []
    for c in paper.claims(quick):
        try:
            ours = c.measure(results)
            verdict = "info" if c.check is None else ("pass" if c.check(ours) else "fail")
        except Exception as e:  # a claim that cannot be computed is reported, not hidden
            ours, verdict = f"error: {e}", "error"
        claim_results.append(ClaimResult(c.id, c.description, c.paper, ours, verdict, c.rule))
    report = Report(name, quick, claim_results, round(time.perf_counter() - start, 1))
    write_report(report, results, paper, out)
    paper.write_files(quick, results, out)
    return report


def write_report(report: Report, results: Results, paper: Paper, out: Path) -> None:
    title = PAPERS.summary(report.name)
    md = [f"# Reproduction: {report.name}{' (quick)' if report.quick else ''}", "", title, "",
          f"Wall time: {report.wall_time_s} s. Verdicts: {report.counts()}", "", report.markdown_table(), ""]
    if paper.notes:
        md += ["## Notes", "", paper.notes.strip(), ""]
    for key, table in results.extras.items():
        if isinstance(table, str):
            md += [f"## {key}", "", table, ""]
    (out / "claims.md").write_text("\n".join(md))
    (out / "claims.json").write_text(json.dumps(_clean({
        "name": report.name, "quick": report.quick, "wall_time_s": report.wall_time_s, "counts": report.counts(),
        "claims": [c.__dict__ for c in report.claims],
    }), indent=2, default=str) + "\n")
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run", "dataset", "attack", "defense", "seed", "final_main_acc", "final_backdoor_acc",
                    "max_backdoor_acc", "final_base_acc", "status", "wall_time_s"])
        for rid, r in results.runs.items():
            s, c = r.summary, r.config
            w.writerow([rid, c.data.dataset, c.attack.name, c.defense.name, c.seed, s.get("final_main_acc"),
                        s.get("final_backdoor_acc"), s.get("max_backdoor_acc"), s.get("final_base_acc"),
                        s.get("status"), s.get("wall_time_s")])


__all__ = ["Paper", "Claim", "Results", "Report", "deep_update", "run_reproduction", "configs_with_overrides"]
