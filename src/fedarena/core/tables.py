"""Markdown tables: the one writer behind every table fedarena puts in a report.

The format is GitHub-flavoured Markdown as the reports have always written it::

    | a | b |
    |---|---:|
    | 1 | 2 |

Cells are written as given (``str()`` of each value; escaping pipes or line breaks is the
caller's job, e.g. ``fedarena.reproduce.framework.cell``). A row given as a ``str`` is
written as-is: a line that does not split into the header's columns (a note spanning the
row, a row with bare empty cells).
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence, Union

Row = Union[str, Sequence[Any]]


def markdown_row(cells: Iterable[Any]) -> str:
    """``| c1 | c2 | ... |``."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown_table(header: Sequence[Any], rows: Iterable[Row] = (), align: Optional[str] = None) -> str:
    """A Markdown table: the header row, the separator, one line per row, joined by newlines
    (no trailing newline).

    ``align`` has one letter per column, ``"l"`` (``---``) or ``"r"`` (``---:``); left out,
    every column is ``---``. A ``str`` row is written verbatim.
    """
    header = list(header)
    if align is None:
        align = "l" * len(header)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align: {align!r} needs one of 'l' / 'r' per column ({len(header)} columns)")
    sep = "|" + "".join("---:|" if a == "r" else "---|" for a in align)
    lines = [markdown_row(header), sep]
    lines += [r if isinstance(r, str) else markdown_row(r) for r in rows]
    return "\n".join(lines)


__all__ = ["markdown_row", "markdown_table"]
