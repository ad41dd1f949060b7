"""fedarena.core.tables: the Markdown table writer every report uses."""

import pytest

from fedarena.core.tables import markdown_row, markdown_table


def test_markdown_table_default_alignment():
    # header row, one "---|" per column after a leading "|", then "| c1 | c2 |" per row; no trailing newline
    expected = "| run | acc |\n|---|---|\n| a | 0.5 |\n| b | - |"
    assert markdown_table(["run", "acc"], [["a", 0.5], ["b", "-"]]) == expected


def test_markdown_table_right_alignment_and_verbatim_rows():
    expected = "| rule | n=10 | n=100 |\n|---|---:|---:|\n| krum | 1.0 | 2 |\n| *mean* | | |"
    assert markdown_table(["rule", "n=10", "n=100"], [["krum", 1.0, 2], "| *mean* | | |"], align="lrr") == expected


def test_markdown_table_no_rows_and_row():
    assert markdown_table(["a"]) == "| a |\n|---|"
    assert markdown_row(["x", "", 3]) == "| x |  | 3 |"


def test_markdown_table_bad_align():
    with pytest.raises(ValueError, match="align"):
        markdown_table(["a", "b"], [], align="l")
    with pytest.raises(ValueError, match="align"):
        markdown_table(["a", "b"], [], align="lc")
