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

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Poisoning attacks and defenses in federated learning: simulate, measure, reproduce.")
console = Console(stderr=True)
out_console = Console()


def user_error(msg: str) -> None:
    """Print one line and exit with code 2 (a user error, not a crash)."""
    console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def run(
    config: Optional[Path] = typer.Argument(None, help="YAML config; omitted: the built-in digits backdoor demo."),
    set_: List[str] = typer.Option([], "--set", help="Override a key, e.g. --set fl.rounds=10 (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/<time>-<name>)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Run one experiment and write its metrics, client records, summary and curves."""
    from .config import DEFAULT_RUN, load_config
    from .run.simulation import Simulation
    from .run.records import write_run

    try:
        cfg = load_config(config, set_, base=None if config else DEFAULT_RUN)
        sim = Simulation(cfg)
    except (ConfigError, DataNotFoundError) as e:
        user_error(str(e))
        return
    out = out or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.name}"
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                  console=console, disable=quiet) as bar:
        task = bar.add_task(cfg.name, total=cfg.fl.rounds, info="")

        def progress(t: int, ev: dict) -> None:
            info = f"acc {ev['main_acc']:.3f}" if ev else ""
            if ev and ev.get("backdoor_acc") is not None:
                info += f"  backdoor {ev['backdoor_acc']:.3f}"
            bar.update(task, completed=t + 1, info=info)

        try:
            result = sim.run(progress)
        except (ConfigError, DataNotFoundError) as e:
            bar.stop()
            user_error(str(e))
            return
    write_run(result, out)
    print_summary(result.summary, out)
    if result.summary.get("error"):
        console.print(f"[yellow]{result.summary['error']}[/]")


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


def _sections():
    from .registry import ATTACKS, DATASETS, DEFENSES, MODELS, PAPERS, PARTITIONS, STAGES

    return {"datasets": DATASETS, "partitions": PARTITIONS, "models": MODELS, "attacks": ATTACKS,
            "defenses": DEFENSES, "stages": STAGES, "reproductions": PAPERS}


@app.command("list")
def list_(section: Optional[str] = typer.Argument(
        None, help="Only one section: datasets, partitions, models, attacks, defenses, stages, reproductions.")) -> None:
    """Every registered dataset, partition, model, attack, defense (and stage) with its parameters."""
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
            params = [f"{prefix.get(name, reg.prefix)}.{p.name}={p.default!r}" for p in reg.params(name).values()
                      if not p.required and p.name not in ("root", "download", "verify")]
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
) -> None:
    """Run a paper's experiments and write claims.md, claims.json and results.csv."""
    from .reproduce.framework import run_reproduction

    out = out or Path("runs") / f"reproduce-{name}{'-quick' if quick else ''}"
    try:
        report = run_reproduction(name, quick=quick, out=out, overrides=set_, console=console)
    except (ConfigError, DataNotFoundError) as e:
        user_error(str(e))
        return
    out_console.print(report.markdown_table())
    out_console.print(f"written to {out}")


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="About a minute: small workloads only."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default benchmarks/results/<time>)."),
) -> None:
    """Measure local-training throughput, aggregator speed and end-to-end rounds/s."""
    from .bench import run_bench

    out = out or Path("benchmarks") / "results" / time.strftime("%Y%m%d-%H%M%S")
    run_bench(quick=quick, out=out, console=console)
    out_console.print(f"written to {out}")


def _version(value: bool) -> None:
    if value:
        from . import __version__

        out_console.print(f"fedarena {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Poisoning attacks and defenses in federated learning: simulate, measure, reproduce."""


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
