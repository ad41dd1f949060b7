"""The layers hold and the code lints: import-linter's contract and ruff's rules and format,
all in ``pyproject.toml``, run as part of the suite (an upward import, a lint error or an
unformatted file fails CI)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    exe = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(exe).exists():
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return exe


def test_import_layers_hold():
    res = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]


def test_no_import_circles():
    """No circle of any length among the modules, imports inside functions included (grimp
    reads every import statement); a topological order exists exactly when there is none."""
    import graphlib

    import grimp

    g = grimp.build_graph("fedarena", exclude_type_checking_imports=True)
    order = graphlib.TopologicalSorter({m: g.find_modules_directly_imported_by(m) for m in g.modules})
    try:
        order.prepare()
    except graphlib.CycleError as err:
        pytest.fail(f"import circle: {' -> '.join(err.args[1])}")


def test_ruff_lint_passes():
    res = subprocess.run([_tool("ruff"), "check", "src", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:]


def test_ruff_format_holds():
    """The code is in ruff's format (``ruff format`` fixes it; the version is pinned in the
    ``test`` extra, so the style does not move under the suite)."""
    paths = [p for p in ("src", "tests", "benchmarks", "examples", "docs") if (ROOT / p).exists()]
    res = subprocess.run([_tool("ruff"), "format", "--check", *paths], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]
