"""The reproduction framework: a paper module declares runs and claims; this runs them.

A paper module registers a :class:`Paper` subclass in ``PAPERS``::

    @PAPERS.register("my-paper")
    class MyPaper(Paper):
        '''Title (venue year).'''
        def runs(self, quick):  # quick: a Scale
            base = {"data": {"dataset": "digits"}, "fl": {"rounds": 200 if quick is Scale.FULL else 20}}
            return {"fedavg": base, "median": deep_update(base, {"defense": {"name": "median"}})}
        def claims(self, quick):
            return [Claim("T1", "median keeps accuracy", paper=0.9,
                          measure=lambda r: r.final("median", "main_acc"),
                          check=lambda ours: ours >= 0.8, rule=">= 0.8")]

``fedarena reproduce my-paper [--quick]`` runs every config (paired seeds) on the study
machinery (run folders, index, resume; see :mod:`fedarena.studies.sweep`), evaluates
every claim and writes ``claims.md``, ``claims.json`` and ``results.csv`` (one row per run).

Every claim has a ``source``:

* ``paper``: a statement or number of the paper being reproduced; ``where`` says where it
  is (``"Table I"``, ``"Sec. V-B"``, ``"Fig. 3"``). Its verdict is ``pass`` or ``fail``,
  never ``info`` (a paper row without a rule is refused).
* ``derived``: an expectation we derived ourselves (a spec, a toy, a theorem's bound);
  ``where`` names it.
* ``check``: an implementation check (an equation, a reference value, a unit identity);
  shown in a table of its own and never counted as a claim.
* ``measurement``: a number reported with no reference at all; its verdict is ``info``.

A claim whose runs did not all finish (``error``, ``interrupted``, or no summary) gets the
verdict ``error`` naming those runs and their first error, whatever its rule says: the runs
a claim reads are recorded while it is measured. The counts line (``claims.md``, the
terminal) starts with the paper claims: ``paper claims reproduced: X of Y``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from ..config import load_config
from ..errors import ConfigError
from ..core.tables import markdown_table
from ..registry import PAPERS
from ..run.records import FINISHED, json_safe, read_run
from ..run.simulation import RunResult
from ..studies.spec import Job
from ..studies.sweep import INDEX, folder_name, run_sweep
from .quick import Scale


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
    source: str = ""  # paper | derived | check | measurement (default: derived with a rule, else measurement)
    where: str = ""  # paper: "Table I", "Sec. V-B", ...; derived: "spec L2 (toy)", "Theorem 10", ...

    def __post_init__(self) -> None:
        self.source = self.source or ("measurement" if self.check is None else "derived")
        if self.source not in SOURCES:
            raise ValueError(f"claim {self.id}: source {self.source!r} is not one of {', '.join(SOURCES)}")
        if self.source == "paper" and (self.check is None or not self.where):
            raise ValueError(f"claim {self.id}: a paper claim needs a pass rule (check) and where it is in the paper")
        if self.source == "measurement" and self.check is not None:
            raise ValueError(f"claim {self.id}: a measurement has no pass rule (make it a paper or derived claim)")
        if self.source in ("derived", "check") and self.check is None:
            raise ValueError(f"claim {self.id}: a {self.source} row needs a pass rule (or source='measurement')")


#: the kinds of rows, in the order the report lists them
SOURCES = ("paper", "derived", "check", "measurement")


class _Tracked(dict):
    """A dict that records which keys were read (the runs a claim depends on)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def values(self):
        self.read.update(self.keys())
        return super().values()

    def items(self):
        self.read.update(self.keys())
        return super().items()


@dataclass
class Results:
    """What claims are computed from: each run's result, plus free-form extra tables.

    ``status`` maps each run to its summary's ``status`` and ``error`` (``ok``,
    ``diverged``: finished; anything else: the run did not finish)."""

    runs: dict[str, RunResult] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    status: dict[str, dict[str, Any]] = field(default_factory=dict)

    def unfinished(self, runs: Optional[Iterable[str]] = None) -> dict[str, str]:
        """Run id -> ``"<status>: <first error>"`` of the runs (default: all) that did not finish."""
        out = {}
        for rid in self.status if runs is None else runs:
            st = self.status.get(rid)
            if st is None:
                continue
            if st.get("status") not in FINISHED:
                out[rid] = f"{st.get('status') or 'no summary'}: {st.get('error') or 'no error message'}"
        return out

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
    source: str = "derived"
    where: str = ""


@dataclass
class Report:
    name: str
    #: the older ``quick`` value of the scale (``False``, ``True`` or ``"smoke"``; :attr:`Scale.legacy`),
    #: as written in ``claims.json``
    quick: Any
    claims: list[ClaimResult]
    wall_time_s: float
    runs_total: int = 0
    #: run id -> "<status>: <first error>" of every run that did not finish
    runs_failed: dict[str, str] = field(default_factory=dict)

    def rows(self, source: str) -> list[ClaimResult]:
        return [c for c in self.claims if c.source == source]

    def markdown_table(self, sources: Iterable[str] = SOURCES) -> str:
        """One table per kind of row (paper claims, derived expectations, measurements,
        implementation checks), each under its heading."""
        out = []
        for source in sources:
            rows = self.rows(source)
            if not rows:
                continue
            ref = {"paper": "paper", "derived": "expected", "check": "reference", "measurement": "-"}[source]
            table = markdown_table(
                ["claim", "description", "where", ref, "ours", "rule", "verdict"],
                (
                    [
                        c.id,
                        cell(c.description),
                        cell(c.where) or "-",
                        cell(fmt(c.paper)),
                        cell(fmt(c.ours)),
                        cell(c.rule) or "-",
                        f"**{c.verdict}**",
                    ]
                    for c in rows
                ),
            )
            out.append("\n".join([f"### {HEADINGS[source]}", "", table]))
        return "\n\n".join(out)

    def failure_lines(self) -> list[str]:
        """One line per failed (or uncomputable) claim: its id and why."""
        return [f"{c.id} {c.verdict}: {c.reason}" for c in self.claims if c.verdict in ("fail", "error")]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.claims:
            out[c.verdict] = out.get(c.verdict, 0) + 1
        return out

    def counts_by_source(self) -> dict[str, dict[str, int]]:
        """Source -> verdict -> number of rows (sources with no row are left out)."""
        out: dict[str, dict[str, int]] = {}
        for c in self.claims:
            out.setdefault(c.source, {}).setdefault(c.verdict, 0)
            out[c.source][c.verdict] += 1
        return {s: out[s] for s in SOURCES if s in out}

    def counts_line(self) -> str:
        """``paper claims reproduced: X of Y; derived: ...; checks: ...; runs failed: N of M``."""
        return counts_line(self.counts_by_source(), self.runs_total, len(self.runs_failed))


HEADINGS = {
    "paper": "Paper claims",
    "derived": "Derived expectations (our spec, toys, theorems; not the paper's numbers)",
    "measurement": "Measurements (no reference; not judged)",
    "check": "Implementation checks (not claims)",
}


def counts_line(by_source: dict[str, dict[str, int]], runs_total: int = 0, runs_failed: int = 0) -> str:
    """The counts line of a report from its ``counts_by_source`` (also used for the README table)."""

    def part(label: str, counts: dict[str, int], verb: str) -> str:
        total = sum(counts.values())
        rest = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()) if v != "pass")
        return f"{label} {verb}: {counts.get('pass', 0)} of {total}" + (f" ({rest})" if rest else "")

    parts = [part("paper claims", by_source.get("paper", {}), "reproduced")]
    if "derived" in by_source:
        parts.append(part("derived expectations", by_source["derived"], "met"))
    if "check" in by_source:
        parts.append(part("implementation checks", by_source["check"], "pass"))
    if "measurement" in by_source:
        parts.append(f"{sum(by_source['measurement'].values())} measurements reported")
    if runs_total:
        parts.append(f"runs failed: {runs_failed} of {runs_total}")
    return "; ".join(parts)


def cell(text: Any) -> str:
    """Table-cell text: no line breaks, no bare pipes."""
    return str(text).replace("\n", " ").replace("|", "\\|")


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
    #: the paper's headline tables and figures that have no ``paper`` row, one bullet each with the
    #: reason (scale, data we do not have, not built); printed under "Not reproduced"
    not_reproduced: str = ""
    #: ``--set data.root=...`` of the reproduction, if given (where ``--quick`` looks for Fashion-MNIST)
    data_root: Optional[str] = None

    # Every method receives ``quick``, a :class:`~fedarena.reproduce.quick.Scale` (FULL, QUICK or
    # SMOKE); a subclass called directly with an older value (False / True / "smoke") maps it with Scale.of.

    def runs(self, quick: Scale) -> dict[str, dict[str, Any]]:
        """Run id -> config tree (nested dict, the same keys as a YAML config)."""
        return {}

    def claims(self, quick: Scale) -> list[Claim]:
        return []

    def extras(self, quick: Scale, results: Results) -> dict[str, Any]:
        """Computations that are not federated runs (Monte-Carlo checks, timing tables)."""
        return {}

    def figures(self, quick: Scale, results: Results, out: Path) -> list[Path]:
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
                drop = [
                    o
                    for o in kept
                    if o.split("=", 1)[0].strip() == e.field
                    and e.field.split(".")[0] in ("attack", "defense")
                    and "unknown parameter" in e.problem
                ]
                if not drop:
                    raise
                kept.remove(drop[0])
        used |= set(kept)
    unused = [o for o in overrides if o not in used]
    if unused:
        raise ConfigError(unused[0].split("=", 1)[0], "no run of this reproduction accepts this parameter")
    return configs


def run_reproduction(
    name: str,
    quick: Scale | bool | str,
    out: str | Path,
    overrides: Optional[list[str]] = None,
    console=None,
    write_runs: bool = True,
    workers: int = 1,
) -> Report:
    """Run a paper's runs as a study in ``out`` (see :mod:`fedarena.studies.sweep`): a
    killed reproduction continues where it stopped when run again (finished runs are
    skipped, unfinished ones resume from their checkpoints). ``write_runs=False``
    removes the run folders once the claims are computed. ``quick``: a :class:`Scale` (or
    an older value, ``False`` / ``True`` / ``"smoke"``, see :meth:`Scale.of`)."""
    scale = Scale.of(quick)
    paper: Paper = PAPERS.get(name)()
    paper.data_root = next(
        (o.split("=", 1)[1].strip() for o in overrides or [] if o.split("=", 1)[0].strip() == "data.root"), None
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    configs = configs_with_overrides(paper.runs(scale), overrides or [])
    jobs = [Job(rid, cfg.model_dump(mode="json")) for rid, cfg in configs.items()]
    progress = None
    if console is not None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
        )
        progress.start()
        task = progress.add_task(f"reproduce {name}", total=len(configs))
    try:
        run_sweep(
            jobs, out, workers=workers, on_result=(lambda res: progress.advance(task)) if progress is not None else None
        )
        if progress is not None:
            progress.update(task, completed=len(configs))
        results = Results()
        for job in jobs:
            rec = read_run(out / "runs" / folder_name(job.run_id))
            results.runs[job.run_id] = RunResult(
                configs[job.run_id], rec["metrics"], rec["clients"], rec["rounds"], rec["summary"]
            )
            results.status[job.run_id] = {"status": rec["summary"].get("status"), "error": rec["summary"].get("error")}
        results.runs = _Tracked(results.runs)
        results.extras = paper.extras(scale, results)
        extras_runs = set(results.runs.read)
    finally:
        if progress is not None:
            progress.stop()
    claim_results = evaluate_claims(paper.claims(scale), results, extras_runs)
    figures = [out / Path(p).name for p in paper.figures(scale, results, out)]
    report = Report(
        name,
        scale.legacy,
        claim_results,
        round(time.perf_counter() - start, 1),
        runs_total=len(jobs),
        runs_failed=results.unfinished(),
    )
    write_report(report, results, paper, out, figures)
    if not write_runs:
        shutil.rmtree(out / "runs", ignore_errors=True)
        (out / INDEX).unlink(missing_ok=True)
    return report


def evaluate_claims(claims: list[Claim], results: Results, extras_runs: Iterable[str] = ()) -> list[ClaimResult]:
    """Each claim's value and verdict. A claim that read a run that did not finish (or
    read ``extras`` computed from one, ``extras_runs``) is ``error``, naming the runs."""
    if not isinstance(results.runs, _Tracked):
        results.runs = _Tracked(results.runs)
    extras = _Tracked(results.extras)
    results.extras = extras
    out = []
    for c in claims:
        results.runs.read = set()
        extras.read = set()
        try:
            ours = c.measure(results)
            verdict = "info" if c.check is None else ("pass" if c.check(ours) else "fail")
        except Exception as e:  # a claim that cannot be computed is reported, not hidden
            ours, verdict = f"error: {e}", "error"
        used = set(results.runs.read) | (set(extras_runs) if extras.read else set())
        failed = results.unfinished(sorted(used))
        reason = ""
        if failed:
            first = next(iter(failed.values()))
            names = ", ".join(list(failed)[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
            verdict = "error"
            reason = f"{len(failed)} of its runs did not finish ({names}); first error: {first}"[:400]
        elif verdict == "fail":
            reason = f"ours {fmt(ours)} does not meet '{c.rule}' (paper: {fmt(c.paper)})" + (
                f"; {c.why}" if c.why else ""
            )
        elif verdict == "error":
            reason = str(ours)
        out.append(ClaimResult(c.id, c.description, c.paper, ours, verdict, c.rule, reason, c.source, c.where))
    return out


def write_report(
    report: Report, results: Results, paper: Paper, out: Path, figures: Optional[list[Path]] = None
) -> None:
    title = PAPERS.summary(report.name)
    md = [
        f"# Reproduction: {report.name}{' (quick)' if report.quick else ''}",
        "",
        title,
        "",
        f"**{report.counts_line()}**",
        "",
        f"Wall time: {report.wall_time_s} s.",
        "",
    ]
    if report.runs_failed:
        first = next(iter(report.runs_failed.items()))
        md += [
            f"**{len(report.runs_failed)} of {report.runs_total} runs did not finish** (first: {first[0]}, "
            f"{first[1]}); every claim that reads them is `error`.",
            "",
        ]
    md += claims_sections(report, paper)
    for key, table in results.extras.items():
        if isinstance(table, str):
            md += [f"## {key}", "", table, ""]
    if figures:
        md += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    (out / "claims.md").write_text("\n".join(md))
    write_claims_json(report, out / "claims.json")


def claims_sections(report: Report, paper: Paper) -> list[str]:
    """The claims tables and the sections every ``claims.md`` has after its header: why
    claims failed, what is not reproduced, the paper module's notes."""
    md = [report.markdown_table(), ""]
    if report.failure_lines():
        md += ["## Why claims failed", ""] + [f"- {line}" for line in report.failure_lines()] + [""]
    if paper.not_reproduced.strip():
        md += ["## Not reproduced", "", paper.not_reproduced.strip(), ""]
    if paper.notes:
        md += ["## Notes", "", paper.notes.strip(), ""]
    return md


def write_claims_json(report: Report, path: Path, **extra: Any) -> None:
    """``claims.json``: the counts, the runs that did not finish, ``extra`` keys, every claim."""
    path.write_text(
        json.dumps(
            json_safe(
                {
                    "name": report.name,
                    "quick": report.quick,
                    "wall_time_s": report.wall_time_s,
                    "counts": report.counts(),
                    "counts_by_source": report.counts_by_source(),
                    "counts_line": report.counts_line(),
                    "runs_total": report.runs_total,
                    "runs_failed": report.runs_failed,
                    **extra,
                    "claims": [c.__dict__ for c in report.claims],
                }
            ),
            indent=2,
            default=str,
        )
        + "\n"
    )


__all__ = [
    "Paper",
    "Claim",
    "Results",
    "Report",
    "deep_update",
    "run_reproduction",
    "configs_with_overrides",
    "evaluate_claims",
    "counts_line",
    "SOURCES",
    "claims_sections",
    "write_claims_json",
]
