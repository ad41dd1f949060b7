"""The README's table of reproductions, generated from the committed ``claims.json`` files.

``python -m fedarena.reproduce.readme_table [README.md] [reproductions/]`` rewrites the
table between the ``<!-- reproductions-table -->`` markers of the README (prints it when
no README is given). Each row: the command, the paper, then the counts line's parts
(paper claims reproduced first, derived expectations, implementation checks, failed runs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..core.tables import markdown_table
from ..registry import PAPERS

ORDER = ("fall-of-cc", "rlr", "invariant", "leadfl", "autoadapt", "poisonedfl", "dpfl")
START, END = "<!-- reproductions-table start -->", "<!-- reproductions-table end -->"


def _part(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "-"
    rest = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()) if v != "pass")
    return f"{counts.get('pass', 0)} of {total}" + (f" ({rest})" if rest else "")


def table(folder: str | Path = "reproductions") -> str:
    folder = Path(folder)
    names = [n for n in ORDER if (folder / n / "claims.json").exists()]
    names += sorted(p.parent.name for p in folder.glob("*/claims.json") if p.parent.name not in names)
    rows = []
    for name in names:
        data = json.loads((folder / name / "claims.json").read_text())
        by = data.get("counts_by_source", {})
        try:
            title = PAPERS.summary(data["name"])
        except Exception:
            title = data["name"]
        runs = f"{len(data.get('runs_failed') or {})} of {data.get('runs_total', '-')}"
        note = " (re-judged from the committed values)" if data.get("rejudged_from_committed_values") else ""
        rows.append(
            [
                f"`fedarena reproduce {data['name']}`",
                title,
                _part(by.get("paper", {})),
                _part(by.get("derived", {})),
                _part(by.get("check", {})),
                runs,
                f"[claims.md]({folder.name}/{name}/claims.md){note}",
            ]
        )
    return markdown_table(
        [
            "command",
            "paper",
            "paper claims reproduced",
            "derived expectations met",
            "implementation checks",
            "runs failed",
            "report",
        ],
        rows,
    )


def update_readme(readme: str | Path, folder: str | Path = "reproductions") -> None:
    readme = Path(readme)
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: no {START} / {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + START + "\n" + table(folder) + "\n" + END + tail)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        update_readme(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "reproductions")
    else:
        print(table())
