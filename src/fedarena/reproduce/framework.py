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

``fedarena reproduce my-paper [--quick]`` runs every config (paired seeds) on the study
machinery (run folders, index, resume; see :mod:`fedarena.studies.sweep`), evaluates
every claim and writes ``claims.md``, ``claims.json`` and ``results.csv`` (one row per run). A claim's
verdict is ``pass``/``fail`` from its rule, or ``info`` when it only reports a number.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import load_config
from ..errors import ConfigError
from ..registry import PAPERS
from ..run.records import _clean, read_run
from ..run.simulation import RunResult
from ..studies.spec import Job
from ..studies.sweep import INDEX, folder_name, run_sweep


@dataclass
class Claim:
    """One checkable statement: the paper's value, how to compute ours, the pass rule."""

    id: str
    description: str
    paper: Any
    measure: Callable[["Results"], Any]
    check: Optional[Callable[[Any], bool]] = None
    rule: str = ""
    why: str = ""  # known reason, printed when the claim fails


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
    reason: str = ""  # one line: why it failed (empty unless fail / error)


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

    def failure_lines(self) -> list[str]:
        """One line per failed (or uncomputable) claim: its id and why."""
        return [f"{c.id} {c.verdict}: {c.reason}" for c in self.claims if c.verdict in ("fail", "error")]

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
    #: ``--set data.root=...`` of the reproduction, if given (where ``--quick`` looks for Fashion-MNIST)
    data_root: Optional[str] = None

    def runs(self, quick: bool) -> dict[str, dict[str, Any]]:
        """Run id -> config tree (nested dict, the same keys as a YAML config)."""
        return {}

    def claims(self, quick: bool) -> list[Claim]:
        return []

    def extras(self, quick: bool, results: Results) -> dict[str, Any]:
        """Computations that are not federated runs (Monte-Carlo checks, timing tables)."""
        return {}

    def figures(self, quick: bool, results: Results, out: Path) -> list[Path]:
        """Write the paper's figures (PNG) into ``out``; return their paths (listed in claims.md)."""
        return []


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
                     console=None, write_runs: bool = True, workers: int = 1) -> Report:
    """Run a paper's runs as a study in ``out`` (see :mod:`fedarena.studies.sweep`): a
    killed reproduction continues where it stopped when run again (finished runs are
    skipped, unfinished ones resume from their checkpoints). ``write_runs=False``
    removes the run folders once the claims are computed."""
    paper: Paper = PAPERS.get(name)()
    paper.data_root = next((o.split("=", 1)[1].strip() for o in overrides or [] if o.split("=", 1)[0].strip() == "data.root"),
                           None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    configs = configs_with_overrides(paper.runs(quick), overrides or [])
    jobs = [Job(rid, cfg.model_dump(mode="json")) for rid, cfg in configs.items()]
    progress = None
    if console is not None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console)
        progress.start()
        task = progress.add_task(f"reproduce {name}", total=len(configs))
    try:
        run_sweep(jobs, out, workers=workers,
                  on_result=(lambda res: progress.advance(task)) if progress is not None else None)
        if progress is not None:
            progress.update(task, completed=len(configs))
        results = Results()
        for job in jobs:
            rec = read_run(out / "runs" / folder_name(job.run_id))
            results.runs[job.run_id] = RunResult(configs[job.run_id], rec["metrics"], rec["clients"], rec["rounds"],
                                                 rec["summary"])
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
        reason = ""
        if verdict == "fail":
            reason = f"ours {fmt(ours)} does not meet '{c.rule}' (paper: {fmt(c.paper)})" + (f"; {c.why}" if c.why else "")
        elif verdict == "error":
            reason = str(ours)
        claim_results.append(ClaimResult(c.id, c.description, c.paper, ours, verdict, c.rule, reason))
    figures = [out / Path(p).name for p in paper.figures(quick, results, out)]
    report = Report(name, quick, claim_results, round(time.perf_counter() - start, 1))
    write_report(report, results, paper, out, figures)
    if not write_runs:
        shutil.rmtree(out / "runs", ignore_errors=True)
        (out / INDEX).unlink(missing_ok=True)
    return report


def write_report(report: Report, results: Results, paper: Paper, out: Path, figures: Optional[list[Path]] = None) -> None:
    title = PAPERS.summary(report.name)
    md = [f"# Reproduction: {report.name}{' (quick)' if report.quick else ''}", "", title, "",
          f"Wall time: {report.wall_time_s} s. Verdicts: {report.counts()}", "", report.markdown_table(), ""]
    if report.failure_lines():
        md += ["## Why claims failed", ""] + [f"- {line}" for line in report.failure_lines()] + [""]
    if paper.notes:
        md += ["## Notes", "", paper.notes.strip(), ""]
    for key, table in results.extras.items():
        if isinstance(table, str):
            md += [f"## {key}", "", table, ""]
    if figures:
        md += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    (out / "claims.md").write_text("\n".join(md))
    (out / "claims.json").write_text(json.dumps(_clean({
        "name": report.name, "quick": report.quick, "wall_time_s": report.wall_time_s, "counts": report.counts(),
        "claims": [c.__dict__ for c in report.claims],
    }), indent=2, default=str) + "\n")


__all__ = ["Paper", "Claim", "Results", "Report", "deep_update", "run_reproduction", "configs_with_overrides"]
