"""The terminal shows tables as tables: claims, leaderboards and bench results as rich
tables within 80 columns, verdicts coloured; the Markdown stays in the files."""

import re

from rich.console import Console
from typer.testing import CliRunner

from fedarena import cli
from fedarena.cli import app
from fedarena.reproduce.framework import ClaimResult, Report
from fedarena.terminal import claims_tables, parse_markdown_tables, print_markdown_tables

import test_reproduce_framework  # noqa: F401  (registers the toy-crash reproduction)

runner = CliRunner()
BENCH_MD = """# bench

### Aggregators (seconds per call)

| rule | n=25,d=1e5 | n=25,d=1e6 | n=100,d=1e5 | n=100,d=1e6 | x Gram (largest) | vs ByzFL (n=100, d=1e6) |
|---|---|---|---|---|---|---|
| trimmed-mean | 0.0078 (1.2x) | 0.0751 (1.3x) | 0.0426 (0.75x) | 0.2446 (1.3x) | 0.87 | 9.8 |
| krum | 0.0025 (2.7x) | 0.0224 (23x) | 0.0291 (4.4x) | 0.1481 (13x) | 0.52 | 6.6 |

### Targets

| target | goal | measured | met |
|---|---|---|---|
| mlp-digits speedup vs sequential | >= 5 | 8.86 | yes |
| cnn-fmnist fraction of batched bound | >= 0.9 | 0.787 | no |
"""


def _console():
    return Console(width=80, record=True, force_terminal=True, color_system="truecolor")


def test_markdown_tables_are_parsed_with_their_headings():
    tables = parse_markdown_tables(BENCH_MD)
    assert [t[0] for t in tables] == ["Aggregators (seconds per call)", "Targets"]
    assert tables[1][1] == ["target", "goal", "measured", "met"] and tables[1][2][1][3] == "no"


def test_bench_tables_fit_80_columns_and_colour_the_verdicts():
    con = _console()
    assert print_markdown_tables(con, BENCH_MD) == 2
    text = con.export_text(clear=False)
    assert "|---|" not in text and "| rule |" not in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "trimmed-mean" in text  # a name is never broken across lines
    styled = con.export_text(styles=True)
    assert re.search(r"\x1b\[[0-9;]*32m\s*yes", styled) and re.search(r"\x1b\[[0-9;]*31m\s*no", styled)


def test_claims_are_tables_with_coloured_verdicts():
    report = Report(
        "x",
        True,
        [
            ClaimResult(
                "C1",
                "accuracy under ALIE at 20 % attackers, the paper's Table II row, a long description",
                0.85,
                {"text": "0.83 (seed spread 0.02)", "raw": [0.82, 0.84]},
                "pass",
                "x >= 0.8",
                source="paper",
                where="Table II",
            ),
            ClaimResult(
                "C2", "backdoor accuracy below 10 % within 5 rounds", "yes", 0.2, "fail", "x < 0.1", source="paper"
            ),
            ClaimResult("K1", "median equals the reference", 1.0, 1.0, "pass", "equal", source="check"),
        ],
        1.0,
    )
    con = _console()
    for t in claims_tables(report):
        con.print(t)
    text = con.export_text(clear=False)
    assert "0.83 (seed spread 0.02)" in text and "raw" not in text  # a value's text, not its dict
    assert "Paper claims" in text and "Implementation checks" in text and "|" not in text
    assert all(len(line) <= 80 for line in text.splitlines())
    styled = con.export_text(styles=True)
    assert re.search(r"\x1b\[[0-9;]*32mpass", styled) and re.search(r"\x1b\[[0-9;]*31mfail", styled)


def test_reproduce_prints_tables_not_markdown(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "out_console", Console(width=80))
    res = runner.invoke(app, ["reproduce", "toy-crash", "--quick", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "|---|" not in res.output and "| claim |" not in res.output
    assert "Paper claims" in res.output and "verdict" in res.output
    assert all(len(line) <= 80 for line in res.output.splitlines() if "written to" not in line)
    assert "|---|" in (tmp_path / "claims.md").read_text()  # the file keeps the Markdown
