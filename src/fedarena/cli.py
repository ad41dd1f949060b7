"""The ``fedarena`` command line: run, list, reproduce (and bench, when installed)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table

from .errors import ConfigError, DataNotFoundError

# idle OpenMP threads sleep instead of spinning: small tensor ops stay fast on busy machines
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Poisoning attacks and defenses in federated learning: simulate, measure, reproduce.",
)
console = Console(stderr=True)
out_console = Console()


def user_error(msg: str) -> None:
    """Print one line and exit with code 2 (a user error, not a crash)."""
    console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _workers(value: int) -> int:
    """``--workers``: a bad count is one line (exit 2), not a usage box."""
    if value < 1:
        user_error(f"--workers: must be >= 1 (got {value}) (valid: 1, 2, ... worker processes)")
    return value


def internal_error(e: BaseException, out: Optional[Path], where: str = "the run failed during set-up") -> None:
    """One line naming the error, the run folder and where the traceback is; exit 1."""
    import tempfile
    import traceback

    from .run.runner import ERROR_LOG

    log = out / ERROR_LOG if out is not None and (out / ERROR_LOG).exists() else None
    if log is None:  # no run folder yet (set-up failed): a log file of its own
        fd, name = tempfile.mkstemp(prefix="fedarena-error-", suffix=".log")
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(traceback.format_exception(e)))
        log = Path(name)
    where = f"run {out} failed (status: error)" if out is not None else where
    first = (str(e).splitlines() or [""])[0][:200]
    console.print(
        f"[bold red]error:[/] {escape(where)}: {type(e).__name__}: {escape(first)}; traceback in {escape(str(log))}",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(1)


@app.command()
def run(
    config: Optional[Path] = typer.Argument(
        None, help="YAML config (on the library defaults); omitted with no --set: the demo (configs/demo.yaml)."
    ),
    set_: List[str] = typer.Option(
        [],
        "--set",
        help="Override a key, e.g. --set fl.rounds=10 (repeatable); without "
        "CONFIG or --demo they apply to the library defaults.",
    ),
    demo: bool = typer.Option(
        False,
        "--demo",
        help="Start from the demo (configs/demo.yaml: digits, 4 of 20 clients plant a backdoor, FedAvg).",
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: a new runs/<time>-<name>)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run in a non-empty --out folder."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the unfinished run in this folder."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    track: Optional[str] = typer.Option(
        None,
        "--track",
        help="Follow the run in mlflow (local ./mlruns) or tensorboard (./tensorboard); optional extras.",
    ),
    track_uri: Optional[str] = typer.Option(None, "--track-uri", help="MLflow tracking URI or TensorBoard log folder."),
) -> None:
    """Run one experiment and write its metrics, client records, summary and curves.

    Exit codes: 0 completed, 3 diverged (NaN/Inf), 1 failed, 2 bad input, 130 interrupted.
    """
    from .config import DEMO_RUN, load_config
    from .run.records import new_run_dir, open_run_dir
    from .run.runner import EXIT_CODES, execute
    from .run.simulation import Simulation

    sim = None
    try:
        tracker = _tracker(track, track_uri)  # a missing extra is an error before a folder is made
        if resume is not None:
            if config is not None or set_ or out is not None or overwrite or demo:
                raise ConfigError(
                    "--resume",
                    "continues a run with its own config.yaml and folder",
                    "--resume DIR alone (no CONFIG, --set, --demo, --out or --overwrite)",
                )
            out = open_run_dir(resume, resume=True)
            cfg = load_config(out / "config.yaml")
        else:
            if demo and config is not None:
                raise ConfigError("--demo", "is a config of its own", "either CONFIG or --demo")
            demo = demo or (config is None and not set_)  # `fedarena run` alone: the demo
            if demo and not quiet:
                console.print(
                    "running the demo (configs/demo.yaml: digits, 4 of 20 clients plant a backdoor, FedAvg); "
                    "--set without a config starts from the library defaults",
                    highlight=False,
                )
            cfg = load_config(config, set_, base=DEMO_RUN if demo else None)
            if out is not None:
                out = open_run_dir(out, overwrite=overwrite)
            sim = Simulation(cfg)
            if out is None:
                out = new_run_dir(cfg.name)
        if tracker is not None:
            import yaml

            from .config import dump_config

            tracker.start(out.name, yaml.safe_load(dump_config(cfg)))
    except (ConfigError, DataNotFoundError) as e:
        user_error(str(e))
        return
    except Exception as e:  # an internal error before the run has a folder
        internal_error(e, None)
    status = "error"
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
    ) as bar:
        task = bar.add_task(cfg.name, total=cfg.fl.rounds, info="")

        def progress(t: int, ev: dict) -> None:
            info = f"acc {ev['main_acc']:.3f}" if ev else ""
            if ev and ev.get("backdoor_acc") is not None:
                info += f"  backdoor {ev['backdoor_acc']:.3f}"
            bar.update(task, completed=t + 1, info=info)
            if tracker is not None and ev and ev is not logged[0]:  # each evaluation once, as it comes
                logged[0] = ev
                tracker.log_round(ev.get("round", t), ev)

        logged: list = [None]
        try:
            result = execute(
                out, cfg if resume is None else None, sim=sim, resume=resume is not None, progress=progress
            )
            status = result.summary["status"]
        except KeyboardInterrupt:
            bar.stop()
            _end_tracked(tracker, "interrupted")
            console.print(
                f"[yellow]interrupted; the finished rounds are in {out} (continue: fedarena run --resume {out})[/]"
            )
            raise typer.Exit(EXIT_CODES["interrupted"]) from None
        except (ConfigError, DataNotFoundError) as e:
            bar.stop()
            _end_tracked(tracker, "error")
            user_error(str(e))
            return
        except Exception as e:  # the run folder has summary.json (status: error) and error.log
            bar.stop()
            _end_tracked(tracker, "error")
            internal_error(e, out)
    if tracker is not None:
        from .tracking import RUN_FILES

        tracker.finish(result.summary, [out / f for f in RUN_FILES])
    print_summary(result.summary, out)
    if result.summary.get("error"):
        console.print(f"[yellow]{result.summary['error']}[/]")
    raise typer.Exit(EXIT_CODES[status])


def _end_tracked(tracker, status: str) -> None:
    """A tracked run that stopped early ends with its status (not left running)."""
    if tracker is not None:
        tracker.finish({"status": status}, [])


def _tracker(kind: Optional[str], uri: Optional[str]):
    """The tracker ``--track`` asks for (None without it); a missing extra is a ConfigError."""
    from .tracking import make_tracker

    return make_tracker(kind, uri)


def print_summary(summary: dict, out: Path) -> None:
    table = Table(title=f"summary ({out})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        if v is None:
            continue
        if isinstance(v, dict):  # attack / defense: name and the parameters that are set
            v = " ".join([str(v.get("name"))] + [f"{a}={b}" for a, b in v.items() if a != "name" and b is not None])
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    out_console.print(table)


def shown_default(value) -> str:
    """A parameter's default as ``--set`` takes it, without spaces so that a listing
    wrapped at spaces never splits it: ``(0, 1, 2)`` -> ``[0,1,2]``."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(shown_default(v) for v in value) + "]"
    return repr(value)


def _sections():
    from .registry import ATTACKS, CLIENT_DEFENSES, DATASETS, DEFENSES, MODELS, PAPERS, PARTITIONS, STAGES

    return {
        "datasets": DATASETS,
        "partitions": PARTITIONS,
        "models": MODELS,
        "attacks": ATTACKS,
        "defenses": DEFENSES,
        "stages": STAGES,
        "client-defenses": CLIENT_DEFENSES,
        "reproductions": PAPERS,
    }


@app.command("list")
def list_(
    section: Optional[str] = typer.Argument(
        None,
        help="Only one section: datasets, partitions, models, attacks, defenses, stages, client-defenses, "
        "reproductions.",
    ),
) -> None:
    """Every registered dataset, partition, model, attack, defense (stage, client-side defense) with its parameters."""
    sections = _sections()
    if section is not None:
        key = section.lower().rstrip("s") + "s"
        if key not in sections:
            user_error(f"list: unknown section {section!r} (valid: {', '.join(sections)})")
        sections = {key: sections[key]}
    for title, reg in sections.items():
        # one parameter per line, folded rather than cut when the terminal is narrow
        # a list, not a table: lines wrap at spaces, so no default is ever cut at 80 columns
        out_console.print(f"[bold underline]{title}[/]")
        prefix = {"synthetic": "data.synthetic"}
        for name in reg.names():
            params = [
                f"{prefix.get(name, reg.prefix)}.{p.name}={shown_default(p.default)}"
                for p in reg.params(name).values()
                if not p.required and p.name not in ("root", "download", "verify")
            ]
            out_console.print(f"[bold]{name}[/]  {escape(reg.summary(name))}", highlight=False)
            if params:
                out_console.print(Padding(escape("  ".join(params)), (0, 0, 0, 4)), highlight=False)
        out_console.print()


@app.command()
def reproduce(
    name: str = typer.Argument(..., help="Which paper, see `fedarena list`."),
    quick: bool = typer.Option(False, "--quick", help="The CPU-sized version (minutes)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/reproduce-<name>)."),
    set_: List[str] = typer.Option([], "--set", help="Override a key in every run (e.g. data.root=...)."),
    workers: int = typer.Option(1, "--workers", callback=_workers, help="Worker processes (>= 1)."),
) -> None:
    """Run a paper's experiments and write claims.md, claims.json and results.csv.

    Rerun the same command to continue a stopped reproduction (finished runs are kept).
    Exit codes: 0 every run finished, 1 some runs did not finish (their claims are `error`), 2 bad input."""
    from .reproduce.framework import run_reproduction

    out = out or Path("runs") / f"reproduce-{name}{'-quick' if quick else ''}"
    try:
        report = run_reproduction(name, quick=quick, out=out, overrides=set_, console=console, workers=workers)
    except (ConfigError, DataNotFoundError) as e:
        user_error(str(e))
        return
    from .terminal import claims_tables

    for table in claims_tables(report):  # claims.md holds the Markdown, with the where and rule columns
        out_console.print(table)
    for line in report.failure_lines():  # one line per failed claim: what it measured against which rule
        out_console.print(f"[yellow]{escape(line)}[/]", highlight=False, soft_wrap=True)
    out_console.print(f"[bold]{escape(report.counts_line())}[/]", highlight=False)  # wrapped at spaces
    out_console.print(f"written to {out}")
    if report.runs_failed:  # no verdict from an unfinished run: the claims reading them are `error`
        first = next(iter(report.runs_failed.items()))
        out_console.print(
            f"[red]{len(report.runs_failed)} of {report.runs_total} runs did not finish "
            f"(first: {escape(first[0])}, {escape(first[1])}); rerun the same command to retry them[/]",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


@app.command()
def sweep(
    spec: Path = typer.Argument(..., help="Sweep spec YAML: base config, grid, variants (see examples/sweep.yaml)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Sweep folder (default runs/sweep-<name>)."),
    workers: int = typer.Option(1, "--workers", callback=_workers, help="Worker processes (or Ray CPUs, >= 1)."),
    backend: str = typer.Option("local", "--backend", help="local (processes) or ray."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (--backend ray)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    max_runs: int = typer.Option(2000, "--max-runs", help="Refuse a sweep of more runs than this."),
    track: Optional[str] = typer.Option(None, "--track", help="Log every run to mlflow or tensorboard."),
    track_uri: Optional[str] = typer.Option(None, "--track-uri", help="MLflow tracking URI or TensorBoard log folder."),
) -> None:
    """Run a grid of experiments; rerun the same command to continue a stopped sweep.

    Exit codes: 0 every run finished (ok or diverged), 1 some runs failed, 2 bad input, 130 interrupted.
    """
    from .studies.spec import SweepSpec

    try:
        if backend not in ("local", "ray"):
            raise ConfigError("--backend", f"unknown backend {backend!r}", "local, ray")
        sweep_spec = SweepSpec.load(spec)
        with Progress(
            TextColumn("[bold]validating"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
            transient=True,
        ) as bar:
            task = bar.add_task("validate", total=min(sweep_spec.size, max_runs))
            jobs = sweep_spec.jobs(max_runs, lambda done, total: bar.update(task, completed=done))
    except (ConfigError, DataNotFoundError) as e:
        user_error(str(e))
        return
    out = out or Path("runs") / f"sweep-{sweep_spec.name}"
    jobs = tune(sweep_spec, jobs, out, workers, backend, address, quiet)  # select: worst-case tuning first
    tracker = _study_tracker(track, track_uri, sweep_spec.name, out, len(jobs))
    run_study(jobs, out, workers, backend, address, quiet, tracker=tracker)
    if tracker is not None:
        tracker.finish_parent([out / "results.csv"])


def _study_tracker(track: Optional[str], uri: Optional[str], name: str, out: Path, runs: int):
    """A tracker with a parent run for a study (its runs nest under it)."""
    try:
        tracker = _tracker(track, uri)
    except ConfigError as e:
        user_error(str(e))
    if tracker is not None:
        tracker.start_parent(name, {"study": name, "folder": str(out), "runs": runs})
    return tracker


def tune(spec, jobs: list, out: Path, workers: int, backend: str, address: Optional[str], quiet: bool) -> list:
    """A spec with ``select:``: play the tuning runs (``<out>/tuning``), print the chosen
    values and return the jobs at those values; other specs: ``jobs`` unchanged."""
    from rich import box

    from .studies.select import params_text, run_selected

    if not getattr(spec, "select", None):
        return jobs

    def play(tjobs: list, folder: Path):
        outcome = run_study(tjobs, folder, workers, backend, address, quiet, what="tuning")
        if outcome is None:
            raise typer.Exit(2)
        return outcome.table

    try:
        jobs, chosen = run_selected(spec, jobs, out, play)
    except (ConfigError, DataNotFoundError) as e:
        user_error(str(e))
    with_setting = any(c["setting"] for c in chosen)
    table = Table(
        title="worst-case tuning (validation split; score: lowest mean MA over attacks, %)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        title_justify="left",
    )
    for col in (["setting"] if with_setting else []) + ["defense", "chosen", "worst val", "candidates: score"]:
        table.add_column(col, justify="right" if col == "worst val" else "left")
    for c in chosen:
        score = "-" if c["score"] is None else f"{100 * c['score']:.1f} {c['worst_attack']}"
        cands = ", ".join(
            f"{params_text(k['params'])}: " + ("-" if k["score"] is None else f"{100 * k['score']:.1f}")
            for k in c["candidates"]
        )
        row = [c["defense"], params_text(c["params"]), score, cands]
        table.add_row(*map(escape, ([c["setting"]] if with_setting else []) + row))
    out_console.print(table)
    return jobs


def run_study(
    jobs: list,
    out: Path,
    workers: int,
    backend: str,
    address: Optional[str],
    quiet: bool,
    plot: bool = False,
    what: str = "sweep",
    tracker=None,
):
    """Run the jobs of a sweep in ``out`` with a progress bar; exit 130 on Ctrl-C."""
    from .studies.sweep import run_sweep

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
    ) as bar:
        task = bar.add_task(f"{what} ({len(jobs)} runs)", total=len(jobs))

        def on_result(res: dict) -> None:
            bar.advance(task)
            if tracker is not None:  # each run as it finishes, from its folder (workers and Ray write them)
                from .studies.sweep import folder_name
                from .tracking import track_folder

                track_folder(tracker, out / "runs" / folder_name(res["run"]), name=folder_name(res["run"]))
            if res["summary"].get("status") == "error":
                bar.console.print(f"[yellow]{res['run']}: {res['summary'].get('error')}[/]", highlight=False)

        try:
            outcome = run_sweep(jobs, out, workers, backend, address, plot=plot, on_result=on_result)
        except KeyboardInterrupt:
            bar.stop()
            console.print(f"[yellow]interrupted; finished runs are kept in {out}; run the same command to continue[/]")
            raise typer.Exit(130) from None
        except (ConfigError, DataNotFoundError) as e:
            bar.stop()
            user_error(str(e))
            return None
    counts = outcome.table["status"].value_counts().to_dict() if len(outcome.table) else {}
    console.print(
        f"{len(outcome.ran)} runs played ({len(outcome.resumed)} resumed), {len(outcome.skipped)} already "
        f"finished; status: {counts}; results in {out / 'results.csv'}",
        highlight=False,
    )
    if counts.get("error"):
        raise typer.Exit(1)
    return outcome


@app.command()
def report(
    dirs: List[Path] = typer.Argument(..., help="A sweep folder, or run folders (searched recursively)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default <first DIR>/report)."),
    baseline: str = typer.Option(
        "fedavg", "--baseline", help="The defense every other is compared with, seed by seed (paired differences)."
    ),
) -> None:
    """Leaderboard per defense, attack x defense heatmaps, curves, detection metrics (report.md, report.html)."""
    from .studies.report import build_report

    out = out or dirs[0] / "report"
    try:
        parts = build_report(dirs, out, title=f"fedarena report: {', '.join(str(d) for d in dirs)}", baseline=baseline)
    except ConfigError as e:
        user_error(str(e))
        return
    print_leaderboards(parts)
    for _, reason in parts["skipped"]:
        console.print(f"[yellow]skipped: {escape(reason)}[/]", highlight=False, soft_wrap=True)
    if parts["skipped"]:
        console.print(f"[yellow]{len(parts['skipped'])} damaged run(s) skipped (listed in the report)[/]")
    out_console.print(f"report: {out / 'report.html'} (and report.md, figures)", highlight=False)


def print_leaderboards(parts: dict) -> None:
    """The leaderboard of every setting as a rich table fitting 80 columns (all columns are
    in report.md / report.html)."""
    from rich import box

    for s in parts["settings"]:
        lbt = s["leaderboard_text"]
        base = s["leaderboard"].attrs.get("baseline")
        keep = ["rank", "defense", "MA", f"ΔMA vs {base}", "worst MA", "BA", f"ΔBA vs {base}"]
        lbt = lbt[[c for c in keep if c in lbt.columns]].rename(
            columns={f"ΔMA vs {base}": "ΔMA", f"ΔBA vs {base}": "ΔBA"}
        )
        lbt = lbt[[c for c in lbt.columns if not (lbt[c].astype(str) == "-").all()]]  # no backdoor: no BA columns
        if (s["leaderboard"]["diverged"] > 0).any():
            lbt = lbt.assign(div=s["leaderboard"]["diverged"].to_numpy())
        note = f"; Δ: paired difference vs {base}" if base else ""
        table = Table(
            title=f"leaderboard{': ' + s['name'] if s['name'] else ''} (%; mean±95% CI over seeds{note})",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            padding=(0, 1, 0, 0),
            title_justify="left",
        )
        for i, col in enumerate(lbt.columns):
            table.add_column(col, justify="left" if i < 2 else "right", no_wrap=i < 2)
        for _, row in lbt.iterrows():
            table.add_row(*[_coloured(str(v), lower_is_better=c == "ΔBA") for c, v in row.items()])
        out_console.print(table)


def _coloured(cell: str, lower_is_better: bool = False) -> str:
    """A paired difference whose interval excludes 0: green when it is better than the
    baseline, red when worse."""
    from .studies.report import diff_verdict

    colour = {"better": "green", "worse": "red"}.get(diff_verdict(cell, lower_is_better) or "")
    return f"[{colour}]{escape(cell)}[/]" if colour else escape(cell)


@app.command()
def arena(
    out: Path = typer.Option(Path("runs") / "arena", "--out", help="Sweep folder (rerun: finished runs are kept)."),
    workers: int = typer.Option(2, "--workers", callback=_workers, help="Worker processes (>= 1)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    backdoor: bool = typer.Option(
        False,
        "--backdoor",
        help="The backdoor arena: Neurotoxin, A3FL, blended, model "
        "replacement x DeepSight, CRFL, FLARE, AlignIns and classic rules (default --out "
        "runs/backdoor-arena).",
    ),
    robust: bool = typer.Option(
        False,
        "--robust",
        help="The robust-rules arena: ALIE, IPM, Min-Max, SignFlip and "
        "Blades' adaptive attacks x DnC, SignGuard, ClippedClustering, FLDetector, MoNNA, "
        "Meamed, CAF, LASA, ARC and classic rules (default --out runs/robust-arena).",
    ),
    track: Optional[str] = typer.Option(
        None, "--track", help="Log every run to mlflow or tensorboard, the report as the parent run's artifact."
    ),
    track_uri: Optional[str] = typer.Option(None, "--track-uri", help="MLflow tracking URI or TensorBoard log folder."),
) -> None:
    """A small attack x defense matrix on the bundled digits (minutes on 2 cores): leaderboard and report."""
    from .studies.arena import arena_spec
    from .studies.report import build_report

    start = time.perf_counter()
    if backdoor and robust:
        user_error("arena: --backdoor and --robust are two arenas; choose one (valid: --backdoor, --robust, neither)")
    if robust:
        from .studies.robust_arena import robust_arena_jobs

        jobs = robust_arena_jobs()
        out = Path("runs") / "robust-arena" if out == Path("runs") / "arena" else out
        title = "fedarena robust arena: digits (Dirichlet 0.3), 20 clients (4 malicious), FedSGD + momentum, 20 rounds"
    elif backdoor:
        from .studies.backdoor_arena import backdoor_arena_jobs

        jobs = backdoor_arena_jobs()
        out = Path("runs") / "backdoor-arena" if out == Path("runs") / "arena" else out
        title = "fedarena backdoor arena: digits, 20 clients (4 malicious, rounds 0-14), 20 rounds"
    else:
        spec = arena_spec()
        jobs = tune(spec, spec.jobs(), out, workers, "local", None, quiet)  # worst-case tuning on validation
        title = "fedarena arena: digits, 20 clients (4 malicious), 20 rounds"
    tracker = _study_tracker(track, track_uri, out.name, out, len(jobs))
    run_study(jobs, out, workers, "local", None, quiet, tracker=tracker)
    parts = build_report([out], out / "report", title=title)
    if tracker is not None:
        tracker.finish_parent(
            [out / "report" / f for f in ("report.html", "report.md", "leaderboard.csv")] + [out / "selection.json"]
        )
    print_leaderboards(parts)
    tuned = len(list((out / "tuning" / "runs").glob("*"))) if (out / "tuning" / "runs").is_dir() else 0
    out_console.print(
        f"{len(jobs)} runs{f' (and {tuned} tuning runs)' if tuned else ''} in "
        f"{time.perf_counter() - start:.0f} s; report: {out / 'report' / 'report.html'}",
        highlight=False,
    )


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="About a minute: small workloads only."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default benchmarks/results/<time>)."),
    only: Optional[str] = typer.Option(
        None,
        "--only",
        help="Comma-separated sections: training, memory, aggregators, lockstep, flower, end_to_end (default: all).",
    ),
) -> None:
    """Measure local-training throughput, aggregator speed, lockstep studies, Flower and end-to-end rounds/s."""
    from .bench import run_bench

    out = out or Path("benchmarks") / "results" / time.strftime("%Y%m%d-%H%M%S")
    try:
        run_bench(quick=quick, out=out, console=console, only=[o.strip() for o in only.split(",")] if only else None)
    except ConfigError as e:
        user_error(str(e))
        return
    from .terminal import print_markdown_tables

    if (out / "bench.md").is_file():  # the results as tables; bench.md / bench.json keep them for the files
        print_markdown_tables(out_console, (out / "bench.md").read_text())
    out_console.print(f"written to {out}")


def _version(value: bool) -> None:
    if value:
        from . import __version__

        out_console.print(f"fedarena {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Poisoning attacks and defenses in federated learning: simulate, measure, reproduce."""


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
    except typer.Exit:  # pragma: no cover - raised by internal_error itself
        raise
    except Exception as e:  # any command's internal error: one line, the traceback in a log file
        try:
            internal_error(e, None, "fedarena failed")
        except typer.Exit as done:
            sys.exit(done.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
