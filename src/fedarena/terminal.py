"""Tables on the terminal: the Markdown tables the commands write to files (claims.md,
bench.md) shown as rich tables that fit the console's width, verdicts coloured.

The files keep the Markdown; the terminal never shows its source (``| a | b |`` lines
broken mid-cell by the terminal's wrapping)."""

from __future__ import annotations

import re
from typing import Iterable, Optional

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

#: verdict words and their colours
VERDICT_STYLE = {
    "pass": "green",
    "fail": "red",
    "error": "bold red",
    "info": "cyan",
    "skipped": "yellow",
    "ok": "green",
    "diverged": "yellow",
    "yes": "green",
    "no": "red",
}


def parse_markdown_tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """Every pipe table in ``text``: (the nearest heading or paragraph line above it, header, rows)."""
    out: list[tuple[str, list[str], list[list[str]]]] = []
    title, rows, header = "", [], None
    lines = text.splitlines() + [""]
    for line in lines:
        s = line.strip()
        if s.startswith("|") and s.endswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", s[1:-1])]
            if header is None:
                header = cells
            elif all(re.fullmatch(r":?-{2,}:?|-+", c) for c in cells if c):
                continue
            else:
                rows.append(cells)
            continue
        if header is not None:
            out.append((title, header, rows))
            header, rows = None, []
        if s:
            title = s.lstrip("#").strip()
    return out


def _styled(cell: str) -> str:
    plain = cell.strip().strip("*").strip()
    style = VERDICT_STYLE.get(plain)
    text = escape(plain if plain != cell.strip() else cell)
    return f"[{style}]{text}[/]" if style else text


def rich_table(
    title: str,
    header: list[str],
    rows: Iterable[list[str]],
    drop: Iterable[str] = (),
    numeric_right: bool = True,
    show_header: bool = True,
) -> Table:
    """One rich table; ``drop``: columns left out (the file has them). The first column
    (a name) is never broken."""
    rows = list(rows)
    keep = [i for i, h in enumerate(header) if h not in set(drop)]
    table = Table(
        title=escape(title) if title else None,
        box=box.SIMPLE_HEAD if show_header else None,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        title_justify="left",
        title_style="bold",
        show_header=show_header,
    )
    for i in keep:
        col = [r[i] for r in rows if i < len(r)]
        numeric = (
            numeric_right and col and all(re.fullmatch(r"[-+]?[\d.,]+(e[-+]?\d+)?\s*%?|-", c.strip()) for c in col)
        )
        short = max((len(c) for c in col), default=0) <= 12
        table.add_column(
            escape(header[i]),
            justify="right" if numeric else "left",
            no_wrap=bool(numeric or i == keep[0] or (short and len(header[i]) <= 14)),
            overflow="fold",
        )
    for r in rows:
        table.add_row(*[_styled(r[i]) if i < len(r) else "" for i in keep])
    return table


def _natural_width(header: list[str], rows: list[list[str]]) -> int:
    """The width a table needs without breaking a number or a word: per column the longest
    of its cells' longest words (and numbers), plus one space between columns."""
    widths = []
    for i, h in enumerate(header):
        cells = [r[i] for r in rows if i < len(r)]
        words = [w for c in cells + [h] for w in c.split()]
        numeric = cells and all(re.fullmatch(r"[-+]?[\d.,]+(e[-+]?\d+)?\s*%?|-", c.strip()) for c in cells)
        widths.append(max((len(c) for c in cells), default=1) if numeric else max((len(w) for w in words), default=1))
    return sum(widths) + len(widths) - 1


def print_markdown_tables(console: Console, text: str, drop: Iterable[str] = (), title: Optional[str] = None) -> int:
    """Print every table of a Markdown text as a rich table that fits the console; a table
    too wide for it is shown one row at a time (a field / value table per row). Returns
    how many tables."""
    tables = parse_markdown_tables(text)
    for t, header, rows in tables:
        keep = [i for i, h in enumerate(header) if h not in set(drop)]
        header2, rows2 = [header[i] for i in keep], [[r[i] if i < len(r) else "" for i in keep] for r in rows]
        if _natural_width(header2, rows2) <= console.width or len(header2) <= 3:
            console.print(rich_table(title or t, header2, rows2))
            continue
        console.print(f"[bold]{escape(title or t)}[/]")
        for r in rows2:
            console.print(
                rich_table(
                    f"{header2[0]}: {r[0]}",
                    ["", ""],
                    [[h, v] for h, v in zip(header2[1:], r[1:])],
                    numeric_right=False,
                    show_header=False,
                )
            )
    return len(tables)


def _short(v) -> str:
    """A claim value for the terminal: a dict's ``text`` when it has one, floats to 4 digits."""
    from .reproduce.framework import fmt

    if isinstance(v, dict) and "text" in v:
        return str(v["text"])
    return fmt(v)


def claims_tables(report) -> list[Table]:
    """The claims of a reproduction (:class:`fedarena.reproduce.framework.Report`), one rich
    table per kind of row: claim, description, reference, ours, verdict (coloured). The
    ``where`` and ``rule`` columns, and the full values, are in claims.md / claims.json."""
    from .reproduce.framework import HEADINGS, SOURCES

    out = []
    for source in SOURCES:
        rows = report.rows(source)
        if not rows:
            continue
        ref = {"paper": "paper", "derived": "expected", "check": "reference", "measurement": "-"}[source]
        header = ["claim", "description", ref, "ours", "verdict"]
        body = [[c.id, str(c.description), _short(c.paper), _short(c.ours), c.verdict] for c in rows]
        if source == "measurement":
            header, body = [h for h in header if h != "-"], [[r[0], r[1], r[3], r[4]] for r in body]
        out.append(rich_table(HEADINGS[source], header, body, numeric_right=False))
    return out
