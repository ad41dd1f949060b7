"""A run's folder and outputs: config.yaml, metrics.jsonl, clients.jsonl, rounds.jsonl,
summary.json, curves.png (and checkpoint.pt while the run is unfinished).

:class:`RunWriter` is the records sink of a run: it appends the record files round by
round (flushed, so every finished round of a killed run is readable) and writes
``summary.json`` atomically (temporary file + rename). :func:`new_run_dir` makes a
default folder that is never reused; :func:`open_run_dir` checks a given ``--out``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from ..config import dump_config
from ..errors import ConfigError, DamagedFileError
from .plots import plot_curves
from .results import RunResult


def json_safe(v: Any) -> Any:
    """``v`` with every non-finite float replaced by None (JSON has no NaN/Inf)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps(json_safe(r)) + "\n")


def read_text(path: Path) -> str:
    """A file's UTF-8 text; a file that cannot be read or is not text raises
    :class:`~fedarena.errors.DamagedFileError` naming it."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DamagedFileError(path, f"is not text (byte {e.start} is not UTF-8)") from None
    except OSError as e:
        raise DamagedFileError(path, f"cannot be read ({e.strerror or type(e).__name__})") from None


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a ``.jsonl`` file, one JSON object a line.

    A torn last line (text after the last newline that is not a whole record: the write a
    kill interrupted) is dropped; any other line that is not a JSON object raises
    :class:`~fedarena.errors.DamagedFileError` naming the file and the line."""
    path = Path(path)
    *lines, tail = read_text(path).split("\n")
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DamagedFileError(path, f"line {i} is not a JSON record ({e.msg})") from None
        if not isinstance(rec, dict):
            raise DamagedFileError(path, f"line {i} is not a JSON object (got {type(rec).__name__})")
        out.append(rec)
    try:
        rec = json.loads(tail) if tail.strip() else None
    except json.JSONDecodeError:
        rec = None  # torn
    if isinstance(rec, dict):  # a whole last record written without its newline
        out.append(rec)
    return out


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object file (``summary.json``, ``sweep.json``); a damaged one raises
    :class:`~fedarena.errors.DamagedFileError` naming the file."""
    path = Path(path)
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DamagedFileError(path, f"is not JSON ({e.msg} at line {e.lineno}; truncated?)") from None
    if not isinstance(data, dict):
        raise DamagedFileError(path, f"holds a {type(data).__name__}, not a JSON object")
    return data


#: the record files a run appends round by round (RunResult attribute = file stem)
RECORD_FILES = ("metrics", "clients", "rounds")
#: every file a run writes in its folder
RUN_FILES = (
    "config.yaml",
    "metrics.jsonl",
    "clients.jsonl",
    "rounds.jsonl",
    "summary.json",
    "curves.png",
    "checkpoint.pt",
    "checkpoint.pt.tmp",
    "summary.json.tmp",
    "error.log",
)
#: statuses of a run that has ended and will not change (a sweep counts them as results)
FINISHED = ("ok", "diverged")


class RunDirError(ConfigError):
    """An output folder that cannot be used (the CLI reports it as a user error)."""


def new_run_dir(name: str, root: str | Path = "runs", stamp: Optional[str] = None, max_tries: int = 1000) -> Path:
    """A new folder ``root/<time>-<name>``: created atomically (``mkdir``), with a ``-2``,
    ``-3``, ... suffix when another run (another process) took the name first."""
    root = Path(root)
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    _make_parent(root)
    for i in range(1, max_tries + 1):
        path = root / (f"{stamp}-{name}" if i == 1 else f"{stamp}-{name}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise RunDirError("--out", f"cannot create {str(path)!r}: {_why(e)}", "a writable folder") from None
        check_writable(path)
        return path
    raise RunDirError(
        "--out", f"{max_tries} runs named {name!r} started at {stamp} already exist in {root}", "--out DIR"
    )


def open_run_dir(out: str | Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Check a user-given output folder before round 0 and create it.

    A file, an unwritable folder or a too long name is an error; so is a non-empty
    folder unless ``overwrite`` (this run's files are replaced, other files are left
    alone) or ``resume`` (the run in it continues)."""
    out = Path(out)
    try:
        return _open_run_dir(out, overwrite, resume)
    except RunDirError:
        raise
    except OSError as e:  # e.g. a name too long to even look up
        raise RunDirError(
            "--resume" if resume else "--out", f"cannot use {str(out)!r}: {_why(e)}", "a writable folder"
        ) from None


def _open_run_dir(out: Path, overwrite: bool, resume: bool) -> Path:
    if out.exists() and not out.is_dir():
        raise RunDirError("--out", f"{str(out)!r} is a file, not a folder", "a new or empty folder")
    if resume:
        if not (out / "config.yaml").is_file():
            raise RunDirError("--resume", f"{str(out)!r} holds no run (no config.yaml)", "the folder of a started run")
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunDirError(
                "--out",
                f"folder {str(out)!r} is not empty",
                "a new or empty folder; --overwrite replaces its run, --resume continues it",
            )
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    try:
        _make_parent(out.parent)
        out.mkdir(exist_ok=True)
    except OSError as e:
        raise RunDirError("--out", f"cannot create {str(out)!r}: {_why(e)}", "a writable folder") from None
    check_writable(out)
    return out


def check_writable(path: Path) -> None:
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise RunDirError("--out", f"cannot write in {str(path)!r}: {_why(e)}", "a writable folder") from None


def _make_parent(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError("--out", f"cannot create {str(path)!r}: {_why(e)}", "a writable folder") from None


def _why(e: OSError) -> str:
    if e.errno == errno.ENAMETOOLONG:
        return "the name is too long"
    return e.strerror or str(e)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2) + "\n")
    os.replace(tmp, path)


def cut_records(out: Path, sizes: dict[str, int]) -> None:
    """Cut the record files back to ``sizes`` bytes (the rounds a checkpoint holds); a
    file shorter than its size (cut or lost after the checkpoint) is damaged."""
    for key in RECORD_FILES:
        path, size = out / f"{key}.jsonl", int(sizes.get(key, 0))
        have = path.stat().st_size if path.exists() else 0
        if have < size:
            raise DamagedFileError(
                path,
                f"holds {have} bytes, fewer than the {size} its checkpoint recorded",
                "delete checkpoint.pt to play the run again from round 0",
            )
        with open(path, "a") as fh:
            fh.truncate(size)


class RunWriter:
    """Records sink of one run: ``on_round`` appends and flushes each record file.

    ``append``: continue the existing files (a resumed run); otherwise start them empty.
    """

    def __init__(self, out: Path, append: bool = False):
        self.out = out
        self.files = {key: open(out / f"{key}.jsonl", "a" if append else "w") for key in RECORD_FILES}

    def on_round(self, t: int, records: dict[str, list]) -> None:
        for key, rows in records.items():
            fh = self.files.get(key)
            if fh is None:
                self.files[key] = fh = open(self.out / f"{key}.jsonl", "a")
            for r in rows:
                fh.write(json.dumps(json_safe(r)) + "\n")
            fh.flush()

    def sizes(self) -> dict[str, int]:
        """Byte size of every record file, synced to disk (stored with a checkpoint)."""
        out = {}
        for key, fh in self.files.items():
            fh.flush()
            os.fsync(fh.fileno())
            out[key] = fh.tell()
        return out

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()


def read_run(out: str | Path) -> dict[str, Any]:
    """A run folder's records: ``{"metrics": [...], "clients": [...], "rounds": [...], "summary": {...}}``."""
    out = Path(out)
    rec: dict[str, Any] = {
        k: read_jsonl(out / f"{k}.jsonl") if (out / f"{k}.jsonl").exists() else [] for k in RECORD_FILES
    }
    rec["summary"] = read_summary(out)
    return rec


def read_summary(out: str | Path) -> dict[str, Any]:
    """A run folder's ``summary.json`` (``{}`` when there is none yet)."""
    path = Path(out) / "summary.json"
    return read_json(path) if path.exists() else {}


def write_run(result: RunResult, out: str | Path, plot: bool = True) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(result.config))
    write_jsonl(out / "metrics.jsonl", result.metrics)
    write_jsonl(out / "clients.jsonl", result.clients)
    write_jsonl(out / "rounds.jsonl", result.rounds)
    write_json_atomic(out / "summary.json", result.summary)
    if plot:
        plot_curves(result.metrics, out / "curves.png", title=result.config.name, summary=result.summary)
    return out
