"""No machine-specific folder (a home or work folder) in code, docs or committed results."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = ["/" + "work/", "/" + "root/", "/" + "home/", "/" + "Users/", "C:" + "\\\\Users"]


def test_no_tracked_file_names_a_machine_folder():
    try:
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    found = []
    for name in files:
        path = ROOT / name
        if not path.is_file() or path.suffix in (".png", ".pt", ".parquet", ".gz"):
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        found += [f"{name}: {p}" for p in PATTERNS if p in text]
    assert not found, found
